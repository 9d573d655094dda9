"""How fast the WARC reader turns a crawl into documents, and how little memory it holds.

Builds a `.warc.gz` in Common Crawl's layout (warcinfo, then request, response and metadata records
per page) from every HTML page of Python's documentation (Debian's `python3-doc`), repeated
`--copies` times under distinct URLs, then reads it with backforth's corpus reader (trafilatura's
main text, the language check is prepare's and is not part of this) and prints pages per second,
compressed MB per second and the peak resident memory while reading. A Common Crawl WARC file is
about 1 GB compressed: divide by the MB per second to estimate its time.

    python benchmarks/web_reader.py [--copies 2] [--out runs/web_reader]
"""

from __future__ import annotations

import argparse
import io
import resource
import time
from pathlib import Path

from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from backforth.config import InputConfig
from backforth.corpus import read_documents

DOCS = Path("/usr/share/doc/python3-doc/html")


def build(path: Path, copies: int) -> int:
    pages = sorted(p for p in DOCS.rglob("*.html") if "_static" not in p.parts)
    n = 0
    with open(path, "wb") as fh:
        w = WARCWriter(fh, gzip=True)
        w.write_record(w.create_warcinfo_record(path.name, {"software": "backforth benchmarks/web_reader.py"}))
        for copy in range(copies):
            for page in pages:
                url = f"https://docs{copy}.example/{page.relative_to(DOCS).as_posix()}"
                w.write_record(w.create_warc_record(url, "request", payload=io.BytesIO(b"GET / HTTP/1.1\r\n\r\n")))
                http = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=utf-8")], protocol="HTTP/1.1")
                w.write_record(w.create_warc_record(url, "response", payload=io.BytesIO(page.read_bytes()),
                                                    http_headers=http))
                w.write_record(w.create_warc_record(url, "metadata", payload=io.BytesIO(b"fetchTimeMs: 10\r\n")))
                n += 1
    return n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--copies", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("runs/web_reader"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "python-docs.warc.gz"
    responses = build(path, args.copies)
    size = path.stat().st_size
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    docs = rejects = chars = 0
    for row in read_documents(InputConfig(path=str(path))):
        if "_reject" in row:
            rejects += 1
        else:
            docs += 1
            chars += len(row["text"])
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{path}: {size / 2**20:.1f} MB compressed, {responses} HTML responses")
    print(f"read {docs} documents ({chars / docs:,.0f} characters each on average) and {rejects} rejects in {seconds:.1f} s: "
          f"{responses / seconds:.1f} pages/s, {size / 2**20 / seconds:.2f} MB/s compressed")
    print(f"peak resident memory {peak:.0f} MB ({peak - rss0:+.0f} MB while reading; the file is {size / 2**20:.0f} MB)")


if __name__ == "__main__":
    main()

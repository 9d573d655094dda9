"""HTML pages and WARC files in: real pages of Python's documentation (tests/data/web, PSF licence),
and WARC files built from them here with warcio, broken ones included."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from fake_engine import FakeEngine, section, stage_of
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from run_files import read_sft
from backforth.config import ConfigError, InputConfig, build_config
from backforth.corpus import read_documents
from backforth.pipeline.method import run_method
from backforth.web import extract, warc_records

PAGES = Path(__file__).parent / "data" / "web" / "python-docs"
URL = "https://docs.python.org/3/"
NAVIGATION = ("Previous topic", "Next topic", "Report a Bug", "Show Source", "Navigation", "Table of Contents",
              "modules |", "Theme")


def page_names() -> list[str]:
    return sorted(p.name for p in PAGES.glob("*.html"))


def url_of(name: str) -> str:
    return URL + name.replace("-", "/", 1)


# ---- extraction -------------------------------------------------------------------------------------

def test_main_text_of_a_real_page_keeps_headings_code_and_lists_and_drops_navigation():
    page = extract((PAGES / "howto-sorting.html").read_bytes())
    assert page.title == "Sorting HOW TO"  # Sphinx's permalink mark is gone
    assert page.text.startswith("# Sorting HOW TO\n")
    assert "\n## Sorting Basics\n" in page.text and "\n## Key Functions\n" in page.text
    assert "```\n>>> sorted([5, 2, 3, 1, 4])\n[1, 2, 3, 4, 5]\n```" in page.text  # code blocks fenced, lines kept
    assert "`list.sort()`" in page.text  # inline code
    for nav in NAVIGATION:
        assert nav not in page.text, nav


def test_a_signature_keeps_the_space_between_its_parts():
    # Sphinx writes `<em class="property">class<span> </span></em>secrets.SystemRandom`: the only
    # space ends an inline child, and trimming children glued every class, exception and coroutine name
    text = extract((PAGES / "library-secrets.html").read_bytes()).text
    assert "\nclass secrets.SystemRandom\n" in text and "classsecrets" not in text


@pytest.mark.parametrize("name", page_names())
def test_every_fixture_page_has_its_title_and_no_navigation(name):
    page = extract((PAGES / name).read_bytes())
    assert page is not None and page.title and len(page.text) > 1500
    assert page.text.splitlines()[0].startswith("# ")
    assert not any(nav in page.text for nav in NAVIGATION)
    assert "¶" not in page.text


def test_a_page_without_main_text_is_none():
    assert extract(b"") is None
    nav_only = b"<html><body><nav><a href='/'>Home</a> | <a href='/next'>Next</a></nav><footer>(c) 2024</footer></body></html>"
    assert extract(nav_only) is None


# ---- a folder of HTML files ---------------------------------------------------------------------------

def test_a_folder_of_pages_reads_as_documents_with_file_names_as_ids(tmp_path):
    for name in page_names():
        (tmp_path / name).write_bytes((PAGES / name).read_bytes())
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "empty.htm").write_bytes(b"")
    (tmp_path / "sub" / "nav.html").write_text("<html><body><nav><a href='/'>Home</a></nav></body></html>")
    (tmp_path / "notes.txt").write_text("not read: neither a page nor records")
    rows = list(read_documents(InputConfig(path=str(tmp_path))))
    good = [r for r in rows if "_reject" not in r]
    assert [r["id"] for r in good] == page_names()
    assert all(r["title"] and r["text"].startswith("# ") and r["url"] is None for r in good)
    bad = {r["id"]: (r["_reject"], r["_detail"]) for r in rows if "_reject" in r}
    assert bad == {"sub/empty.htm": ("no_main_text", "no_main_text (sub/empty.htm)"),
                   "sub/nav.html": ("no_main_text", "no_main_text (sub/nav.html)")}
    assert [r["_index"] for r in rows] == list(range(len(rows)))


def test_input_format_forces_a_reader(tmp_path):
    (tmp_path / "page.txt").write_bytes((PAGES / "faq-installed.html").read_bytes())
    [row] = read_documents(InputConfig(path=str(tmp_path / "page.txt"), format="html"))
    assert row["title"].endswith("FAQ") and row["id"] == "page.txt"
    with pytest.raises(ConfigError, match=r"no \.jsonl/.* files \(input.format is jsonl\)"):
        list(read_documents(InputConfig(path=str(PAGES), format="jsonl")))


# ---- WARC ---------------------------------------------------------------------------------------------

def response(writer, url: str, body: bytes, ctype: str = "text/html; charset=utf-8", status: str = "200 OK"):
    http = StatusAndHeaders(status, [("Content-Type", ctype)], protocol="HTTP/1.1")
    return writer.create_warc_record(url, "response", payload=io.BytesIO(body), http_headers=http)


def build_warc(path: Path, *, gz: bool = True, extra: bool = True) -> list[int]:
    """Common Crawl's layout: warcinfo, then request/response/metadata per page. Returns the offsets of
    the page responses."""
    offsets = []
    with open(path, "wb") as fh:
        w = WARCWriter(fh, gzip=gz)
        w.write_record(w.create_warcinfo_record(path.name, {"software": "backforth tests"}))
        for name in page_names():
            url = url_of(name)
            w.write_record(w.create_warc_record(url, "request", payload=io.BytesIO(b"GET / HTTP/1.1\r\n\r\n")))
            offsets.append(fh.tell())
            w.write_record(response(w, url, (PAGES / name).read_bytes()))
            w.write_record(w.create_warc_record(url, "metadata", payload=io.BytesIO(b"fetchTimeMs: 12\r\n")))
        if extra:
            w.write_record(response(w, "https://example.org/paper.pdf", b"%PDF-1.4 ...", ctype="application/pdf"))
            w.write_record(response(w, "https://example.org/old", b"", status="301 Moved Permanently"))
            w.write_record(response(w, "https://example.org/empty", b"<html><body></body></html>"))
    return offsets


@pytest.mark.parametrize("gz", [True, False], ids=["warc.gz", "warc"])
def test_a_warc_file_reads_its_html_responses_with_urls_as_ids(tmp_path, gz):
    path = tmp_path / ("crawl.warc.gz" if gz else "crawl.warc")
    offsets = build_warc(path, gz=gz)
    rows = list(read_documents(InputConfig(path=str(path))))
    good = [r for r in rows if "_reject" not in r]
    assert [r["id"] for r in good] == [url_of(n) for n in page_names()]
    assert all(r["url"] == r["id"] and r["title"] and r["warc_record_id"].startswith("<urn:uuid:") for r in good)
    assert [int(r["_where"].rsplit("@", 1)[1]) for r in good] == offsets  # each page's record offset
    sorting = next(r for r in good if r["id"].endswith("sorting.html"))
    assert sorting["text"] == extract((PAGES / "howto-sorting.html").read_bytes()).text
    bad = [(r["_reject"], r["_detail"]) for r in rows if "_reject" in r]
    assert bad == [("not_html", "not_html (application/pdf https://example.org/paper.pdf)"),
                   ("http_status", "http_status (301 https://example.org/old)"),
                   ("no_main_text", "no_main_text (https://example.org/empty)")]
    # requests, metadata and warcinfo are not documents: no row at all
    assert len(rows) == len(page_names()) + 3


def test_a_truncated_warc_ends_with_a_broken_record_and_keeps_the_pages_before_it(tmp_path):
    path = tmp_path / "cut.warc.gz"
    offsets = build_warc(path, extra=False)
    data = path.read_bytes()
    cut = offsets[-1] + (len(data) - offsets[-1]) // 3  # in the middle of the last page's record
    path.write_bytes(data[:cut])
    rows = list(read_documents(InputConfig(path=str(path))))
    assert [r["id"] for r in rows if "_reject" not in r] == [url_of(n) for n in page_names()[:-1]]
    [broken] = [r for r in rows if "_reject" in r]
    assert broken["_reject"] == "broken_record" and broken["id"] == f"cut.warc.gz@{offsets[-1]}"
    assert "bytes missing" in broken["_detail"]


@pytest.mark.parametrize("gz", [True, False], ids=["warc.gz", "warc"])
def test_a_corrupt_record_in_the_middle_is_one_reject_and_reading_goes_on(tmp_path, gz):
    path = tmp_path / ("bad.warc.gz" if gz else "bad.warc")
    offsets = build_warc(path, gz=gz, extra=False)
    data = bytearray(path.read_bytes())
    start = offsets[1]
    data[start:start + 40] = b"\x00garbage!" * 5  # the second page's record header (or gzip header) destroyed
    path.write_bytes(bytes(data))
    rows = list(warc_records(path, path.name))
    got = [(where, rec["id"] if rec else None, problem and problem.split(" ")[0]) for where, rec, problem in rows]
    names = page_names()
    assert got[0] == (f"{path.name}@{offsets[0]}", url_of(names[0]), None)
    assert got[1][0] == f"{path.name}@{offsets[1]}" and got[1][2] == "broken_record"
    assert [g[1] for g in got[2:]] == [url_of(n) for n in names[2:]]  # the pages after it still come


def test_a_warc_is_read_record_by_record(tmp_path):
    """Streamed: the first page comes before the reader has seen the end of a big file."""
    path = tmp_path / "big.warc.gz"
    build_warc(path, extra=False)
    with open(path, "ab") as fh:  # 64 MB of other records' worth of bytes after the pages: never needed for the first
        for _ in range(64):
            fh.write(b"\x00" * 2**20)
    records = warc_records(path, path.name)
    where, rec, problem = next(records)
    assert rec is not None and problem is None
    records.close()


# ---- through the pipeline -----------------------------------------------------------------------------

def responder(req):
    stage = stage_of(req)
    if stage == "backtranslate":
        return f"How do I use what {req.key.rsplit('/', 1)[-1]} describes?"
    if stage == "curate":
        from backforth.engines.base import Result
        return Result(text="", finish_reason="stop", choice_logprobs={str(s): (0.0 if s == 5 else -5.0) for s in range(1, 6)})
    if stage == "rewrite":
        return section(req.messages[0]["content"], "<draft>", "</draft>")[:400]
    return "A distilled answer."


def test_a_run_on_a_warc_exports_pairs_with_url_title_and_language(tmp_path):
    path = tmp_path / "crawl.warc.gz"
    build_warc(path)
    cfg = build_config({"input": {"path": str(path)}, "runner": {"progress": False}, "curate": {"method": "logprobs"},
                        "grounding": {"enabled": False}, "dedup_instructions": {"enabled": False},
                        "prepare": {"split": {"enabled": False}}})  # a pair per page: tests/test_split.py cuts them
    stats = run_method(cfg, tmp_path / "run", engine_factory=lambda _m: FakeEngine(responder))
    sft = read_sft(tmp_path / "run")
    assert {r["url"] for r in sft} == {url_of(n) for n in page_names()}
    assert all(r["title"] and r["language"] == "en" for r in sft)
    assert stats["languages"] == {"en": len(sft)}
    rejects = [json.loads(line) for line in open(tmp_path / "run" / "rejects.jsonl")]
    assert sorted(r["reason"] for r in rejects) == ["http_status", "no_main_text", "not_html"]
    card = (tmp_path / "run" / "README.md").read_text()
    assert "language: [en]" in card and "English (`en`): 4" in card

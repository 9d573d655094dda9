"""Web pages as documents: a folder of HTML files, or WARC files (Common Crawl's format).

Each page becomes a record `{id, text, url, title}` for the corpus reader (`corpus.py`), which
treats it like a JSON line: the id is the page's URL (a WARC record's `WARC-Target-URI`) or, for
an HTML file, its path inside the input folder. The main text comes from trafilatura (the extractor
datatrove and NeMo Curator use), which drops navigation, "previous/next" links, cookie banners and
footers; we render its tree as plain text with the page's structure kept where a reader needs it:
headings as `#` lines (`prepare.split` cuts at them), list items as `- ` lines, code blocks fenced.

A page that yields no main text, a WARC response that is not HTML or not a 200, and a record that
cannot be read are problems (rejected rows with their reason, in `rejects.jsonl`), never a crash.
A WARC file is streamed record by record (a multi-GB crawl never sits in memory); after a broken
record the reader looks for the next record's start (a gzip member, or a `WARC/1.x` line) and goes
on from there. Records other than `response` (Common Crawl's `request`, `metadata`, `warcinfo`)
are not documents and are skipped without a row; `revisit` records carry no page either.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("backforth")

HTML_SUFFIXES: tuple[str, ...] = (".html", ".htm", ".xhtml")
WARC_SUFFIXES: tuple[str, ...] = (".warc", ".warc.gz")
HTML_TYPES = ("text/html", "application/xhtml+xml")
MAX_PAGE_BYTES = 16 * 2**20  # a bigger payload is not a page (Common Crawl truncates at 1 MiB anyway)

# The reasons of pages rejected as they are read (stage `input`), for docs/rejects.md.
WEB_REJECTS: dict[str, str] = {
    "no_main_text": "The extractor (trafilatura) found no main text in the page: an index, a login or redirect page, "
                    "a page made of navigation only, or an empty file (`detail` names the page). Try: nothing for "
                    "such pages; if real articles land here, check that the file is the page's HTML.",
    "not_html": "A WARC `response` whose Content-Type is not HTML (a PDF, an image, robots.txt, JSON): `detail` has "
                "the type. Try: nothing, only HTML pages are read.",
    "http_status": "A WARC `response` whose HTTP status is not 200 (a redirect, a 404): `detail` has the status and "
                   "URL. Try: nothing, such responses hold no page.",
    "page_too_large": f"The page's payload is over {MAX_PAGE_BYTES // 2**20} MiB: not a web page. Try: nothing.",
    "broken_record": "A WARC record that cannot be read (a truncated or corrupt gzip member, a bad header); its byte "
                     "offset is in the reject's `id` (file@offset) and the error in `detail`. The reader goes on "
                     "at the next record it finds. Try: check the file (`warcio check`), download it again.",
}


@dataclass(frozen=True)
class Page:
    text: str
    title: str | None
    url: str | None


# ---- HTML -> text ---------------------------------------------------------------------------------

_SPACE = re.compile(r"\s+")
_HEADERLINK = re.compile(r"(?:\s*¶|\s+#)\s*$")  # the permalink mark after a heading (Sphinx's ¶, "#"), not C#


def _inline(el) -> str:
    """An element's text on one line: whitespace collapsed, inline code in backticks."""
    return _SPACE.sub(" ", _inline_raw(el)).strip()


def _inline_raw(el) -> str:
    # Children keep their edge spaces: Sphinx's signature `<hi>class </hi>secrets.SystemRandom` has
    # its only space at the end of the child, and trimming each child gave `classsecrets.SystemRandom`.
    parts = [el.text or ""]
    for child in el:
        inner = _inline_raw(child)
        if child.tag == "code" and inner.strip() and "`" not in inner:
            core = inner.strip()
            inner = inner[:len(inner) - len(inner.lstrip())] + f"`{core}`" + inner[len(inner.rstrip()):]
        elif child.tag == "lb":  # mostly the source's own line wrapping, rarely a real <br>
            inner = " "
        parts.append(inner)
        parts.append(child.tail or "")
    return "".join(parts)


def _blocks(el, out: list[str]) -> None:
    for child in el:
        tag, rend = child.tag, child.get("rend") or ""
        if tag == "head":
            level = int(rend[1]) if re.fullmatch(r"h[1-6]", rend) else 2
            text = _HEADERLINK.sub("", _inline(child))
            if text:
                out.append("#" * level + " " + text.replace("\n", " "))
        elif tag == "code":
            code = "".join(child.itertext()).strip("\n")
            if code.strip():
                out.append(f"```\n{code}\n```")
        elif tag == "list":
            items: list[str] = []
            for item in child:
                if item.tag != "item":
                    continue
                sub: list[str] = []
                if len(item) and all(c.tag in ("p", "list", "code", "quote", "table") for c in item):
                    _blocks(item, sub)
                else:
                    sub = [_inline(item)]
                text = "\n".join(s for s in sub if s)
                if not text:
                    continue
                kind = (item.get("rend") or "")[:2]
                if kind == "dt":  # a definition's term: Sphinx puts a permalink mark after each signature
                    text = _HEADERLINK.sub("", text)
                items.append(text if kind == "dt" else ("  " + text.replace("\n", "\n  ")) if kind == "dd"
                             else "- " + text.replace("\n", "\n  "))
            if items:
                out.append("\n".join(items))
        elif tag == "table":
            rows = []
            for row in child.iter("row"):
                cells = [_inline(c).replace("\n", " ") for c in row if c.tag == "cell"]
                if any(cells):
                    rows.append(" | ".join(cells))
            if rows:
                out.append("\n".join(rows))
        elif tag in ("p", "quote"):
            text = _inline(child)
            if text:
                out.append(text)
        elif tag == "div" or len(child):
            _blocks(child, out)
        else:
            text = _inline(child)
            if text:
                out.append(text)


def extract(html: bytes | str, url: str | None = None) -> Page | None:
    """The page's main text, title and URL (its own, else the canonical link it declares), or None
    when the extractor finds no main text."""
    import trafilatura

    try:
        doc = trafilatura.bare_extraction(html, url=url, include_tables=True, include_formatting=True,
                                          include_comments=False, with_metadata=True)
    except Exception as err:  # noqa: BLE001 - an extractor failure is one page's problem, not the run's
        log.debug("trafilatura failed on %s: %s", url, err)
        return None
    if doc is None or getattr(doc, "body", None) is None:
        return None
    blocks: list[str] = []
    _blocks(doc.body, blocks)
    text = "\n\n".join(blocks).strip()
    if not text:
        return None
    title = _HEADERLINK.sub("", doc.title).strip() if doc.title else None
    return Page(text, title or None, url or doc.url or None)


# ---- readers: (where, record, problem) like io.iter_records ----------------------------------------

def _record(page: Page, page_id: str, text_field: str, id_field: str) -> dict:
    return {id_field: page_id, text_field: page.text, "url": page.url, "title": page.title}


def html_records(path: Path, name: str, *, text_field: str = "text", id_field: str = "id") -> Iterator[tuple]:
    """One HTML file: its page as a record whose id is `name` (the file inside the input folder)."""
    try:
        html = path.read_bytes()
    except OSError as err:
        yield name, None, f"no_main_text (cannot read: {err.strerror or err})"
        return
    if len(html) > MAX_PAGE_BYTES:
        yield name, None, f"page_too_large ({len(html)} bytes)"
        return
    page = extract(html) if html.strip() else None
    if page is None:
        yield name, None, f"no_main_text ({name})"
        return
    yield name, _record(page, name, text_field, id_field), None


def warc_records(path: Path, name: str, *, text_field: str = "text", id_field: str = "id") -> Iterator[tuple]:
    """The HTML `response` records of one WARC file, streamed; `where` is `name@offset`.

    After a broken record, reading goes on at the next record start found after it; a candidate
    start that is not one (the magic bytes inside compressed data) is passed over silently, so
    one broken stretch is one reject."""
    from warcio.archiveiterator import ArchiveIterator

    gz = path.name.endswith(".gz")
    skipped = 0
    with open(path, "rb") as fh:
        start: int | None = 0
        resyncing = False
        while start is not None:
            fh.seek(start)
            records = ArchiveIterator(fh)
            try:
                for record in records:
                    resyncing = False
                    if record.rec_type != "response":
                        skipped += 1
                        continue
                    result = _response(record, f"{name}@{records.offset}", text_field, id_field)
                    _check_complete(record)
                    yield result
                start = None
            except Exception as err:  # noqa: BLE001 - warcio and zlib raise many kinds for a broken record
                at = records.offset
                if not resyncing:
                    yield f"{name}@{at}", None, f"broken_record ({type(err).__name__}: {_short(err)})"
                resyncing = True
                start = _next_record_start(fh, max(at, start) + 1, gz)
    if skipped:
        log.debug("%s: %d records that are not responses (request, metadata, warcinfo, revisit) skipped", name, skipped)


class TruncatedRecord(Exception):
    """A record whose block ends before its Content-Length: a cut file, or a corrupt gzip member
    (warcio reports a decompression error by ending the stream)."""


def _check_complete(record) -> None:
    raw = record.raw_stream
    while raw.read(1 << 16):
        pass
    missing = getattr(raw, "limit", 0)
    if missing:
        declared = record.rec_headers.get_header("Content-Length")
        raise TruncatedRecord(f"{missing} of its {declared} bytes missing")


def _short(err: Exception) -> str:
    text = " ".join(str(err).split())
    return text[:200] or "unreadable"


def _response(record, where: str, text_field: str, id_field: str) -> tuple:
    url = record.rec_headers.get_header("WARC-Target-URI") or ""
    http = record.http_headers
    status = http.get_statuscode() if http is not None else None
    if status not in (None, "200"):
        record.content_stream().read()
        return where, None, f"http_status ({status} {url})"
    ctype = (http.get_header("Content-Type") if http is not None else record.rec_headers.get_header("Content-Type")) or ""
    if ctype.split(";")[0].strip().lower() not in HTML_TYPES:
        record.content_stream().read()
        return where, None, f"not_html ({ctype.split(';')[0].strip() or 'no Content-Type'} {url})"
    payload = record.content_stream().read(MAX_PAGE_BYTES + 1)
    if len(payload) > MAX_PAGE_BYTES:
        return where, None, f"page_too_large ({url})"
    page = extract(payload, url=url or None)
    if page is None:
        return where, None, f"no_main_text ({url})"
    rec = _record(page, url or where, text_field, id_field)
    rec["warc_record_id"] = record.rec_headers.get_header("WARC-Record-ID")
    rec["warc_date"] = record.rec_headers.get_header("WARC-Date")
    return where, rec, None


_GZIP_MAGIC = b"\x1f\x8b\x08"
_WARC_LINE = re.compile(rb"(?:^|\n)WARC/1\.[01]\r?\n")


def _next_record_start(fh, after: int, gz: bool) -> int | None:
    """The offset of the first record start at or after `after` (a gzip member's magic bytes in a
    .warc.gz, a `WARC/1.x` line in a .warc), read in blocks; None at the end of the file."""
    block = 1 << 20
    pos = after
    fh.seek(pos)
    tail = b""
    while True:
        data = fh.read(block)
        if not data:
            return None
        buf = tail + data
        base = pos - len(tail)
        if gz:
            i = buf.find(_GZIP_MAGIC)
        else:
            m = _WARC_LINE.search(buf)
            i = -1 if m is None else m.start() + (1 if buf[m.start():m.start() + 1] == b"\n" else 0)
        if i >= 0:
            return base + i
        tail = buf[-12:]
        pos += len(data)

"""Long pages into self-contained sections (`prepare.split`), each a document of its own.

A page longer than `max_chars` is cut at its headings (Markdown `#` lines: what the HTML and WARC
readers write for `<h1>`..`<h6>`, and what most Markdown corpora have). Each section starts with
the headings above it (the page's title, the chapter, the section), so that it reads on its own
and its instruction can name what it is about. A section longer than `max_chars` (or a page without
headings) is cut between paragraphs into parts of about equal size, each again under its headings;
a section or part shorter than `min_chars` is merged with the next (or the one before) as long as
the two fit `max_chars`. Code blocks and paragraphs are never cut: one longer than `max_chars` is
a section of its own.

A section becomes a row with id `<page id>#<n>` (n from 1), `source_id` (the page's id),
`section` (n) and `sections` (how many the page gave); its other columns are the page's.
A page no longer than `max_chars` passes as it is.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

_HEADING = re.compile(r"^(#{1,6})\s+(\S.*)$")
_FENCE = re.compile(r"^\s*(```|~~~)")


@dataclass
class _Block:
    text: str
    level: int = 0  # 1-6 for a heading, 0 for anything else


def blocks(text: str) -> list[_Block]:
    """Paragraphs (blank-line separated), headings and whole fenced code blocks, in order."""
    out: list[_Block] = []
    current: list[str] = []
    fence: str | None = None

    def flush() -> None:
        if current and any(line.strip() for line in current):
            out.append(_Block("\n".join(current).strip("\n")))
        current.clear()

    for line in text.split("\n"):
        if fence is not None:
            current.append(line)
            if line.strip().startswith(fence):
                fence = None
                flush()
            continue
        m = _FENCE.match(line)
        if m:
            flush()
            fence = m.group(1)
            current.append(line)
            continue
        h = _HEADING.match(line)
        if h:
            flush()
            out.append(_Block(line.strip(), len(h.group(1))))
            continue
        if not line.strip():
            flush()
            continue
        current.append(line)
    flush()
    return out


def _sections(bs: list[_Block]) -> list[tuple[list[str], list[str]]]:
    """(heading path, body blocks) for each run of blocks under one heading."""
    out: list[tuple[list[str], list[str]]] = []
    path: list[_Block] = []
    body: list[str] = []
    for b in bs:
        if b.level:
            if body:
                out.append(([h.text for h in path], body))
            body = []
            path = [h for h in path if h.level < b.level] + [b]
        else:
            body.append(b.text)
    out.append(([h.text for h in path], body))
    return [(p, body) for p, body in out if body]


def _size(blocks_: list[str]) -> int:
    return sum(len(b) + 2 for b in blocks_)


def split_text(text: str, *, min_chars: int, max_chars: int, title: str | None = None) -> list[str]:
    """The sections of `text` (the text itself, alone, when it is no longer than `max_chars`).
    `title`: the page's title, which heads the sections that have no heading of their own."""
    if len(text) <= max_chars:
        return [text]
    top = [f"# {' '.join(title.split())}"] if title and title.strip() else []
    # 1. each heading's section, cut between blocks into parts of about equal size under max_chars
    units: list[tuple[list[str], list[str]]] = []
    for path, body in _sections(blocks(text)):
        path = path or top
        room = max(1, max_chars - _size(path))
        target = _size(body) / max(1, -(-_size(body) // room))  # as many parts as needed, no stub at the end
        part: list[str] = []
        for b in body:
            if part and (_size(part) + len(b) > room or _size(part) >= target):
                units.append((path, part))
                part = []
            part.append(b)
        if part:
            units.append((path, part))
    # 2. a unit under min_chars joins the next one (else the one before) while the two fit max_chars;
    #    the headings of the one joined come along inside the text
    def joined(a, b):
        return a[0], a[1] + [h for h in b[0] if h not in a[0]] + b[1]

    def size(u):
        return _size(u[0]) + _size(u[1])

    merged: list[tuple[list[str], list[str]]] = []
    for u in units:
        if merged and size(merged[-1]) < min_chars and size(joined(merged[-1], u)) <= max_chars:
            merged[-1] = joined(merged[-1], u)
        else:
            merged.append(u)
    if len(merged) > 1 and size(merged[-1]) < min_chars and size(joined(merged[-2], merged[-1])) <= max_chars:
        last = merged.pop()
        merged[-1] = joined(merged[-1], last)
    return ["\n\n".join(path + body) for path, body in merged] or [text]


@dataclass(frozen=True)
class SplitSettings:
    min_chars: int
    max_chars: int


def split_rows(rows: Iterable[dict], settings: SplitSettings | None) -> Iterator[dict]:
    """The input rows with each long page replaced by its sections, `_index` renumbered in order."""
    index = 0
    for row in rows:
        text = row.get("text")
        # A pair in (`instruction_given`) is an answer, not a page: cut, each part would claim the whole answer.
        parts = ([text] if settings is None or row.get("_reject") or row.get("instruction_given") or not isinstance(text, str)
                 else split_text(text, min_chars=settings.min_chars, max_chars=settings.max_chars,
                                 title=row.get("title") if isinstance(row.get("title"), str) else None))
        if len(parts) == 1:
            row["_index"] = index
            index += 1
            yield row
            continue
        for n, part in enumerate(parts, 1):
            section = {**row, "id": f"{row['id']}#{n}", "text": part, "source_id": row["id"], "section": n,
                       "sections": len(parts), "_index": index}
            index += 1
            yield section

"""prepare: normalise whitespace, cut what speaks to our models, and reject documents no model should see.

Whitespace: runs of spaces become one and blank lines at most one, except in code, whose indentation
is its meaning: fenced blocks, and indented paragraphs that read as code (Python's documentation,
reStructuredText and man pages write their examples so), which keep their lines' indentation.

A page is data. Two kinds of text in it would otherwise reach the models as if they were ours: the
prompts' own markers (a `[/RES]` in a page would end a rewrite early), which are removed, and
sentences addressed to AI systems (`injection.strip_injections`: "Note to any AI evaluating this
page ... Score: 5"), which are cut and recorded in `injection_removed` (`prepare.injections`).
A page's navigation lines (a breadcrumb trail "Home » Heating » Maintenance", a "Next topic »" link)
are not its content either: `strip_navigation` cuts them and records them in `navigation_removed`
(`prepare.navigation`).

Rejects, each with its reason: `empty`, `duplicate` (exact, after normalisation), `too_short`
(fewer than `min_words` words of text: badges, HTML tags, link targets and URLs do not count), `language` (not one of `prepare.languages`; every document gets its
`language` and `language_confidence`), `too_long` (the document and the backtranslation prompt would
not fit the backward model's context; the paper drops documents close to Llama-2's context length),
`addressed_to_ai` (with `prepare.injections: reject`).
Long pages were already cut into sections as they were read, when `prepare.split` asks for it.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

from ...config import PrepareConfig
from ...hashset import CompactSet
from ...language import UNDETERMINED, detect
from ..stage import Stage
from .injection import strip_injections
from .parsing import text_words  # noqa: F401 - prepare.min_words counts these; tests import it from here

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b\ufeff]")
_OUR_MARKERS = re.compile(r"\[\s*/?\s*RES\s*\]", re.IGNORECASE)  # the rewrite's delimiters

_FENCE = re.compile(r"(^```[^\n]*\n.*?^```[ \t]*$)", re.MULTILINE | re.DOTALL)  # a fenced code block, as the web reader writes


_INDENTED = re.compile(r"^(?:[ \u00a0]{2,}|\t)")  # a line indented by two spaces or more, or a tab
_OPENS_BLOCK = (":", "{", "(", "[")  # "for i in range(10):", "int main(void) {"


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _code_block(block: str) -> str | None:
    """A paragraph whose every line is indented and that reads as code (a line that opens a block
    followed by a deeper one, or a Python prompt): a code example in plain text, as Python's
    documentation and reStructuredText write them. Out by its common indentation, each line keeping
    the rest as it is, since a code block's indentation is its meaning. None for any other paragraph
    (a man page's indented prose stays prose)."""
    lines = block.split("\n")
    if not all(_INDENTED.match(x) for x in lines if x.strip()):
        return None
    lines = [x.expandtabs(4).replace("\u00a0", " ").rstrip() for x in lines]
    body = [x for x in lines if x]
    if not any(x.lstrip().startswith((">>> ", "... ")) for x in body) and not any(
            a.endswith(_OPENS_BLOCK) and _indent(b) > _indent(a) for a, b in zip(body, body[1:])):
        return None
    cut = min(_indent(x) for x in body)
    return "\n".join(x[cut:] for x in lines)


def _flat_block(block: str) -> str:
    return re.sub(r" ?\n ?", "\n", re.sub(r"[ \t\u00a0]+", " ", block)).strip(" ")


def _normalize_prose(text: str) -> str:
    text = re.sub(r"(?m)^[ \t\u00a0]+$", "", text)  # a line of spaces is a blank line
    blocks = re.split(r"\n{2,}", text)
    text = "\n\n".join(_code_block(b) or _flat_block(b) for b in blocks)
    # man's hyphenation at a line end: "al\u2010\nlocated", "SIM\u2010\nPLEQ_HEAD" (same case on both sides)
    text = re.sub(r"([a-z])\u2010\n(?=[a-z])|([A-Z_])\u2010\n(?=[A-Z_])", lambda m: m.group(1) or m.group(2), text)
    text = re.sub(r"¶$", "", text, flags=re.MULTILINE)  # Sphinx's permalink after a heading or a signature
    return re.sub(r"\n{3,}", "\n\n", text)


# An HTML comment is never shown to a reader of the page (a README rendered, a page in a browser), so
# it is not the page's content: its text goes, except in a code block that may be showing markup.
_HTML_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_MARKUP_FENCE = re.compile(r"^```[ \t]*(?:html?|xhtml|xml|svg|vue|jsx|tsx|php|markdown|md|rst|jinja2?|django)?[ \t]*\n",
                           re.IGNORECASE)


def _drop_comments(text: str) -> str:
    return re.sub(r"\n[ \t]*\n(?:[ \t]*\n)+", "\n\n", _HTML_COMMENT.sub("", text))


def normalize_text(text: str) -> str:
    """NFC, one kind of line break, no control characters, no HTML comments (they are never shown;
    kept in code blocks that may show markup: untagged, html, xml, markdown ...); runs of spaces
    become one and blank lines at most one, except inside fenced code blocks, whose indentation is the
    code's (only trailing spaces go there), and in an indented paragraph that reads as code (a
    plain-text code example: "for i in range(10):" / "    print(i)"), which keeps its lines'
    indentation beyond the paragraph's own."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text)
    parts = _FENCE.split(text)  # odd positions: the code blocks
    text = "".join(re.sub(r"[ \t]+$", "", part if _MARKUP_FENCE.match(part) else _drop_comments(part), flags=re.MULTILINE)
                   if i % 2 else _normalize_prose(_drop_comments(part))
                   for i, part in enumerate(parts))
    return text.strip()


# Navigation, as a page's text keeps it when the reader is not trafilatura (a jsonl of scraped text,
# a crude HTML-to-text): the breadcrumb trail and the previous/next links. Each part of a trail is a
# short title, never a sentence.
_TRAIL_SEP = re.compile(r"\s*[»›]\s*")
_HOME_TRAIL = re.compile(r"^(?:home|start|main page|homepage)\s*(?:>|/|\|)\s*\S", re.IGNORECASE)
_SENTENCE_END = re.compile(r"[.!?:;,]$")
_EDGE_LINES = 8  # a trail of two parts counts only this near the top or the bottom of the page


_SIDEBAR = {"This Page", "Report a Bug", "Show Source", "Quick search"}  # Sphinx's sidebar, as text
_RELATION = re.compile(r"^(?:Previous|Next) (?:topic|page|chapter)$")  # followed by the other page's title
_LINK_BAR = re.compile(r"^(?:[\w .-]{1,30} )?\|$")  # "modules |", "next |", a lone "|"


def _short_title(part: str) -> bool:
    return 0 < len(part) <= 60 and len(part.split()) <= 6 and not _SENTENCE_END.search(part)


def _is_navigation(line: str, near_edge: bool) -> bool:
    line = line.strip().strip("*_#").strip()
    if not line or len(line) > 160 or "«" in line[1:]:  # « inside a line: French quotation marks
        return False
    if _HOME_TRAIL.match(line):
        parts = [p.strip() for p in re.split(r"\s+(?:>|/|\|)\s+", line)]
        return len(parts) >= 2 and all(_short_title(p) for p in parts)
    if line.startswith("«"):  # "« Previous topic"
        return _short_title(line[1:].strip())
    if not _TRAIL_SEP.search(line):
        return False
    parts = [p for p in _TRAIL_SEP.split(line) if p]
    if not parts or not all(_short_title(p) for p in parts):
        return False
    # "Python » 3.11.2 Documentation »", "Next topic »": a trail cut over lines; "A » B » C": a trail;
    # "Settings » Privacy" alone in the middle of a page may be a menu path, so only near its edges
    return line.endswith(("»", "›")) or len(parts) >= 3 or near_edge


def _starts_link_bar(lines: list[str]) -> bool:
    after = next((x.strip() for x in lines if x.strip()), "")
    return after == "index" or bool(_LINK_BAR.match(after))


def strip_navigation(text: str) -> tuple[str, list[str]]:
    """The text without its navigation lines, and those lines: breadcrumb trails, previous/next
    links, and a Sphinx page's sidebar and link bar as a crude HTML-to-text leaves them ("Previous
    topic" and the title after it, "Show Source", "modules |"). Code blocks are left as they are."""
    parts = _FENCE.split(text)
    prose_lines = [line for i, part in enumerate(parts) if not i % 2 for line in part.split("\n") if line.strip()]
    edge = set(prose_lines[:_EDGE_LINES] + prose_lines[-_EDGE_LINES:])
    removed: list[str] = []
    for i, part in enumerate(parts):
        if i % 2:
            continue
        kept: list[str] = []
        lines = part.split("\n")
        drop_title = False  # the title after "Next topic"
        last_cut = -9  # the line number of the last line cut
        for j, line in enumerate(lines):
            bare = line.strip()
            if drop_title and bare:
                drop_title = False
                if len(bare.split()) <= 12 and not _SENTENCE_END.search(bare):
                    removed.append(bare)
                    last_cut = j
                    continue
            if (_RELATION.match(bare) or bare in _SIDEBAR or _LINK_BAR.match(bare)
                    or (bare == "Navigation" and _starts_link_bar(lines[j + 1:]))
                    or (bare == "index" and j - last_cut <= 2 and removed[-1] == "Navigation")
                    or _is_navigation(line, line in edge)):
                removed.append(bare)
                last_cut = j
                drop_title = bool(_RELATION.match(bare))
            else:
                kept.append(line)
        parts[i] = "\n".join(kept)
    if not removed:
        return text, []
    return "".join(parts), removed


class Prepare(Stage):
    name = "prepare"
    funnel = "prepared"
    texts = {"documents": "text"}  # the cleaned document
    rejects = {
        "empty": "The document has no text left once whitespace and control characters are normalised. "
                 "Try: check that `input.text_field` names the column that holds the text.",
        "duplicate": "The same text (after whitespace normalisation) came earlier in the input; the first one is kept. "
                     "Try: nothing, it is meant; `prepare.dedup: false` keeps exact duplicates.",
        "too_short": "The document has fewer words than `prepare.min_words` (default 40), its markup (badges, HTML tags, link "
                     "targets, URLs) left out: short pages rarely answer anything. "
                     "Try: lower `prepare.min_words`.",
        "language": "The document's detected language (its `language` column, with `language_confidence`) is not one "
                    "of `prepare.languages` (default `[en]`, the paper's setting). Try: add the language to "
                    "`prepare.languages`, or `prepare.languages: any`.",
        "addressed_to_ai": "The page has sentences that speak to AI systems (a score asked for, \"ignore the instructions "
                       "above\", a note to AI raters), listed in `injection_removed`, and `prepare.injections` is "
                       "`reject`. Try: `prepare.injections: strip` (the default) keeps the page without them.",
        "too_long": "The document and the backtranslation prompt would not fit the backward model's context (or the "
                    "document has more tokens than `prepare.max_doc_tokens`). Try: a backward model with a longer "
                    "context, `prepare.max_doc_tokens` (no more than the model can read), or cut long pages into "
                    "sections with `prepare.split.enabled: true`.",
    }

    @classmethod
    def build(cls, cfg, ctx) -> Prepare:
        """Documents are measured with the backward model's tokenizer (no weights are loaded for it)."""
        from .backtranslate import Backtranslate

        counter = ctx.tokens("backward")
        return cls(cfg.prepare, counter.count_tokens,
                   room_for_document(counter, Backtranslate.build(cfg, ctx).template, cfg.backtranslate.max_tokens))

    provenance = ("injection_removed",  # the sentences addressed to AI systems that were cut, one a line
                  "navigation_removed")  # the breadcrumb and previous/next lines that were cut, one a line

    @classmethod
    def funnel_steps(cls, summary: dict) -> list[tuple[str, int]]:
        return [("documents_in", summary["in"]), ("prepared", summary["kept"])]

    @classmethod
    def summarize(cls, counters: dict, summary: dict) -> None:
        summary["pages_with_injections"] = counters.get("pages_with_injections", 0)
        summary["injection_sentences"] = counters.get("injection_sentences", 0)
        summary["pages_with_navigation"] = counters.get("pages_with_navigation", 0)

    def card_note(self, summary: dict) -> str | None:
        notes = []
        n = summary.get("pages_with_injections") or 0
        if n:
            what = "cut before any model saw them" if self.cfg.injections == "strip" else "rejected (`addressed_to_ai`)"
            notes.append(f"{n} pages carried sentences addressed to AI systems ({summary.get('injection_sentences', 0)} "
                         f"sentences, {what}; each pair's `provenance.injection_removed` lists them).")
        n = summary.get("pages_with_navigation") or 0
        if n:
            notes.append(f"{n} pages lost navigation lines (breadcrumb trails, previous/next links) before any model saw "
                         "them; each pair's `provenance.navigation_removed` lists them.")
        return " ".join(notes) or None

    def __init__(self, cfg: PrepareConfig, count_tokens: Callable[[str], int], max_doc_tokens: int | None):
        self.cfg = cfg
        self.count_tokens = count_tokens
        self.max_doc_tokens = cfg.max_doc_tokens or max_doc_tokens
        self._seen = CompactSet()  # 8 bytes per document, whatever its length

    def settings(self) -> dict:
        return {"min_words": self.cfg.min_words, "max_doc_tokens": self.max_doc_tokens, "dedup": self.cfg.dedup,
                "languages": self.cfg.languages, "split": self.cfg.split.model_dump() if self.cfg.split.enabled else None,
                "injections": self.cfg.injections, "navigation": self.cfg.navigation}

    def observe(self, row: dict) -> None:
        if row.get("text"):
            self._seen.add(row["text"])

    def apply(self, row: dict, results: list) -> str | None:
        text = normalize_text(_OUR_MARKERS.sub(" ", row.get("text") or ""))
        if self.cfg.injections != "keep":
            cleaned = strip_injections(text)
            if cleaned.removed:
                row["injection_removed"] = "\n".join(cleaned.removed)
                self.count("pages_with_injections")
                self.count("injection_sentences", len(cleaned.removed))
                if self.cfg.injections == "reject":
                    row["text"] = text
                    return "addressed_to_ai"
                text = normalize_text(cleaned.text)
        if self.cfg.navigation == "strip":
            cut, removed = strip_navigation(text)
            if removed:
                row["navigation_removed"] = "\n".join(removed)
                self.count("pages_with_navigation")
                text = normalize_text(cut)
        row["text"] = text
        row["n_words"] = text_words(text)  # markup left out; Chinese, Japanese, Thai: about two characters a word
        if not text:
            return "empty"
        if self.cfg.dedup:
            if not self._seen.add(text):
                return "duplicate"
        if row["n_words"] < self.cfg.min_words:
            return "too_short"
        row["language"], row["language_confidence"] = detect(text)
        if self.cfg.languages != "any" and row["language"] not in (*self.cfg.languages, UNDETERMINED):
            return "language"  # `und`: no words to tell a language by (code, numbers) is no reason to reject
        row["n_tokens"] = self.count_tokens(text)
        if self.max_doc_tokens is not None and row["n_tokens"] > self.max_doc_tokens:
            return "too_long"
        return None


def room_for_document(counter, template, instruction_tokens: int) -> int | None:
    """Tokens a document may have: the backward model's context less the prompt and the instruction."""
    context = counter.context_length
    if context is None:
        return None
    empty = template.render(document="", language="English")  # a language's name: a token or two, inside the slack
    overhead = sum(counter.count_tokens(m["content"]) + 8 for m in empty.messages)
    return max(0, context - overhead - instruction_tokens - 16)

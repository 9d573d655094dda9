"""grounding: flag rewrites that state what their document does not support.

The rewrite brief is to stay close to the document and add no facts; a rewriter that answers from
its own knowledge instead (small models often do) turns a grounded pair into an ungrounded one, the
thing backtranslated data was meant to avoid. Three cheap checks, all against the words of the
document and of the instruction (restating the question is not inventing):

* numbers: every number written with digits in the rewrite (`$450`, `1,000`, `3.50`, `5km`, `50%`,
  `1.5 million`) must appear in the document, compared by value with units and currency stripped;
  `1,500,000` supports `1.5 million`, and number words in the document (`three`, `twenty-five`,
  `a dozen`) support their digits. List markers at the start of a line (`1.`, `2)`) are not numbers.
* names: capitalised words not at the start of a sentence, line or list item (`Dr. Smith`, `Paris`,
  `NASA`), grouped into names, must appear in the document (case-insensitive). Title-case headings
  are skipped. Without a tagger this misses names that open a sentence; the content words catch them.
* content words: the rewrite's distinct words, stopwords removed, crudely stemmed
  (`baking` ~ `baked` ~ `bake`), compared with the document's; in scripts written without spaces
  (Chinese, Japanese, Thai...) the rewrite's distinct pairs of adjacent characters instead.

* outputs: an interactive session in the rewrite (`>>> addr4.version` then `4`) whose input the
  document also shows must print what the document printed, and so must a sentence that quotes it
  (`` `addr4.version` returns `4` ``). A rewriter that copies an example and changes its output has
  every number and word on the page (the page shows `6` for `addr6.version`), so the other checks
  pass it.

Columns: `altered_outputs` (`input -> output (document: ...)`), `unsupported_numbers`, `unsupported_names`, `unsupported_words` (lists, as written in the
rewrite), `unsupported_share` (share of the rewrite's distinct numbers and content words absent from
the document) and `checked_terms` (how many there were; under 5 the share is too coarse to reject
on). Rejected `ungrounded` when a count or the share passes its limit. Defaults: any
unsupported number (a year, price, dose or count the document never gave is the clearest sign of an
invented fact, and the check rarely errs), names listed but not counted (capitalisation is a weaker
signal: `Celsius`, `Bluetooth`), and a share above 0.5 (a rewrite whose vocabulary is mostly new is
not an edit of its document; a faithful rewrite, even with an assistant's framing, stays well below).

Optional LLM judge (`judge: true`, role `judge`, prompt `grounding_judge.jinja`): asked only for rows
that pass the checks, it answers SUPPORTED or UNSUPPORTED; UNSUPPORTED rejects `judged_unsupported`,
an answer that says neither rejects `unparsed_judgement` (the raw text is kept in `grounding_raw`).
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any


from ...config import GroundingConfig
from ...engines.base import Request, Result
from ...language import UNSPACED
from ...prompts import PromptTemplate, load_template
from ..stage import Stage
from .parsing import words



# Function words (and the pieces `parsing.words` makes of contractions: don't -> don, t); our own short list.
STOPWORDS = frozenset("""
a about above after again against all almost along also although always am among an and another any
anyone anything are around as at away back be became because become becomes been before being below
between both but by can cannot could did do does doing done down during each either else enough even
ever every few for from further get gets getting give given go goes going got had has have having he
her here hers herself him himself his how however i if in instead into is it its itself just keep
least less let like made make makes many may me might more most much must my myself near need needs
neither never no nor not now of off often on once one only onto or other others otherwise our ours
ourselves out over own per perhaps put quite rather really same see seem seems several shall she
should since so some something sometimes still such than that the their theirs them themselves then
there these they thing things this those though through thus to together too toward towards under
until up upon us use used uses using usually very via want was way ways we well were what whatever
when where whether which while who whom whose why will with within without would yes yet you your
yours yourself yourselves s t d ll re ve m don doesn didn isn aren wasn weren won wouldn shouldn
couldn etc eg ie ok okay
""".split())

# Titles join the name that follows them and never end a sentence; the other abbreviations only do not end one.
_TITLES = frozenset("mr mrs ms dr prof st sr jr gen col capt lt sgt rev hon gov sen rep mt ft".split())
_NO_BREAK = _TITLES | {"e.g", "i.e", "vs", "approx", "incl", "no", "fig", "cf"}

_UNITS = {"zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
          "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
          "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19, "dozen": 12, "hundred": 100,
          "thousand": 1000, "million": 10**6, "billion": 10**9, "trillion": 10**12}
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90}
_NOT_CONTENT = STOPWORDS | _TITLES | set(_UNITS) | set(_TENS)
_SCALE = {"thousand": 10**3, "million": 10**6, "billion": 10**9, "trillion": 10**12}

# A number not glued to a preceding letter/digit (`mp3`, `v2.0` are names, not quantities); thousands
# separators, a decimal part and a scale word; currency, units and `%` around it are simply not part of it.
_NUMBER = re.compile(r"(?<![\w.,])(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(?:\s*(thousand|million|billion|trillion)\b)?", re.IGNORECASE)
_LIST_MARKER = re.compile(r"^\s*(?:[-*•>]\s*)?\(?\d{1,2}[.)](?=\s)", re.MULTILINE)
_STRIP = "\"'“”‘’()[]{}*_#>`~•·|,;:.!?…–—-"


def _canon(value: Decimal) -> str:
    text = format(value.normalize(), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def number_forms(match: re.Match) -> set[str]:
    """The values a written number may stand for: as written (`1.5`) and scaled (`1500000`)."""
    digits = match.group(1).replace(",", "") + (match.group(2) or "")
    try:
        value = Decimal(digits)
    except InvalidOperation:  # pragma: no cover - the pattern only matches digits
        return set()
    forms = {_canon(value)}
    if match.group(3):
        forms.add(_canon(value * _SCALE[match.group(3).lower()]))
    return forms


def numbers(text: str, skip_list_markers: bool = False) -> list[tuple[str, set[str]]]:
    """(as written, forms) for each number in `text`."""
    if skip_list_markers:
        text = _LIST_MARKER.sub(lambda m: " " * len(m.group()), text)
    return [(m.group().strip(), number_forms(m)) for m in _NUMBER.finditer(text)]


def number_word_values(ws: list[str]) -> set[str]:
    """Values written as words: `three` -> 3, `twenty five` -> 25 (also 20 and 5), `a dozen` -> 12."""
    out = set()
    for i, w in enumerate(ws):
        if w in _UNITS:
            out.add(str(_UNITS[w]))
        elif w in _TENS:
            out.add(str(_TENS[w]))
            if i + 1 < len(ws) and ws[i + 1] in _UNITS and _UNITS[ws[i + 1]] < 10:
                out.add(str(_TENS[w] + _UNITS[ws[i + 1]]))
    return out


@lru_cache(maxsize=1 << 18)  # a corpus repeats its words: each is stemmed once
def stem(word: str) -> str:
    """A crude stem, applied alike to both sides: `baking`, `baked`, `bakes`, `bake` -> `bak`."""
    w = word
    for suffix in ("ingly", "edly", "ings", "ing", "ies", "ied", "ed", "es", "ly", "s"):
        if w.endswith(suffix) and len(w) - len(suffix) >= 3:
            w = w[:-len(suffix)] + ("y" if suffix in ("ies", "ied") else "")
            break
    if len(w) > 3 and w[-1] == w[-2] and w[-1] not in "aeiouls":
        w = w[:-1]  # running -> runn -> run
    if len(w) > 3 and w[-1] in "ey":
        w = w[:-1]  # bake -> bak, easy -> eas, easily -> easi -> eas
    if w.endswith("i") and len(w) > 3:
        w = w[:-1]
    return w


def content_words(ws: list[str]) -> set[str]:
    """Distinct words that carry content: no stopwords, titles, number words or numbers (`250g`: checked as numbers)."""
    return {w for w in ws if len(w) > 1 and w not in _NOT_CONTENT and not w[0].isdigit()}


def _is_heading(tokens: list[str], line: str) -> bool:
    """`## Ingredients`, `**How To Choose A Bottle**`: every word that is not a stopword capitalised."""
    if line.lstrip().startswith("#"):
        return True
    if line.rstrip().rstrip("\"'“”‘’)]}*_")[-1:] in (".", "!", "?"):
        return False
    cores = [c for c in (t.strip(_STRIP) for t in tokens) if c and c[0].isalpha() and c.lower() not in STOPWORDS]
    return len(cores) >= 2 and all(c[0].isupper() for c in cores)


def names(text: str) -> list[str]:
    """Runs of capitalised words that do not open a sentence, line or list item (`Dr. Smith`)."""
    found: list[str] = []
    for line in text.splitlines():
        tokens = line.split()
        if _is_heading(tokens, line):
            continue
        start, current = True, []
        for tok in tokens:
            core = tok.strip(_STRIP)
            key = core.lower().rstrip(".")
            ends = tok.rstrip("\"'“”‘’)]}*_")
            sentence_end = ends[-1:] in (".", "!", "?", ":") and key not in _NO_BREAK and not re.fullmatch(r"(?:[a-z]\.)+[a-z]?", key)
            if not any(ch.isalpha() for ch in core):  # bullets, dashes, numbers: a name stops there
                if current:
                    found.append(" ".join(current))
                    current = []
                start = start or sentence_end
                continue
            title = key in _TITLES and core[0].isupper()
            capital = core[0].isupper() and key not in STOPWORDS and core not in ("I", "I'm", "I've", "I'll", "I'd")
            if title or (capital and (not start or current)):
                current.append(core if not title else core.rstrip(".") + ".")
            elif current:
                found.append(" ".join(current))
                current = []
            if current and (sentence_end or ends[-1:] in (",", ";")) and not title:
                found.append(" ".join(current))
                current = []
            start = sentence_end
        if current:
            found.append(" ".join(current))
    # a name of titles alone (`Dr.` before a lowercase word) is no name
    return [n for n in found if any(w.rstrip(".").lower() not in _TITLES for w in n.split())]


_UNSPACED_RUN = re.compile(f"[{UNSPACED}]{{2,}}")


def unspaced_bigrams(text: str) -> set[str]:
    """Adjacent character pairs in the runs of scripts written without spaces (Chinese, Japanese,
    Thai...), where single characters say too little and there are no words to split on."""
    return {run[i:i + 2] for run in _UNSPACED_RUN.findall(text) for i in range(len(run) - 1)}


class Evidence:
    """What a document (and its instruction) support: number values, words, word stems."""

    def __init__(self, *texts: str):
        ws: list[str] = []
        self.numbers: set[str] = set()
        for text in texts:
            text = text or ""
            tw = words(text)
            ws.extend(tw)
            for _, forms in numbers(text):
                self.numbers |= forms
            self.numbers |= number_word_values(tw)
        self.words = set(ws)
        self.stems = {stem(w) for w in self.words}
        self.bigrams = {b for text in texts for b in unspaced_bigrams(text or "")}

    def supports_number(self, forms: set[str]) -> bool:
        return bool(forms & self.numbers)

    def supports_word(self, word: str) -> bool:
        return word in self.words or stem(word) in self.stems

    def supports_name(self, name: str) -> bool:
        parts = [w for w in words(name) if w not in _TITLES and len(w) > 1]
        return all(self.supports_word(w) for w in parts)


_PROMPT = re.compile(r"^\s*>>>\s?(.*)$")
_CONTINUATION = re.compile(r"^\s*\.\.\.(\s|$)")
_QUOTED_RESULT = re.compile(r"`([^`\n]+)`\s+(?:will\s+|would\s+|should\s+)?(?:returns?|gives|prints|evaluates\s+to|outputs?)"
                            r"\s+`?([^`\s][^`\n]*?)`?(?=[\s,;:]|\.(?:\s|$)|$)", re.IGNORECASE)


def _norm_code(text: str) -> str:
    return " ".join(text.replace("`", "").split()).strip().rstrip(";")


def session_outputs(text: str) -> dict[str, set[str]]:
    """What each `>>> input` of an interactive session in `text` printed: {input: {output, ...}}."""
    out: dict[str, set[str]] = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = _PROMPT.match(lines[i])
        if not m:
            i += 1
            continue
        source = _norm_code(m.group(1))
        i += 1
        while i < len(lines) and _CONTINUATION.match(lines[i]):
            i += 1
        printed = []
        while i < len(lines) and lines[i].strip() and not _PROMPT.match(lines[i]) and not lines[i].strip().startswith("```"):
            printed.append(lines[i].strip())
            i += 1
        if source and printed:
            out.setdefault(source, set()).add(_norm_code(" ".join(printed)))
    return out


def altered_outputs(response: str, document: str) -> list[str]:
    """The session outputs the rewrite gives for an input whose output the document shows differently."""
    shown = session_outputs(document)
    if not shown:
        return []
    claims = [(src, printed) for src, outs in session_outputs(response).items() for printed in outs]
    claims += [(_norm_code(m.group(1)), _norm_code(m.group(2))) for m in _QUOTED_RESULT.finditer(response)]
    bad = []
    for src, printed in claims:
        if src in shown and printed not in shown[src]:
            item = f"{src} -> {printed} (document: {' | '.join(sorted(shown[src]))})"
            if item not in bad:
                bad.append(item)
    return bad


def check(response: str, document: str, instruction: str = "") -> dict[str, Any]:
    """The grounding columns of a rewrite against its document (and instruction)."""
    ev = Evidence(document, instruction)
    items, unsupported = 0, 0
    bad_numbers: list[str] = []
    seen: set[str] = set()
    for written, forms in numbers(response, skip_list_markers=True):
        key = min(forms)
        if key in seen:
            continue
        seen.add(key)
        items += 1
        if not ev.supports_number(forms):
            unsupported += 1
            bad_numbers.append(written)
    bad_words = []
    for w in sorted(content_words(words(response))):
        items += 1
        if not ev.supports_word(w):
            unsupported += 1
            bad_words.append(w)
    for b in sorted(unspaced_bigrams(response)):  # Chinese, Japanese, Thai: character pairs stand for words
        items += 1
        if b not in ev.bigrams:
            unsupported += 1
            bad_words.append(b)
    bad_names = list(dict.fromkeys(n for n in names(response) if not ev.supports_name(n)))
    return {
        "altered_outputs": altered_outputs(response, document),
        "unsupported_numbers": bad_numbers,
        "unsupported_names": bad_names,
        "unsupported_words": bad_words,
        "unsupported_share": round(unsupported / items, 4) if items else 0.0,
        "checked_terms": items,
    }


_VERDICT = re.compile(r"\b(un|not\s+)?supported\b", re.IGNORECASE)


def parse_verdict(text: str) -> bool | None:
    """True for SUPPORTED, False for UNSUPPORTED / NOT SUPPORTED, None when the text says neither.

    The last verdict word counts (models reason first); a bare `Yes`/`No` answers the prompt's
    question "does it add facts?" (yes = unsupported).
    """
    found = list(_VERDICT.finditer(text or ""))
    if found:
        return found[-1].group(1) is None
    first = re.match(r"\W*(yes|no)\b", text or "", re.IGNORECASE)
    if first:
        return first.group(1).lower() == "no"
    return None


def load_judge_template(name: str = "grounding_judge") -> PromptTemplate:
    return load_template(name)


# A share of fewer distinct words and numbers than this says little (one new word of two is 0.5).
MIN_CHECKED_FOR_SHARE = 5


class Grounding(Stage):
    name = "grounding"
    funnel = "grounded"
    rejects = {
        "ungrounded": "The rewrite adds what its document lacks: an example whose output differs from the document's "
                      "(`altered_outputs`; `grounding.max_altered_outputs`, default 0), more unsupported numbers than "
                      "`grounding.max_unsupported_numbers` (default 0), more unsupported names than "
                      "`grounding.max_unsupported_names` (off by default), or, with 5 or more checked terms, a share of "
                      "unsupported numbers and content words above `grounding.max_unsupported_share` (default 0.5); the "
                      "`unsupported_*` columns list them. Try: raise a limit (null turns it off), a rewriter that keeps "
                      "to its document (`models.rewriter.model`), or `grounding.enabled: false`.",
        "engine_error": "The model's request failed for a reason a retry would not fix (the engine's message is in "
                        "the row's `grounding_error`: a prompt over the context length, a server's 4xx answer, ...). "
                        "Try: fix what `grounding_error` says (a server that could not be reached leaves rows "
                        "unfinished instead, for the next run).",
        "unparsed_judgement": "The judge's answer says neither SUPPORTED nor UNSUPPORTED (it is in `grounding_raw`). "
                              "Try: raise `grounding.judge_max_tokens`, or a stronger judge (`models.judge.model`).",
        "judged_unsupported": "The judge (`grounding.judge: true`) answered UNSUPPORTED: the rewrite states facts the "
                              "document does not support. Try: a rewriter that keeps to its document, another judge "
                              "(`models.judge.model`), or `grounding.judge: false`.",
    }

    @classmethod
    def enabled(cls, cfg) -> bool:
        return "rewrite" in cfg.variant and cfg.grounding.enabled

    @classmethod
    def build(cls, cfg, ctx) -> Grounding:
        return cls(cfg.grounding)

    @classmethod
    def role_for(cls, cfg) -> str | None:
        return cls(cfg.grounding).role  # the judge's, when grounding.judge is on

    @classmethod
    def summarize(cls, counters: dict, summary: dict) -> None:
        n = summary["in"]
        summary["ungrounded_rate"] = round(summary["rejected_by_reason"].get("ungrounded", 0) / n, 4) if n else None

    def __init__(self, cfg: GroundingConfig):
        self.cfg = cfg
        self.role = "judge" if cfg.judge else None
        self.template = load_judge_template() if cfg.judge else None

    def sampling(self) -> str:
        return f"T={self.cfg.judge_temperature}, max_tokens={self.cfg.judge_max_tokens}" if self.cfg.judge else ""

    def card_note(self, summary: dict) -> str | None:
        g = self.cfg
        return (f"Grounding: {summary['rejected_by_reason'].get('ungrounded', 0)} of {summary['in']} rewrites "
                f"(rate {summary['ungrounded_rate']}) were rejected as adding content their document does not support "
                f"(numbers absent from the document > {g.max_unsupported_numbers}, or a share of absent content words "
                f"> {g.max_unsupported_share}). Kept rows carry `unsupported_share`.")

    def settings(self) -> dict[str, Any]:
        fields = self.cfg.model_dump(exclude={"enabled"})
        if not self.cfg.judge:
            fields.pop("judge_max_tokens")
            fields.pop("judge_temperature")
        return fields

    def _flags(self, row: dict) -> tuple[dict, bool]:
        cols = check(row.get("response") or "", row.get("text") or "", row.get("instruction") or "")
        c = self.cfg
        over = ((c.max_altered_outputs is not None and len(cols["altered_outputs"]) > c.max_altered_outputs)
                or (c.max_unsupported_numbers is not None and len(cols["unsupported_numbers"]) > c.max_unsupported_numbers)
                or (c.max_unsupported_names is not None and len(cols["unsupported_names"]) > c.max_unsupported_names)
                or (c.max_unsupported_share is not None and cols["checked_terms"] >= MIN_CHECKED_FOR_SHARE
                    and cols["unsupported_share"] > c.max_unsupported_share))
        return cols, over

    def requests(self, row: dict) -> list[Request]:
        if not self.cfg.judge or self._flags(row)[1]:
            return []  # rejected by the checks already: no judge call to pay for
        messages = self.template.render(document=row.get("text") or "", instruction=row.get("instruction") or "",
                                        answer=row.get("response") or "").messages
        return [Request(messages=messages, max_tokens=self.cfg.judge_max_tokens,
                        temperature=self.cfg.judge_temperature, top_p=1.0, key=row["id"])]

    def apply(self, row: dict, results: list[Result]) -> str | None:
        cols, over = self._flags(row)
        row.update(cols)
        if over:
            return "ungrounded"
        if not results:
            return None
        res = results[0]
        if not self.record_call(row, res, raw="grounding_raw"):
            return "engine_error"
        verdict = parse_verdict(res.text)
        row["grounding_verdict"] = None if verdict is None else ("SUPPORTED" if verdict else "UNSUPPORTED")
        if verdict is None:
            return "unparsed_judgement"
        return None if verdict else "judged_unsupported"

"""page_kind: the scorer says what kind of page a document is; only pages worth a pair go on.

Backtranslation writes the instruction a page answers, so almost every page answers its own
instruction: a licence answers "What are the terms of the MIT licence?", a changelog "What changed
in version 2.3?". Asked whether the page answers the instruction, a small scorer says yes to nearly
all of them (on the labelled real pages of benchmarks/real_documents.py, the expected score of
licences, changelogs and web junk sat within 0.3 of that of Python's documentation; AUC 0.72).
What tells the pages apart is their kind. One forward pass over the page's head (its first
`page_kind.max_chars` characters), with the answer forced up to `Answer:`, gives the probability of each of ten kinds (explanation, reference, product, news,
forum, navigation, legal, changelog, error, spam); a page is kept when the kinds in
`page_kind.keep` (default explanation and reference) add up to at least `page_kind.min_p`.

It runs before backtranslation, so a junk page costs one forward pass instead of a generation and a
score. Rows that came with their own instruction (pairs in) are not classified: their text is an
answer, not a page. With `curate.filter: false` no page is rejected here; the decision is recorded
(`page_kind_keep`) and curation's keep rule takes it into account.
"""

from __future__ import annotations

from ...config import PAGE_KINDS, PageKindConfig
from ...engines.base import Request, Result
from ...prompts import load_template
from ..stage import Stage
from .parsing import choice_probabilities

LETTERS = [chr(ord("A") + i) for i in range(len(PAGE_KINDS))]  # the prompt lists the kinds as A..J, in order
KIND_OF = dict(zip(LETTERS, PAGE_KINDS))


def kind_probabilities(choice_logprobs: dict[str, float]) -> dict[str, float]:
    """The letters' log-probabilities -> each kind's probability (normalised over the ten letters)."""
    known = {k: v for k, v in choice_logprobs.items() if v is not None}
    return {KIND_OF[k]: p for k, p in choice_probabilities(known, LETTERS).items()}


def page_head(text: str, max_chars: int | None) -> str:
    """The page's first `max_chars` characters, cut at the last line break (else space) before the limit,
    with a line saying the page goes on; the whole page when it is short enough or `max_chars` is None."""
    if max_chars is None or len(text) <= max_chars:
        return text
    head = text[:max_chars]
    cut = max(head.rfind("\n"), 0) or head.rfind(" ")
    return (head[:cut] if cut > max_chars // 2 else head).rstrip() + "\n[... the page goes on]"


class PageKind(Stage):
    name = "page_kind"
    role = "scorer"
    funnel = "wanted_kind"
    applies_keep_rule = True
    provenance = ("page_kind",)  # provenance columns are strings
    rejects = {
        "unwanted_page_kind": "The scorer reads the page as a kind not in `page_kind.keep` (the row's `page_kind` is "
                              "the most likely kind, `page_kind_p` the probability of the kept kinds, below "
                              "`page_kind.min_p`): a licence, a changelog, navigation, a product page, news, chatter, "
                              "an error page or spam. Try: add the kind to `page_kind.keep`, lower `page_kind.min_p`, "
                              "or `page_kind.enabled: false` (the paper has no such step).",
        "unclassified_page": "The scorer gave no probability to any kind's letter, or its request failed "
                             "(`page_kind_error`). Try: an engine that returns logprobs for choices "
                             "(transformers, vLLM, an OpenAI-compatible server with logprobs).",
    }

    @classmethod
    def enabled(cls, cfg) -> bool:
        return cfg.page_kind.enabled and "filter" in cfg.variant

    @classmethod
    def build(cls, cfg, ctx) -> PageKind:
        return cls(cfg.page_kind, filter=cfg.curate.filter)

    @classmethod
    def summarize(cls, counters: dict, summary: dict) -> None:
        summary["page_kinds"] = {k: counters[f"kind:{k}"] for k in PAGE_KINDS if counters.get(f"kind:{k}")}

    def __init__(self, cfg: PageKindConfig, filter: bool = True):
        self.cfg, self.filter = cfg, filter
        self.template = load_template("page_kind")

    def sampling(self) -> str:
        return "forward pass (logprobs)"

    def settings(self) -> dict:
        fields = {"keep": sorted(self.cfg.keep), "min_p": self.cfg.min_p, "max_chars": self.cfg.max_chars}
        return fields if self.filter else {**fields, "filter": False}

    def card_note(self, summary: dict) -> str | None:
        kinds = summary.get("page_kinds") or {}
        return (f"Page kinds: keep {', '.join(self.cfg.keep)} with probability >= {self.cfg.min_p:g}. Seen: "
                + ", ".join(f"{k}: {n}" for k, n in kinds.items()) + ".")

    def requests(self, row: dict) -> list[Request]:
        if row.get("instruction_given"):  # a pair in: its text is an answer, not a page
            return []
        r = self.template.render(document=page_head(row["text"], self.cfg.max_chars))
        return [Request(messages=r.messages, assistant_prefix=r.assistant_prefix, choices=LETTERS, max_tokens=1,
                        temperature=0.0, key=row["id"])]

    def apply(self, row: dict, results: list[Result]) -> str | None:
        if not results:
            return None
        res = results[0]
        probs = kind_probabilities(res.choice_logprobs or {}) if self.record_call(row, res) else {}
        if not probs:
            row["page_kind"] = row["page_kind_p"] = None
            return "unclassified_page"
        kind = max(probs, key=probs.get)
        p_keep = sum(probs[k] for k in self.cfg.keep)
        self.count(f"kind:{kind}")
        row["page_kind"], row["page_kind_p"] = kind, round(p_keep, 4)
        row["page_kind_probs"] = {k: round(v, 4) for k, v in probs.items()}
        row["page_kind_keep"] = p_keep >= self.cfg.min_p
        return None if row["page_kind_keep"] or not self.filter else "unwanted_page_kind"

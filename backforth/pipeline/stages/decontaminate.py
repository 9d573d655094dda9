"""decontaminate: drop generated instructions that overlap the instructions of an eval set.

Backtranslation writes instructions from web pages, and web pages quote benchmarks: a training pair
whose instruction is an AlpacaEval question inflates the win rate the paper reports. A row is
`contaminated` when its instruction shares a word `ngram` (default 8, the usual choice of
decontamination scripts) with an eval instruction, or, with `exact_match`, when the two are equal
after normalisation (lowercase, words only: `parsing.words`), which catches the short eval questions
that have no n-gram that long. The rejected row records `contaminated_with` (`eval_set`, the item's
`index` in it and its `id`) and `contaminated_ngram` (the shared n-gram, or the normalised
instruction for an exact match).

Eval sets (`eval_sets`): `bundled` (the eval set shipped with backforth; the offline default),
`alpaca_eval` (AlpacaEval's 805 instructions from the Hugging Face hub, the paper's benchmark) or a
.jsonl/.json file of objects with `instruction`. They are read once, when the stage is built, so a
missing file or an unreachable hub stops the run before any model is paid for. The normalised
instructions' digest goes into the fingerprint: a changed eval file makes the stage run again.
"""

from __future__ import annotations

import hashlib
from typing import Any


from ...config import DecontaminateConfig
from ..stage import Stage
from .parsing import words




def normalized(text: str) -> str:
    return " ".join(words(text or ""))


def ngrams(ws: list[str], n: int) -> list[str]:
    return [" ".join(ws[i:i + n]) for i in range(len(ws) - n + 1)]


def load_eval_instructions(source: str) -> list[dict]:
    """Rows (`id`, `instruction`) of one eval set, through the eval loader (bundled, alpaca_eval or a file)."""
    from ...evalsets import load_eval_set  # the one loader of eval sets (hub fallbacks included)

    return load_eval_set(source)


class Decontaminate(Stage):
    name = "decontaminate"
    funnel = "uncontaminated"
    rejects = {
        "contaminated": "The instruction shares a run of `decontaminate.ngram` words (default 8) with an instruction "
                        "of `decontaminate.eval_sets`, or equals one after normalisation (`decontaminate.exact_match`); "
                        "`contaminated_with` and `contaminated_ngram` say which and what. Try: nothing if you evaluate on "
                        "that set; for spurious matches (a common phrase), raise `decontaminate.ngram` or set "
                        "`decontaminate.exact_match: false`.",
    }

    @classmethod
    def enabled(cls, cfg) -> bool:
        return cfg.decontaminate.enabled

    @classmethod
    def build(cls, cfg, ctx) -> Decontaminate:
        return cls(cfg.decontaminate)

    def __init__(self, cfg: DecontaminateConfig, eval_rows: dict[str, list[dict]] | None = None):
        """`eval_rows`: {eval_set name: rows with `instruction` (and `id`)}, instead of loading `cfg.eval_sets`."""
        self.cfg = cfg
        if eval_rows is None:
            eval_rows = {source: load_eval_instructions(source) for source in cfg.eval_sets}
        self._grams: dict[str, dict] = {}  # n-gram -> the first eval item that has it
        self._exact: dict[str, dict] = {}  # normalised instruction -> eval item
        h = hashlib.sha256()
        for source, rows in eval_rows.items():
            for index, rec in enumerate(rows):
                item = {"eval_set": source, "index": index, "id": rec.get("id")}
                norm = normalized(rec["instruction"])
                h.update(f"{source}\x00{norm}\n".encode())
                if not norm:
                    continue
                self._exact.setdefault(norm, item)
                for g in ngrams(norm.split(), cfg.ngram):
                    self._grams.setdefault(g, item)
        self.n_eval = sum(len(rows) for rows in eval_rows.values())
        self.eval_digest = h.hexdigest()[:16]

    def settings(self) -> dict[str, Any]:
        return {**self.cfg.model_dump(exclude={"enabled"}), "eval_digest": self.eval_digest}

    def match(self, instruction: str) -> tuple[dict, str] | None:
        """(eval item, shared text) when `instruction` overlaps the eval set, else None."""
        norm = normalized(instruction)
        if not norm:
            return None
        if self.cfg.exact_match and norm in self._exact:
            return self._exact[norm], norm
        for g in ngrams(norm.split(), self.cfg.ngram):
            if g in self._grams:
                return self._grams[g], g
        return None

    def apply(self, row: dict, results: list) -> str | None:
        found = self.match(row.get("instruction") or "")
        if found is None:
            return None
        row["contaminated_with"], row["contaminated_ngram"] = dict(found[0]), found[1]
        return "contaminated"

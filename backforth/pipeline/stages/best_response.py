"""best_response: of several input responses to one instruction, keep the best by the keep rule's score.

A dataset brought in as pairs (`input.instruction_field`) often answers one question more than once:
a good answer and a bad one, or several samples. Every pair is scored; this stage then ranks the
pairs that share an instruction (the same words, case and punctuation aside) by the value the keep
rule reads (`top_share.score_value`: the expected score where the scorer gave probabilities, else
the score), ties broken by input order, and keeps the first (`curate.responses_per_instruction:
best`, the default) or every one that passed (`all`). The others are rejected as `not_best_response`
with `best_response_id`, the kept pair's id. Backtranslated instructions are one per document and
pass untouched.
"""

from __future__ import annotations

from collections.abc import Iterable

from ...config import CurateConfig
from ...hashset import CompactSet
from ..stage import Stage
from .parsing import words
from .top_share import score_value


def instruction_key(instruction: str) -> str:
    return " ".join(words(instruction or ""))


class BestResponse(Stage):
    name = "best_response"
    funnel = "best_per_instruction"
    rejects = {
        "not_best_response": "Another pair of the input answers the same instruction with a higher score (it is named in "
                             "`best_response_id`). Try: `curate.responses_per_instruction: all` to keep every pair that "
                             "passes the keep rule.",
    }
    survey_first = True

    @classmethod
    def enabled(cls, cfg) -> bool:
        return "filter" in cfg.variant and cfg.curate.responses_per_instruction == "best"

    @classmethod
    def build(cls, cfg, ctx) -> BestResponse:
        return cls(cfg.curate)

    @classmethod
    def funnel_steps(cls, summary: dict) -> list[tuple[str, int]]:
        # Only worth a funnel line when it dropped something.
        return [(cls.funnel, summary["kept"])] if summary.get("rejected") else []

    def __init__(self, cfg: CurateConfig):
        self.mode = cfg.responses_per_instruction
        self._losers: dict[str, str] = {}

    def settings(self) -> dict:
        return {"responses_per_instruction": self.mode}

    def survey(self, rows: Iterable[dict]) -> None:
        best: dict[str, tuple[float, int, str]] = {}
        given: list[tuple[str, str]] = []
        for r in rows:
            if r.get("instruction_source") != "input":
                continue
            key, value = instruction_key(r.get("instruction", "")), score_value(r)
            rank = (-(value if value is not None else float("-inf")), r.get("_index", 0), r["id"])
            given.append((key, r["id"]))
            if key not in best or rank < best[key]:
                best[key] = rank
        self._losers = {rid: best[key][2] for key, rid in given if best[key][2] != rid}

    def apply(self, row: dict, results: list) -> str | None:
        winner = self._losers.get(row["id"])
        if winner is None:
            return None
        row["best_response_id"] = winner
        return "not_best_response"

    def release(self) -> None:
        self._losers = {}

"""curate_m1: Humpback's second round of self-curation, scored by M1.

M1 is the forward model trained on the seed pairs plus the pairs round 1 kept, each tagged by source
(Li et al. 2023, section 2.3). Training it is not the pipeline's job: the orchestrator that runs the
pipeline (`backforth.workflows.run`) stops after round 1, trains M1 with `backforth.train`, and runs
the pipeline again with M1 as the model of role `scorer_m1`. This stage then re-scores every
candidate round 1 scored, kept or not; the row keeps round 1's score as `score_round1`.
"""

from __future__ import annotations

from ...engines.base import Result
from ..stage import DONE
from .curate import Curate


class CurateM1(Curate):
    """Round 2 of Humpback's self-curation: M1 (trained on seed + round 1's pairs) re-scores every
    candidate round 1 scored, kept or not; the row keeps round 1's score as `score_round1`."""

    name = "curate_m1"
    continues = "curate"
    role = "scorer_m1"
    identity_role = "scorer"
    trained_role = True  # M1 is trained by the orchestrator between the two rounds
    funnel = "kept_by_m1"
    provenance = ("curate_m1_model", "curate_m1_prompt")
    rejects = {
        "engine_error": "The model's request failed for a reason a retry would not fix (the engine's message is in "
                        "the row's `curate_m1_error`: a prompt over the context length, a server's 4xx answer, ...). "
                        "Try: fix what `curate_m1_error` says (a server that could not be reached leaves rows "
                        "unfinished instead, for the next run).",
        "unparsed_score": "No score could be read from M1's output (see `score_raw`; round 1's score is in "
                          "`score_round1`). Try: `curate.method: logprobs`, or more training for M1 "
                          "(`curate.m1_max_steps`).",
        "low_score": "M1's score is below `curate.threshold` (round 1's is in `score_round1`). Try: lower "
                     "`curate.threshold`, `curate.threshold_on: expected` with logprobs, train M1 longer "
                     "(`curate.m1_max_steps`) or from a stronger base (`curate.m1_base_model`), or `curate.iterations: 1`.",
    }

    @classmethod
    def enabled(cls, cfg) -> bool:
        return "filter" in cfg.variant and cfg.curate.iterations == 2

    @classmethod
    def funnel_steps(cls, summary: dict) -> list[tuple[str, int]]:
        return [(cls.funnel, summary["kept"])]

    def accepts(self, status: str, reason: str | None) -> bool:
        return status == DONE or reason == "low_score"

    @classmethod
    def build(cls, cfg, ctx) -> CurateM1:
        return cls(cfg.curate)

    def settings(self) -> dict:
        return {**super().settings(), "seed": self.cfg.seed, "m1_max_steps": self.cfg.m1_max_steps,
                "m1_base_model": self.cfg.m1_base_model}

    def apply(self, row: dict, results: list[Result]) -> str | None:
        row["score_round1"], row["score_round1_expected"] = row.get("score"), row.get("score_expected")
        return super().apply(row, results)

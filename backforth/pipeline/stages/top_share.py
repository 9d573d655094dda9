"""top_share: keep a fixed share of the scored pairs, the best first (`curate.keep_share`).

The paper keeps score 5. A small scorer rarely puts its most likely score on 5, even for good
pairs, yet its expected score still ranks them (benchmarks/curation.py measures the AUC): keeping
the top 30% by expected score then keeps the pairs it rates best. The stage sees every scored row
before it decides (`survey`), ranks them by expected score (logprobs) or score (generate), ties
broken by input order, and keeps the first `ceil(keep_share * n)`; the others are rejected as
`below_top_share`. Each row records its `score_rank` (1 = best), the share's `score_cutoff`, and the
decision (`keep`, with the rule in `keep_rule`; with `curate.filter: false` nothing is rejected).
The ranking is computed again from the same scores on resume, so it never changes under a run.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from ...config import CurateConfig
from ...hashset import CompactSet
from ..stage import Stage
from .curate import keep_rule, wanted_kind


def score_value(row: dict) -> float | None:
    """What a row is ranked by: the expected score where the scorer gave probabilities, else the score."""
    value = row.get("score_expected")
    return row.get("score") if value is None else value


class TopShare(Stage):
    name = "top_share"
    funnel = "kept_top_share"
    applies_keep_rule = True
    rejects = {
        "below_top_share": "The pair is not among the best `curate.keep_share` of the scored pairs (ranked by expected "
                           "score, or score; `score_rank` and `score_cutoff` say where it stood). Try: raise "
                           "`curate.keep_share`, or set it to null to keep by `curate.threshold` instead.",
    }
    survey_first = True

    @classmethod
    def enabled(cls, cfg) -> bool:
        return "filter" in cfg.variant and cfg.curate.keep_share is not None

    @classmethod
    def build(cls, cfg, ctx) -> TopShare:
        return cls(cfg.curate)

    def __init__(self, cfg: CurateConfig):
        self.share, self.filter, self.rule = cfg.keep_share, cfg.filter, keep_rule(cfg)
        self._kept = CompactSet()
        self._rank: dict[str, int] = {}
        self.cutoff: float | None = None

    def settings(self) -> dict:
        return {"keep_share": self.share} if self.filter else {"keep_share": self.share, "filter": False}

    def survey(self, rows: Iterable[dict]) -> None:
        ranked = sorted(((score_value(r), r.get("_index", 0), r["id"]) for r in rows if score_value(r) is not None),
                        key=lambda t: (-t[0], t[1]))
        n_keep = math.ceil(self.share * len(ranked))
        self._rank = {rid: i + 1 for i, (_v, _x, rid) in enumerate(ranked)}
        for _v, _x, rid in ranked[:n_keep]:
            self._kept.add(rid)
        self.cutoff = ranked[n_keep - 1][0] if n_keep else None

    def apply(self, row: dict, results: list) -> str | None:
        row["score_rank"] = self._rank.get(row["id"])
        row["score_cutoff"] = self.cutoff
        row["keep"], row["keep_rule"] = row["id"] in self._kept and wanted_kind(row), self.rule
        return None if row["keep"] or not self.filter else "below_top_share"

    def release(self) -> None:
        self._kept, self._rank = CompactSet(), {}

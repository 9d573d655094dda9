"""The stages of a run, in order: the one list the runner, exports, card, analysis, report and CLI read.

Adding a stage means writing its module under `stages/` (a `Stage` subclass that declares its name,
`enabled`, `build`, role, funnel label, provenance columns and `summarize`), its config section, and
one line here. Nothing else names a stage.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from .stage import BuildContext, Stage
from .stages.backtranslate import Backtranslate
from .stages.best_response import BestResponse
from .stages.curate import Curate
from .stages.curate_m1 import CurateM1
from .stages.decontaminate import Decontaminate
from .stages.dedup import DedupDocuments, DedupInstructions
from .stages.distill import Distill
from .stages.grounding import Grounding
from .stages.page_kind import PageKind
from .stages.prefilter import Prefilter
from .stages.prepare import Prepare
from .stages.rewrite import Rewrite, RewriteRedraw
from .stages.top_share import TopShare

if TYPE_CHECKING:
    from ..config import RunConfig

STAGES: tuple[type[Stage], ...] = (
    Prepare,            # clean, exact duplicates, too short or too long
    DedupDocuments,     # near-duplicate documents
    Prefilter,          # documents a classifier learned from the scorer's decisions finds unlikely to be kept
    PageKind,           # pages of a kind worth a pair (explanations, references)
    Backtranslate,      # the backward model writes each document's instruction
    DedupInstructions,  # near-duplicate instructions
    Decontaminate,      # instructions that overlap an eval set
    Curate,             # the scorer rates each pair; keep score 5
    CurateM1,           # Humpback's second round, scored by M1
    TopShare,           # or keep a share of the best-scored pairs
    BestResponse,       # input pairs sharing an instruction: the best-scored one
    Rewrite,            # the aligned model rewrites the document into the answer
    RewriteRedraw,      # a second draw for the rewrites lost to sampling
    Grounding,          # rewrites that add what the document lacks
    Distill,            # the baseline: the same instructions answered without the document
)
NAMES: tuple[str, ...] = tuple(s.name for s in STAGES)
__all__ = ["STAGES", "NAMES", "BuildContext", "enabled", "names", "by_name", "text_source", "keep_rule_stages",
           "provenance_columns"]


def enabled(cfg: RunConfig) -> list[type[Stage]]:
    """The stages of a run with this config, in order."""
    return [s for s in STAGES if s.enabled(cfg)]


def names(cfg: RunConfig | None = None) -> list[str]:
    """Stage names of a run with `cfg`, or every stage that exists."""
    return [s.name for s in (enabled(cfg) if cfg is not None else STAGES)]


def by_name(name: str) -> type[Stage]:
    for s in STAGES:
        if s.name == name:
            return s
    raise KeyError(name)


def text_source(kind: str) -> tuple[str, str]:
    """(stage, column) of the first stage that produces texts of `kind` (`Stage.texts`): where the
    analyses read documents, instructions, rewritten and distilled texts."""
    for s in STAGES:
        if kind in s.texts:
            return s.name, s.texts[kind]
    raise KeyError(kind)


def keep_rule_stages() -> tuple[str, ...]:
    """The stages that apply the run's keep rule (`Stage.applies_keep_rule`)."""
    return tuple(s.name for s in STAGES if s.applies_keep_rule)


def provenance_columns(extra: Sequence[Stage | type[Stage]] = ()) -> tuple[str, ...]:
    """Every stage's provenance columns, in order, each once; then those of `extra` stages (a user's own)."""
    return tuple(dict.fromkeys(c for s in (*STAGES, *extra) for c in s.provenance))

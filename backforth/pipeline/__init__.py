"""The method (`stages/`, listed in order by `registry`) apart from how it runs (runner, executors,
store, export, card). See shared/DESIGN.md for the row contract."""

from .fingerprints import RunConflict
from .runner import Runner

__all__ = ["Runner", "RunConflict"]

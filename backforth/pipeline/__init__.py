"""The method (`stages/`, listed in order by `registry`; `method.run_method` runs them over a run
config's input and exports) apart from how it runs (the generic `runner`, executors, store, export,
card). See shared/DESIGN.md for the row contract."""

from .fingerprints import RunConflict
from .job import Engines
from .runner import Runner

__all__ = ["Engines", "Runner", "RunConflict"]

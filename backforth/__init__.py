"""backforth: instruction back-and-forth translation (Nguyen et al., 2024) as a toolkit and a command line.

    import backforth

    result = backforth.run("demo", rows=my_dataset, out="runs/nb")  # a config name/path/dict; rows: a
    result.dataset      # datasets.Dataset, a list of dicts or a path; the exported pairs (sft.parquet)
    result.rejects      # the rejected rows, with `stage` and `reason`
    result.distilled    # the distillation baseline, when the run has it
    result.stats        # stats.json; result.funnel as (label, rows) pairs

The public API: `run`, `Result`, `load_config`, `Stage` (subclass it for a stage of your own, placed
with `run(..., after={"curate": MyStage()})`) and `try_stage` (one stage on a few rows, to try a
prompt or a model). Messages go to `logging.getLogger("backforth")`: a library call prints nothing
unless logging is configured.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from .version import __version__

__all__ = ["run", "Result", "load_config", "Stage", "try_stage", "__version__"]

# A library call prints nothing unless the program configures logging (the CLI does: `console.py`).
logging.getLogger("backforth").addHandler(logging.NullHandler())

if TYPE_CHECKING:
    from .api import load_config, run, try_stage
    from .result import Result
    from .pipeline.stage import Stage

_LAZY = {"run": "api", "Result": "result", "load_config": "api", "try_stage": "api", "Stage": "pipeline.stage"}


def __getattr__(name: str) -> Any:
    """The API is imported when first used, so that `backforth --help` starts fast."""
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

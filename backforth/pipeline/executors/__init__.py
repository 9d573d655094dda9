"""Where a run's stages execute, chosen by `runner.executor`: `local` (this process) or `ray` (a Ray
cluster through Ray Data). Both receive one stage at a time (`StageJob`) and write the same store."""

from __future__ import annotations

from collections.abc import Callable


def executor_for(cfg, engine_factory: Callable | None = None):
    if cfg.runner.executor == "ray":
        from .ray import RayExecutor

        return RayExecutor(cfg, engine_factory)
    from .local import LocalExecutor

    return LocalExecutor()

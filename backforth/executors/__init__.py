"""Where a run's stages execute: `local` (this process, `pipeline.Runner`) or `ray` (a Ray cluster,
`executors.ray.RayRunner`), chosen by `runner.executor`. The stages and their logic are the same."""

from __future__ import annotations

from pathlib import Path

from ..config import RunConfig


def make_runner(cfg: RunConfig, out: str | Path, **kwargs):
    """The runner for `cfg.runner.executor`; a run dir written by the other executor is refused."""
    from ..pipeline.runner import RunConflict, Runner
    from ..pipeline.shards import layout_conflict

    if cfg.runner.executor == "ray":
        from .ray import RayRunner

        return RayRunner(cfg, out, **kwargs)
    problem = layout_conflict(Path(out), "local")
    if problem:
        raise RunConflict(problem)
    return Runner(cfg, out, **kwargs)

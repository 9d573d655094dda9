"""What an executor is handed: one stage of a run (`StageJob`) and the engines of its model roles (`Engines`).

Both live below the runner and the executors, which each import them: the runner hands a job to an
executor, which runs the job's stage through the job's engine (in this process, or on Ray workers
that build the engine of the stage's role from `Engines.model`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

from ..config import ModelConfig, RunnerConfig, digest
from ..engines import Engine, build_engine
from ..errors import UserError
from ..hashset import CompactSet
from .progress import RunProgress, stage_progress
from .stage import Stage
from .store import RunStore, StageStore

__all__ = ["Engines", "StageJob"]


class Engines:
    """The model of each role (`models`), and one live engine per distinct model, shared by the roles
    that use the same model, made by `factory` when a stage first needs it."""

    def __init__(self, models: Mapping[str, ModelConfig], factory: Callable = build_engine):
        self.models, self.factory, self._live = dict(models), factory, {}

    def model(self, role: str) -> ModelConfig:
        if role not in self.models:
            raise UserError(f"no model for role '{role}': a stage of this run asks for it; the models given are "
                            f"for {', '.join(self.models) or 'no role'}")
        return self.models[role]

    def key(self, role: str) -> str:
        return digest(self.model(role).model_dump())

    def get(self, role: str) -> Engine:
        k = self.key(role)
        if k not in self._live:
            self._live[k] = self.factory(self.model(role))
        return self._live[k]

    def known(self, role: str) -> bool:
        return role in self.models

    def release_unused(self, roles_still_needed: Iterable[str]) -> None:
        keep = {self.key(r) for r in roles_still_needed if self.known(r)}
        for k in [k for k in self._live if k not in keep]:
            self._live.pop(k).close()

    def close(self) -> None:
        self.release_unused([])


@dataclass
class StageJob:
    """One stage of one run, as an executor sees it: the stage, where its input comes from, its store."""

    stage: Stage
    chain: list[str]  # the stages before it, in order
    run: RunStore
    engines: Engines
    settings: RunnerConfig  # chunk sizes, chunks in flight, progress
    source: Callable[[], Iterator[dict]]  # the input rows, for the first stage
    on_chunk: Callable[[int], None] | None = None  # told the rows of each finished chunk
    plan: RunProgress | None = None  # the run's stages, for "stage k of n" and the run's ETA

    def __post_init__(self) -> None:
        self.store: StageStore = self.run.stage(self.stage.name)
        self.first = not self.chain
        light = self.stage.role is None
        s = self.settings
        self.chunk_size = max(s.chunk_size, s.light_chunk_size) if light else s.chunk_size
        self.chunks_in_flight = s.chunks_in_flight
        self.show_progress = s.progress
        self.store.repair()
        self.done = CompactSet()
        for i in self.store.ids():
            self.done.add(i)

    def engine(self) -> Engine | None:
        return self.engines.get(self.stage.role) if self.stage.role else None

    def catch_up(self) -> None:
        """Rebuild the stage's in-memory state from the rows it already finished, and let a stage that
        decides from the whole set see it (`survey`)."""
        st = self.stage
        if type(st).observe is not Stage.observe and self.done:
            for row in self.run.joined(self.chain + [st.name], status="done"):
                st.observe(row)
        if st.survey_first and self.chain:
            st.survey(r for r in self.run.joined(self.chain) if st.accepts(r["_status"], r.get("reason")))

    def todo(self) -> Iterator[dict]:
        """The rows this stage still has to process, in input order."""
        if self.first:
            return (r for r in self.source() if r["id"] not in self.done)
        st = self.stage
        return (r for r in self.run.joined(self.chain)
                if st.accepts(r["_status"], r.get("reason")) and r["id"] not in self.done)

    def remaining(self) -> int | None:
        if self.first:
            return None
        st = self.stage
        return sum(1 for i, _x, s, r in self.run.stage(self.chain[-1]).keys() if st.accepts(s, r) and i not in self.done)

    @contextlib.contextmanager
    def progress(self):
        """`update(rows)` for the executor: a bar on a terminal or in a notebook, else lines to the log (`progress.py`)."""
        total = self.remaining() if self.show_progress else None
        with stage_progress(self.stage.name, total, enabled=self.show_progress, plan=self.plan) as tick:
            def update(n: int) -> None:
                tick(n)
                if self.on_chunk is not None:
                    self.on_chunk(n)

            yield update

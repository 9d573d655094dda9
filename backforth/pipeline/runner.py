"""The runner: any stages, in order, over a source of rows, into one store.

It owns fingerprints, resume and the order of stages; an executor (`executors.local`,
`executors.ray`) owns where a stage's chunks run, and the store (`store.RunStore`) how results are
kept. Stages run one after another over the whole input, so each model is loaded once and a stage's
results are complete before the next reads them. Heavy state (a dedup index, a calibration) is made
by a stage's `setup` when the stage starts.

The runner knows no run config and no registry: "the method" (`method.run_method`: the registry's
stages for a config, the input reader, export and card) is one caller; answering an eval set,
judging pairs and tagging texts are others, each with its own stages and rows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from ..config import RunnerConfig
from ..errors import UserError
from . import fingerprints
from .executors.local import LocalExecutor
from .job import Engines, StageJob
from .progress import RunProgress
from .stage import Stage
from .store import RunStore

__all__ = ["Runner", "Engines", "StageJob", "resume_line"]

log = logging.getLogger(__name__)


class Runner:
    """Runs `stages`, in order, over the rows of `source()` into the run dir `out`.

    `source` yields dict rows with a unique `id` and their `_index` (input order); `identity` is what
    the rows are, for the first stage's fingerprint. `engines` serves each stage's model `role` (the
    runner closes them when it is done). `settings` are the runner's section of a run config (chunk
    sizes, chunks in flight, progress). `until` stops after that stage; `force` redoes, in place,
    the stages whose settings changed (else such a run dir stops the run, naming what changed).
    `record` maps file names to texts written into `out` once its settings are checked (a run's
    `config.yaml`). `on_chunk` is told the rows of each finished chunk.
    """

    def __init__(self, stages: Sequence[Stage], source: Callable[[], Iterator[dict]], out: str | Path, *,
                 engines: Engines | None = None, settings: RunnerConfig | None = None, executor=None,
                 until: str | None = None, force: bool = False, identity: dict | None = None,
                 record: dict[str, str] | None = None, on_chunk: Callable[[int], None] | None = None):
        self.stages, self.source, self.out = list(stages), source, Path(out)
        names = [st.name for st in self.stages]
        if until is not None and until not in names:
            raise UserError(f"--until {until}: not a stage of this run ({', '.join(names)})")
        if len(set(names)) != len(names):
            twice = sorted({n for n in names if names.count(n) > 1})
            raise UserError(f"two stages of this run are named {', '.join(twice)}: each stage needs its own name "
                            "(its results are kept under stages/<name>/)")
        self.engines = engines if engines is not None else Engines({})
        self.settings = settings or RunnerConfig()
        self.executor, self.until, self.force = executor, until, force
        self.identity = fingerprints.NO_INPUT if identity is None else identity
        self.record, self.on_chunk = dict(record or {}), on_chunk
        self.fingerprints: dict[str, dict] = {}
        self.failed: dict[str, list[dict]] = {}  # per stage: rows left unfinished by choice, with their errors

    def run(self) -> bool:
        """Run every stage (or those up to `until`); True when every stage ran."""
        old = sorted((self.out / "stages").glob("*.jsonl")) if (self.out / "stages").is_dir() else []
        if old:
            raise UserError(f"{self.out}: made by an older backforth (stage files like {old[0].name}); this version "
                            "keeps stages as parquet shards. Use a new --out, or delete the old run dir.")
        self.out.mkdir(parents=True, exist_ok=True)
        executor = self.executor or LocalExecutor()
        stages, run = self.stages, RunStore(self.out)
        try:
            fps = fingerprints.stage_fingerprints(stages, self.engines.model, self.identity)
            stale = fingerprints.stale_stages(self.out, fps, self.force)
            if stale:
                first = min(i for i, st in enumerate(stages) if st.name in stale)
                for st in stages[first:]:
                    run.stage(st.name).remove()
            for name, text in self.record.items():
                (self.out / name).write_text(text)
            fingerprints.write(self.out, fps)
            self.fingerprints = fps
            resuming = resume_line(run, stages)
            if resuming:
                log.info(resuming)
            plan = RunProgress(run, [(st.name, st.role is not None) for st in stages])
            chain: list[str] = []
            for i, st in enumerate(stages):
                job = StageJob(st, list(chain), run, self.engines, self.settings, self.source, self.on_chunk, plan)
                job.catch_up()
                self.failed[st.name] = executor.run_stage(job) or []
                st.release()
                chain.append(st.name)
                if st.name == self.until:
                    return False
                self.engines.release_unused(_roles(stages[i + 1:]))
        finally:
            self.engines.close()
            if self.executor is None:
                executor.close()
        return True


def _roles(stages: Iterable[Stage]) -> list[str]:
    return [s.role for s in stages if s.role]


def resume_line(run: RunStore, stages: list[Stage]) -> str | None:
    """"resuming: prepare 44/44 done, backtranslate 16/35 done, 19 to go" when the run dir already
    holds results (None when it holds none). Stages run one after another, so a stage's total is
    what the complete stage before it passed on; the first stage's total is known once the second
    started (else it reads "prepare 30 done")."""
    done = {st.name: sum(1 for _ in run.stage(st.name).keys()) for st in stages}
    if not any(done.values()):
        return None
    parts = []
    for i, st in enumerate(stages):
        n = done[st.name]
        if i == 0:
            if not any(done[s.name] for s in stages[1:]):
                return f"resuming: {st.name} {n} done"
            parts.append(f"{st.name} {n}/{n} done")
            continue
        prev = run.stage(stages[i - 1].name)
        total = sum(1 for _i, _x, status, reason in prev.keys() if st.accepts(status, reason))
        parts.append(f"{st.name} {n}/{total} done")
        if n < total:
            return f"resuming: {', '.join(parts)}, {total - n} to go"
    return f"resuming: {', '.join(parts)}; every stage is done, exporting again"

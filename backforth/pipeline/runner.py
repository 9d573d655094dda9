"""The runner: builds the run's stages from the registry, checks the run dir, and runs them in order.

It owns fingerprints, resume and the order of stages; an executor (`executors.local`, `executors.ray`)
owns where a stage's chunks run, and the store (`store.RunStore`) how results are kept. Stages run
one after another over the whole corpus, so each model is loaded once and a stage's results are
complete before the next reads them. Stages are built once, cheaply, for their fingerprints; heavy
state (a dedup index, a calibration) is made by `setup` when the stage starts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import yaml

from ..config import ModelConfig, RunConfig
from ..corpus import read_documents
from ..engines import build_engine
from ..engines.tokenized import token_counter
from ..errors import UserError
from . import fingerprints, registry
from .executors import executor_for
from .export import export_run
from .job import Engines, StageJob
from .progress import RunProgress
from .stage import Stage
from .store import RunStore

__all__ = ["Runner", "Engines", "StageJob"]


class Runner:
    def __init__(self, cfg: RunConfig, out: str | Path, *, force: bool = False, engine_factory: Callable = build_engine,
                 until: str | None = None, models: dict[str, ModelConfig] | None = None, executor=None,
                 stages: list[Stage] | None = None, source: Callable[[], Iterator[dict]] | None = None,
                 log: Callable[[str], None] = print):
        """`stages` and `source` run other stages than the method's (answering an eval set, judging
        pairs, tagging texts) with the same resume, chunking, fingerprints and executors; such a run
        exports nothing: its caller reads the store."""
        self.cfg, self.out, self.force, self.until, self.log = cfg, Path(out), force, until, log
        self.given = stages
        self.classes = [type(s) for s in stages] if stages is not None else registry.enabled(cfg)
        self.source = source or (lambda: read_documents(self.cfg.input))
        names = [c.name for c in self.classes]
        if until is not None and until not in names:
            raise UserError(f"--until {until}: not a stage of this run ({', '.join(names)})")
        self.engine_factory = engine_factory
        self.engines = Engines(cfg, engine_factory, models)
        self.executor = executor
        self.failed: dict[str, list[dict]] = {}  # per stage: rows left unfinished by choice, with their errors
        self.on_chunk: Callable[[int], None] | None = None

    def build_stages(self) -> list[Stage]:
        if self.given is not None:
            return list(self.given)
        if self.engine_factory is build_engine:  # a tokenizer, no weights
            ctx = registry.BuildContext(lambda role: token_counter(self.engines.model(role)))
        else:  # a test's or a caller's own engines count for themselves
            ctx = registry.BuildContext(self.engines.get)
        return [cls.build(self.cfg, ctx) for cls in self.classes]

    def run(self) -> dict | None:
        """Run every stage (or those up to `until`) and export; returns stats.json's content."""
        old = sorted((self.out / "stages").glob("*.jsonl")) if (self.out / "stages").is_dir() else []
        if old:
            raise UserError(f"{self.out}: made by an older backforth (stage files like {old[0].name}); this version "
                            "keeps stages as parquet shards. Use a new --out, or delete the old run dir.")
        self.out.mkdir(parents=True, exist_ok=True)
        executor = self.executor or executor_for(self.cfg, self.engine_factory)
        run = RunStore(self.out)
        try:
            stages = self.build_stages()
            fps = fingerprints.stage_fingerprints(self.cfg, stages, self.engines.model)
            stale = fingerprints.stale_stages(self.out, fps, self.force)
            if stale:
                first = min(i for i, st in enumerate(stages) if st.name in stale)
                for st in stages[first:]:
                    run.stage(st.name).remove()
            (self.out / "config.yaml").write_text(yaml.safe_dump(self.cfg.model_dump(mode="json"), sort_keys=False))
            fingerprints.write(self.out, fps)
            resuming = resume_line(run, stages)
            if resuming:
                self.log(resuming)
            plan = RunProgress(run, [(st.name, st.role is not None) for st in stages])
            chain: list[str] = []
            for i, st in enumerate(stages):
                job = StageJob(st, list(chain), run, self.engines, self.cfg, self.source, self.cfg.runner.progress,
                               self.on_chunk, plan)
                job.catch_up()
                self.failed[st.name] = executor.run_stage(job) or []
                st.release()
                chain.append(st.name)
                if st.name == self.until:
                    return None
                self.engines.release_unused([s.role for s in stages[i + 1:] if s.role])
        finally:
            self.engines.close()
            if self.executor is None:
                executor.close()
        return export_run(self.cfg, self.out, stages, fps) if self.given is None else None


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

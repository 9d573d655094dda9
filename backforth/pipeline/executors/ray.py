"""`runner.executor: ray`: the model stages on a Ray cluster, through Ray Data actor pools.

The runner, the stages, fingerprints, resume and the store are the local run's; this executor
decides only where a stage's chunks run:

* Stages without a model (prepare, dedup, decontaminate, grounding without its judge, top_share) run
  on the driver with the local loop: exact and near dedup need every earlier row in input order,
  and they are fast. `prepare` needs only the backward model's tokenizer, so the driver loads no
  weights and a CPU head node can drive GPU workers.
* A model stage goes through `map_batches` onto an actor pool per model role (`runner.ray.<role>`:
  actors, CPUs and GPUs per actor, rows per batch). The driver plans the work from the plain
  columns of the previous stage's shards (`id`, `_index`, `_status`, `reason`): batches of the row
  indices the stage accepts and has not finished. Each actor (`StageWorker`) receives that one
  stage, the object the runner was given, pickled (so a user's own stage, defined outside the
  package, runs there too; heavy state belongs in its `setup`, which runs on the actor), builds the
  stage's engine once from the role's model (any engine: transformers, vllm, openai), reads its
  batch's rows from the store (`RunStore.joined_at`: the row groups that hold them; rows never travel
  through the object store), runs them through the same unit of work as the local loop (`chunks.process_chunk`), writes
  the batch's shard and returns only counts, which the driver turns into the progress bar.

Resume is the local guarantee, per shard and row; a crash or Ctrl-C loses at most the batches in
flight. A server that stops answering stops the run with the finished rows saved.

Why not `ray.data.llm` (`build_processor` + `vLLMEngineProcessorConfig`) for the stages: a processor
turns one row into one chat request and its text. Our stages need more: rows that make no request,
scoring by the logprobs of 1..5 after a forced `Score:`, a forced opening delimiter, token counts,
finish reasons and a reject reason per row, and rows left unfinished (not failed) when a server is
down. Our engines do this, and `engine: vllm` in an actor runs the same offline vLLM engine a
processor would. `ray.data.llm` fits beside us: serve a model with Ray Serve LLM and point `engine:
openai` at it, or post-process `sft.parquet`.

The run dir (`--out`) and the model folders must be visible at the same path from every node (a
shared filesystem): workers read and write shards there.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from ...config import ConfigError, RayConfig, RayPoolConfig
from ...engines import EngineError, EngineUnavailable, build_engine
from ...errors import UserError
from ..chunks import process_chunk
from ..stage import Stage
from ..store import RunStore
from .local import LocalExecutor, stopped


def import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise ConfigError("runner.executor ray needs Ray Data: pip install 'backforth[ray]' "
                          "(or set runner.executor: local)") from None
    return ray


def _result_table(results: list[dict]):
    import pyarrow as pa

    schema = pa.schema([("rows", pa.int64()), ("written", pa.int64()), ("unfinished", pa.int64()),
                        ("seconds", pa.float64()), ("kind", pa.string()), ("message", pa.string())])
    return pa.Table.from_pylist(results, schema=schema)


class StageWorker:
    """One actor of a model role's pool: gets its one stage (the driver's stage object, pickled) and
    builds the stage's engine once, then per batch reads the rows, runs the local unit of work and
    writes the batch's shard. Returns counts."""

    def __init__(self, stage: Stage, model, chain: list[str], out: str, engine_factory: Callable, num_cpus: float):
        self.run, self.chain, self.stage = RunStore(Path(out)), chain, stage
        self.error: str | None = None
        self.engine = None
        try:
            self.engine = engine_factory(model)
            self.stage.model_name = self.engine.name
            self.stage.setup(self.engine)
        except EngineError as err:  # reported with the first batch, as the local runner would raise it
            self.error = str(err)
            return
        if "torch" in sys.modules and num_cpus >= 1:  # in-process engines take every core otherwise
            sys.modules["torch"].set_num_threads(int(num_cpus))

    def __call__(self, batch):
        return _result_table([self.process(json.loads(p)) for p in batch.column("plan").to_pylist()])

    def process(self, indices: list[int]) -> dict:
        result = {"rows": len(indices), "written": 0, "unfinished": len(indices), "seconds": 0.0, "kind": None,
                  "message": None}
        if self.error is not None:
            return dict(result, kind="error", message=self.error)
        t0 = time.perf_counter()
        rows = self.run.joined_at(self.chain, indices)
        try:
            fin = process_chunk(self.stage, self.engine, rows)
        except EngineUnavailable as err:
            return dict(result, kind="unavailable", message=str(err))
        seconds = time.perf_counter() - t0
        self.run.stage(self.stage.name).write(fin.rows, fin.bases, self.stage.take_counters(), seconds)
        return dict(result, written=len(fin.rows), unfinished=fin.unfinished, seconds=seconds,
                    kind="unavailable" if fin.unfinished else None)

    def __del__(self):
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.close()


def plan_batches(job, batch_size: int) -> list[list[int]]:
    """The stage's work: batches of the `_index` of rows it accepts and has not finished, in input order."""
    st, batches, current = job.stage, [], []
    for i, index, status, reason in job.run.stage(job.chain[-1]).keys():
        if st.accepts(status, reason) and i not in job.done:
            current.append(index)
            if len(current) == batch_size:
                batches.append(sorted(current))
                current = []
    if current:
        batches.append(sorted(current))
    return batches


class RayExecutor:
    """Model stages on Ray actor pools; the rest on the driver with the local loop. `settings`: the
    cluster and a pool per model role (`runner.ray`); a role without its own pool gets the defaults."""

    def __init__(self, settings: RayConfig | None = None, engine_factory: Callable | None = None):
        self.settings = settings or RayConfig()
        self.worker_factory = engine_factory or build_engine
        self.local = LocalExecutor()
        self._ray = None
        self._started_ray = False

    def run_stage(self, job) -> list[dict]:
        if job.stage.role is None or job.first:
            return self.local.run_stage(job)
        self._on_ray(job)
        return []

    def close(self) -> None:
        if self._started_ray:
            self._ray.shutdown()
            self._started_ray = False

    def _connect(self):
        if self._ray is None:
            ray = import_ray()
            if not ray.is_initialized():
                rc = self.settings
                ray.init(address=rc.address, num_cpus=rc.num_cpus if rc.address is None else None,
                         include_dashboard=False, logging_level=logging.WARNING)
                self._started_ray = True
            ctx = ray.data.DataContext.get_current()
            ctx.enable_progress_bars = False  # ours is one bar per stage
            ctx.print_on_execution_start = False
            logging.getLogger("ray.data").setLevel(logging.WARNING)  # no per-dataset "execution finished" lines
            logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "progress bars disabled"
            warnings.filterwarnings("ignore", message="The minimum number of concurrent actors")  # a stage with few batches
            self._ray = ray
        return self._ray

    def _on_ray(self, job) -> None:
        st = job.stage
        pool = getattr(self.settings, st.role, None) or RayPoolConfig()
        plans = plan_batches(job, pool.batch_size or job.chunk_size)
        if not plans:
            return
        ray = self._connect()
        _check_picklable(ray, st)
        # One block per batch, so that every actor of the pool gets work (an actor takes a block whole).
        ds = ray.data.from_items([{"plan": json.dumps(p)} for p in plans], override_num_blocks=len(plans))
        ds = ds.map_batches(
            StageWorker, batch_size=None, batch_format="pyarrow",
            fn_constructor_kwargs={"stage": st, "model": job.engines.model(st.role), "chain": job.chain,
                                   "out": str(job.run.out), "engine_factory": self.worker_factory,
                                   "num_cpus": pool.num_cpus},
            compute=ray.data.ActorPoolStrategy(size=pool.concurrency), num_cpus=pool.num_cpus,
            num_gpus=pool.num_gpus or None)
        with job.progress() as bar:
            for res in ds.iter_rows():
                bar(res["rows"])
                if res["kind"] == "error":
                    raise EngineError(f"stage {st.name}: {res['message']}")
                if res["kind"] == "unavailable":
                    if res["message"]:
                        raise EngineUnavailable(f"stage {st.name}: {res['message']}. Check the server, then run "
                                                "the same command again to resume.")
                    raise stopped(st, res["unfinished"], res["written"])


def _check_picklable(ray, st: Stage) -> None:
    """A stage goes to its workers pickled; one that cannot be (a lock, an open file, a loaded model
    made in `__init__`) is a mistake in that stage, named here rather than deep inside Ray."""
    try:
        ray.cloudpickle.dumps(st)
    except Exception as err:  # noqa: BLE001 - whatever pickling raises, the fix is the same
        raise UserError(f"stage {st.name} ({type(st).__name__}) cannot be sent to Ray workers: it does not pickle "
                        f"({type(err).__name__}: {err}). Keep heavy or live state out of `__init__` and make it in "
                        "`setup(engine)`, which runs on each worker; or run with runner.executor: local.") from None

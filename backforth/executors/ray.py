"""`runner.executor: ray`: the same stages on a Ray cluster, through Ray Data.

The stages, their fingerprints, resume rules and exports are the local runner's (`RayRunner` is a
`Runner`); what changes is where rows are processed and how results are stored:

* Results are parquet shards, `stages/<stage>/part-*.parquet` (`pipeline.shards`), written
  atomically, so that many workers can write at once and any of them can die mid-write.
* Stages without a model role (prepare, dedup_documents, dedup_instructions, decontaminate,
  grounding without its judge) run on the driver, streaming, exactly as the local runner runs them:
  exact and MinHash dedup need every earlier row (first seen wins, in input order), and they are
  fast. They read the previous stage's shards in input order and write shards of
  `runner.ray.driver_shard_rows` rows. `prepare` needs the backward model's tokenizer and context
  length only, so the driver loads no weights (`TokenCounter`), and a CPU head node can drive GPU
  workers.
* Model stages (backtranslate, curate, rewrite, grounding with `judge: true`, distill) run through
  Ray Data. The driver plans the work from the `id` and `_status` columns of the previous stage's
  shards: batches of `batch_size` rows that the stage accepts and has not finished, each a list of
  (shard, row range) runs (`plan_batches`). A dataset of these plans, one block per batch, goes
  through `map_batches` onto an actor pool per model role (`runner.ray.<role>`: actors, CPUs and
  GPUs per actor, rows per batch). Each actor (`StageWorker`) builds the stage and its engine once
  (any engine: transformers, vllm, openai), reads its batch's rows from the row groups that hold
  them (rows never travel through the object store), runs them through
  `pipeline.runner.process_chunk` (the local runner's per-chunk logic), writes the batch's shard
  and returns only counts, which the driver turns into a progress bar and the stage's wall time.

Resume is the local runner's guarantee, per shard and row: the done ids of a stage are the ids in
its shards; rows already done are never sent again; a crash or Ctrl-C loses at most the batches in
flight (a half-written shard is a `.tmp-*` file, removed on the next run). A server that stops
answering (`EngineUnavailable`, retryable results) stops the run with the finished rows saved.

Why not `ray.data.llm` (`build_processor` + `vLLMEngineProcessorConfig`) for the stage logic: a
processor turns one row into one chat request and its generated text. Our stages need more than
that: some rows make no request (grounding's judge only sees rows that pass the checks), scoring by
logprobs asks for the probabilities of the choices 1..5 after a forced `Score:` prefix, rewrite
forces an opening delimiter, every row gets token counts, finish reasons and a reject reason, and a
server failure must leave the row unfinished instead of failing it. Our engines already do all of
this, and `engine: vllm` in an actor is vLLM's offline batch engine on the actor's GPUs, which is
what a vLLM processor runs too. `ray.data.llm` fits beside us, not inside: to serve a model with
Ray Serve LLM (`ray.serve.llm`) and point `engine: openai` at it, or to run a one-off generation
over `sft.parquet`.

Limits: `curate.iterations: 2` (Humpback's M1, trained in-process from round 1's pairs) is refused
with executor ray; run it with executor local. The run dir (`--out`) and the model folders must be
visible at the same path from every node (a shared filesystem): workers read and write shards there.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from ..config import ConfigError, ModelConfig, RunConfig
from ..engines import EngineError, EngineUnavailable, build_engine
from ..engines.tokenized import Tokenized, has_tokenizer
from ..hashset import CompactSet
from ..pipeline.base import Stage
from ..pipeline.runner import Engines, Runner, RunConflict, _PartialChunk, build_stages, process_chunk
from ..pipeline.shards import ShardStore, layout_conflict, write_shard
from ..pipeline.store import DONE


def import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise ConfigError("runner.executor ray needs Ray Data: pip install 'backforth[ray]' "
                          "(or set runner.executor: local)") from None
    return ray


class TokenCounter(Tokenized):
    """The backward model's tokenizer and context length without its weights: all that `prepare`
    needs on the driver. It mirrors the transformers and vllm engines' `count_tokens` and
    `context_length` (vLLM: `engine_kwargs.max_model_len` when set)."""

    def __init__(self, cfg: ModelConfig):
        from transformers import AutoConfig, AutoTokenizer

        from ..engines.models import resolve_model_dir

        weights, folder_adapter = resolve_model_dir(cfg.model, cfg.gguf_file)
        adapter = cfg.adapter or folder_adapter
        self.name = cfg.model
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(adapter if has_tokenizer(adapter) else weights)
            max_len = getattr(AutoConfig.from_pretrained(weights), "max_position_embeddings", None)
        except OSError as err:
            raise EngineError(f"cannot load the tokenizer of model '{cfg.model}': {err}. Give a local folder, a "
                              ".gguf file, `embedded`, or a hub name that is cached (no downloads happen offline).") from None
        if cfg.engine == "vllm":
            max_len = cfg.engine_kwargs.get("max_model_len") or max_len
            self._context = min(cfg.context_length, max_len) if cfg.context_length and max_len else (cfg.context_length or max_len)
        else:
            self._context = cfg.context_length or max_len

    def generate(self, requests):
        raise EngineError("the driver's token counter serves no requests (model stages run on Ray actors)")

    def close(self) -> None:
        pass


def driver_engine(cfg: ModelConfig):
    """What the driver builds for a model role: a token counter for in-process engines (no weights
    on the driver), the engine itself for a server (a client, cheap)."""
    if cfg.engine in ("transformers", "vllm"):
        return TokenCounter(cfg)
    return build_engine(cfg)


def _result_table(results: list[dict]):
    import pyarrow as pa

    schema = pa.schema([("rows", pa.int64()), ("written", pa.int64()), ("unfinished", pa.int64()),
                        ("seconds", pa.float64()), ("kind", pa.string()), ("message", pa.string())])
    return pa.Table.from_pylist(results, schema=schema)


class StageWorker:
    """One actor of a model role's pool: builds the stage and its engine once, then per batch runs
    the local runner's per-chunk logic and writes the batch's shard. Returns counts only."""

    def __init__(self, cfg_json: str, stage: str, folder: str, engine_factory: Callable,
                 stage_factory: Callable, num_cpus: float):
        cfg = RunConfig.model_validate_json(cfg_json)
        self.folder = Path(folder)
        self.error: str | None = None
        self.engines = Engines(cfg, engine_factory)
        try:
            light = Engines(cfg, stage_factory)
            self.stage = next(st for st in build_stages(cfg, light) if st.name == stage)
            light.close()
            self.engine = self.engines.get(self.stage.role)
            self.stage.model_name = self.engine.name
            self.stage.setup(self.engine)
        except EngineError as err:  # reported with the first batch, as the local runner would raise it
            self.error = str(err)
            return
        if "torch" in sys.modules and num_cpus >= 1:  # in-process engines take every core otherwise
            sys.modules["torch"].set_num_threads(int(num_cpus))

    def __call__(self, batch):
        """`batch`: planned batches (`plan_batches`), usually one; each is read here, where it is
        processed, and becomes one shard."""
        return _result_table([self.process(plan) for plan in batch.column("plan").to_pylist()])

    def process(self, plan: str) -> dict:
        rows = [json.loads(p) for p in read_plan(plan).column("row").to_pylist()]
        rows = [r for r in rows if self.stage.accepts(r)] if self.error is None else rows
        result = {"rows": len(rows), "written": 0, "unfinished": len(rows), "seconds": 0.0, "kind": None, "message": None}
        if self.error is not None:
            return dict(result, kind="error", message=self.error)
        t0 = time.perf_counter()
        try:
            finished, unfinished = process_chunk(self.stage, self.engine, rows), 0
        except _PartialChunk as partial:
            finished, unfinished, result["kind"] = partial.rows, partial.unfinished, "unavailable"
        except EngineUnavailable as err:
            finished, unfinished, result["kind"], result["message"] = [], len(rows), "unavailable", str(err)
        write_shard(self.folder, finished)
        return dict(result, written=len(finished), unfinished=unfinished, seconds=time.perf_counter() - t0)

    def __del__(self):
        engines = getattr(self, "engines", None)
        if engines is not None:
            engines.close()


def plan_batches(previous: ShardStore, done: CompactSet, status: str | None, batch_size: int) -> tuple[list[str], int]:
    """The stage's work as batches of `batch_size` rows (the last may be smaller): each a JSON list of
    [shard, start, end) runs of rows that the stage accepts (`status`) and has not finished. The
    driver reads only the `id` and `_status` columns for this; the actors read the rows."""
    import pyarrow.parquet as pq

    batches, current, filled, total = [], [], 0, 0

    def take(path: str, start: int, end: int) -> None:
        nonlocal current, filled
        while start < end:
            n = min(end - start, batch_size - filled)
            current.append([path, start, start + n])
            filled += n
            start += n
            if filled == batch_size:
                batches.append(json.dumps(current))
                current, filled = [], 0

    for shard in previous.shards_in_order():
        t = pq.read_table(shard, columns=["id", "_status"])
        run_start = None
        for pos, (i, s) in enumerate(zip(t.column("id").to_pylist(), t.column("_status").to_pylist())):
            todo = (status is None or s == status) and i not in done
            if todo:
                total += 1
                run_start = pos if run_start is None else run_start
            elif run_start is not None:
                take(str(shard), run_start, pos)
                run_start = None
        if run_start is not None:
            take(str(shard), run_start, t.num_rows)
    if current:
        batches.append(json.dumps(current))
    return batches, total


def read_plan(plan: str):
    """The rows of one planned batch, read from the row groups that hold them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables, files = [], {}
    for path, start, end in json.loads(plan):
        pf = files.setdefault(path, pq.ParquetFile(path))
        groups, first, offset = [], None, 0
        for g in range(pf.metadata.num_row_groups):
            n = pf.metadata.row_group(g).num_rows
            if offset < end and offset + n > start:
                groups.append(g)
                first = offset if first is None else first
            offset += n
        t = pf.read_row_groups(groups, columns=["id", "_status", "_index", "row"])
        tables.append(t.slice(start - first, end - start))
    return pa.concat_tables(tables)


class RayRunner(Runner):
    """`Runner` with the model stages on Ray actor pools and results in parquet shards."""

    def __init__(self, cfg: RunConfig, out: str | Path, *, engine_factory: Callable = build_engine,
                 stage_factory: Callable | None = None, **kwargs):
        """`engine_factory` builds the engines on the actors (it must pickle: a module-level function or
        class); `stage_factory` builds the driver's engines, which only count tokens (default: a
        tokenizer-only `driver_engine` with the default factory, else `engine_factory`)."""
        if "curate_m1" in cfg.stage_names:
            raise ConfigError("curate.iterations 2 (Humpback's M1, trained in-process on round 1's pairs) is not "
                              "available with runner.executor ray; use runner.executor local for it, or iterations 1")
        self.stage_factory = stage_factory or (driver_engine if engine_factory is build_engine else engine_factory)
        super().__init__(cfg, out, engine_factory=self.stage_factory, **kwargs)
        self.worker_factory = engine_factory
        self._ray = None
        self._started_ray = False

    def stage_file(self, name: str) -> ShardStore:
        return ShardStore(self.out / "stages" / name)

    def run(self) -> dict | None:
        problem = layout_conflict(self.out, "ray")
        if problem:
            raise RunConflict(problem)
        try:
            return super().run()
        finally:
            if self._started_ray:
                self._ray.shutdown()
                self._started_ray = False

    def _run_stage(self, st: Stage, previous: ShardStore | None) -> None:
        if st.role is None:
            self._run_on_driver(st, previous)
        else:
            self._run_on_ray(st, previous)

    def _run_on_driver(self, st: Stage, previous: ShardStore | None) -> None:
        """The local runner's loop, in chunks of `driver_shard_rows` (one shard each)."""
        cfg = self.cfg
        rows = max(cfg.runner.chunk_size, cfg.runner.ray.driver_shard_rows)
        self.cfg = cfg.model_copy(update={"runner": cfg.runner.model_copy(update={"chunk_size": rows})})
        try:
            super()._run_stage(st, previous)
        finally:
            self.cfg = cfg

    def _connect(self):
        if self._ray is None:
            ray = import_ray()
            if not ray.is_initialized():
                rc = self.cfg.runner.ray
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

    def _run_on_ray(self, st: Stage, previous: ShardStore) -> None:
        from tqdm import tqdm

        sf = self.stage_file(st.name)
        sf.repair()
        pool = getattr(self.cfg.runner.ray, st.role)
        # The default `accepts` is a status check, done on the plain column before a row is decoded.
        status = DONE if type(st).accepts is Stage.accepts else None
        plans, total = plan_batches(previous, CompactSet(sf.ids()), status, pool.batch_size or self.cfg.runner.chunk_size)
        if total == 0:
            return
        ray = self._connect()
        # One block per batch, so that every actor of the pool gets work (an actor takes a block whole).
        # The actor reads its batch's rows itself: no rows travel through the object store.
        ds = ray.data.from_items([{"plan": p} for p in plans], override_num_blocks=len(plans))
        ds = ds.map_batches(
            StageWorker, batch_size=None, batch_format="pyarrow",
            fn_constructor_kwargs={"cfg_json": self.cfg.model_dump_json(), "stage": st.name, "folder": str(sf.path),
                                   "engine_factory": self.worker_factory, "stage_factory": self.stage_factory,
                                   "num_cpus": pool.num_cpus},
            compute=ray.data.ActorPoolStrategy(size=pool.concurrency), num_cpus=pool.num_cpus,
            num_gpus=pool.num_gpus or None)
        bar = tqdm(total=total, desc=f"{st.name:<18}", unit="row", disable=not self.cfg.runner.progress,
                   dynamic_ncols=True, smoothing=0.1)
        last = time.perf_counter()
        try:
            for res in ds.iter_rows():
                now = time.perf_counter()
                sf.record_time(res["written"], now - last)  # wall time: the actors work in parallel
                last = now
                bar.update(res["rows"])
                if res["kind"] == "error":
                    raise EngineError(f"stage {st.name}: {res['message']}")
                if res["kind"] == "unavailable":
                    raise EngineUnavailable(
                        f"stage {st.name}: the model server stopped answering ({res['unfinished']} rows of a batch "
                        f"unfinished, {res['written']} saved)" + (f": {res['message']}" if res["message"] else "")
                        + ". Check the server, then run the same command again to resume.")
        finally:
            bar.close()

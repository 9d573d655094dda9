"""The runner: reads rows, sends each stage's requests to its engine in chunks, writes results.

It owns batching, resume, fingerprints, progress and timing; stages own none of it. Stages run one
after another over the whole corpus (so each model is loaded once, and a stage's file is complete
before the next reads it). Rows flow `prepare -> backtranslate -> [curate] -> [rewrite] -> [distill]`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from pathlib import Path

import yaml

from ..errors import UserError
from ..config import ModelConfig, RunConfig, digest
from ..corpus import read_documents
from ..engines import Engine, EngineUnavailable, build_engine
from ..hashset import CompactSet
from ..prompts import TRAINED_TEMPLATE_FILE, template_from_text
from .backtranslate import Backtranslate
from .base import Stage
from .curate import Curate, CurateM1
from .decontaminate import Decontaminate
from .dedup import NearDedup
from .distill import Distill
from .grounding import Grounding
from .prepare import Prepare
from .rewrite import Rewrite
from .store import DONE, REJECTED, StageFile
from .top_share import TopShare



class _PartialChunk(Exception):
    def __init__(self, rows: list[dict], unfinished: int):
        self.rows, self.unfinished = rows, unfinished


class RunConflict(UserError):
    """The run dir holds results made with different data-relevant settings."""


class Engines:
    """One engine per distinct model config, shared by the roles that use the same model."""

    def __init__(self, cfg: RunConfig, factory: Callable = build_engine):
        self.cfg, self.factory, self._live = cfg, factory, {}
        self.extra: dict[str, ModelConfig] = {}  # models made during the run (Humpback's M1)

    def model(self, role: str) -> ModelConfig:
        return self.extra[role] if role in self.extra else getattr(self.cfg.models, role)

    def key(self, role: str) -> str:
        return digest(self.model(role).model_dump())

    def get(self, role: str) -> Engine:
        k = self.key(role)
        if k not in self._live:
            self._live[k] = self.factory(self.model(role))
        return self._live[k]

    def release_unused(self, roles_still_needed: Iterable[str]) -> None:
        keep = {self.key(r) for r in roles_still_needed if r in self.extra or hasattr(self.cfg.models, r)}
        for k in [k for k in self._live if k not in keep]:
            self._live.pop(k).close()

    def close(self) -> None:
        self.release_unused([])


def _trained_template(cfg: RunConfig):
    m = cfg.models.backward
    for folder in (m.adapter, m.model):
        if folder and (Path(folder) / TRAINED_TEMPLATE_FILE).is_file():
            return template_from_text("backtranslate_trained", (Path(folder) / TRAINED_TEMPLATE_FILE).read_text())
    return None


def _max_doc_tokens(cfg: RunConfig, engine: Engine, bt: Backtranslate) -> int | None:
    """Room for a document: the backward model's context less the prompt and the instruction."""
    context = engine.context_length
    if context is None:
        return None
    empty = bt.template.render(document="")
    overhead = sum(engine.count_tokens(m["content"]) + 8 for m in empty.messages)
    return max(0, context - overhead - cfg.backtranslate.max_tokens - 16)


def build_stages(cfg: RunConfig, engines: Engines) -> list[Stage]:
    bt = Backtranslate(cfg.backtranslate, _trained_template(cfg) if cfg.backtranslate.mode == "trained" else None)
    backward = engines.get("backward")
    make = {
        "prepare": lambda: Prepare(cfg.prepare, backward.count_tokens, _max_doc_tokens(cfg, backward, bt)),
        "dedup_documents": lambda: NearDedup(cfg.dedup_documents, name="dedup_documents", field="text"),
        "backtranslate": lambda: bt,
        "dedup_instructions": lambda: NearDedup(cfg.dedup_instructions, name="dedup_instructions", field="instruction"),
        "decontaminate": lambda: Decontaminate(cfg.decontaminate),
        "curate": lambda: Curate(cfg.curate),
        "curate_m1": lambda: CurateM1(cfg.curate),
        "top_share": lambda: TopShare(cfg.curate),
        "rewrite": lambda: Rewrite(cfg.rewrite),
        "grounding": lambda: Grounding(cfg.grounding),
        "distill": lambda: Distill(cfg.distill),
    }
    return [make[name]() for name in cfg.stage_names]


def stage_fingerprints(cfg: RunConfig, stages: list[Stage]) -> dict[str, dict]:
    """Per stage: its data-relevant fields and a hash chained through the stages before it."""
    out, upstream = {}, {"input": cfg.input.model_dump(exclude={"limit"}), "version": 1}
    for st in stages:
        role = st.identity_role or st.role
        identity = getattr(cfg.models, role).identity() if role else None
        fields = st.fingerprint(identity)
        fp = digest({"upstream": upstream, "fields": fields})
        out[st.name] = {"hash": fp, "fields": fields}
        upstream = fp
    return out


def check_fingerprints(out: Path, current: dict[str, dict], force: bool) -> list[str]:
    """Stages whose stored results are stale; raise RunConflict unless `force`."""
    path = out / "fingerprints.json"
    if not path.exists():
        return []
    stored = json.loads(path.read_text())
    stale = [name for name, fp in current.items() if name in stored and stored[name]["hash"] != fp["hash"]]
    if stale and not force:
        lines = [f"{out}: this run dir holds results made with other settings:"]
        for name in stale:
            old, new = stored[name]["fields"], current[name]["fields"]
            changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k)) or ["(an earlier stage)"]
            lines.append(f"  {name}: changed {', '.join(changed)}")
        lines.append("Use a new --out to keep both, or --force to redo these stages (and those after them) here.")
        raise RunConflict("\n".join(lines))
    return stale


def _batched(it: Iterable[dict], n: int) -> Iterator[list[dict]]:
    it = iter(it)
    while chunk := list(islice(it, n)):
        yield chunk


class Runner:
    def __init__(self, cfg: RunConfig, out: str | Path, *, force: bool = False, engine_factory: Callable = build_engine,
                 until: str | None = None, log: Callable[[str], None] = print):
        self.cfg, self.out, self.force, self.until, self.log = cfg, Path(out), force, until, log
        if until is not None and until not in cfg.stage_names:
            raise ValueError(f"--until {until}: not a stage of this run ({', '.join(cfg.stage_names)})")
        self.engines = Engines(cfg, engine_factory)

    def stage_file(self, name: str) -> StageFile:
        return StageFile(self.out / "stages" / f"{name}.jsonl")

    def run(self) -> dict | None:
        """Run every stage (or those up to `until`) and export; returns stats.json's content."""
        from .export import export_run

        self.out.mkdir(parents=True, exist_ok=True)
        try:
            stages = build_stages(self.cfg, self.engines)
            fps = stage_fingerprints(self.cfg, stages)
            stale = check_fingerprints(self.out, fps, self.force)
            if stale:
                first = min(i for i, st in enumerate(stages) if st.name in stale)
                for st in stages[first:]:
                    self.stage_file(st.name).remove()
            (self.out / "config.yaml").write_text(yaml.safe_dump(self.cfg.model_dump(mode="json"), sort_keys=False))
            (self.out / "fingerprints.json").write_text(json.dumps(fps, indent=2))
            previous: StageFile | None = None
            for i, st in enumerate(stages):
                if isinstance(st, CurateM1):
                    self.engines.extra[st.role] = self._train_m1(previous)
                self._run_stage(st, previous)
                st.release()
                previous = self.stage_file(st.name)
                if st.name == self.until:
                    return None
                self.engines.release_unused([s.role for s in stages[i + 1:] if s.role])
        finally:
            self.engines.close()
        return export_run(self.cfg, self.out, [st.name for st in stages], fps)

    def _source(self, st: Stage, previous: StageFile | None) -> Iterator[dict]:
        if previous is None:
            return read_documents(self.cfg.input)
        return (r for r in previous.rows() if st.accepts(r))

    def _train_m1(self, curated: StageFile) -> ModelConfig:
        """Humpback's M1: the forward model trained on the seed pairs + the pairs round 1 kept.
        Trained once per run dir (a finished M1 is reused; an interrupted one resumes)."""
        from ..train.seed import load_seed
        from ..train.sft import load_train_config, train_sft

        out = self.out / "m1"
        if not (out / "train_stats.json").is_file():
            pairs = [{"instruction": r["instruction"], "response": r["text"]} for r in curated.rows(status=DONE)]
            if not pairs:
                raise RunConflict("curate.iterations 2: round 1 kept no pair to train M1 on; lower curate.threshold, "
                                  "or use iterations 1")
            seed = self.cfg.curate.seed or str(Path(__file__).parent.parent / "data" / "demo_seed.jsonl")
            steps = self.cfg.curate.m1_max_steps
            tcfg = load_train_config(None, [f"max_steps={steps}"] if steps else [])
            self.log(f"curate: training M1 on {len(pairs)} round-1 pairs + the seed pairs of {seed}")
            train_sft(pairs, load_seed(seed), out, tcfg, log=self.log)
        return self.cfg.models.scorer.model_copy(update={"engine": "transformers", "model": str(out), "adapter": None,
                                                        "gguf_file": None})

    def _run_stage(self, st: Stage, previous: StageFile | None) -> None:
        from tqdm import tqdm

        sf = self.stage_file(st.name)
        sf.repair()
        done = CompactSet()
        for row in sf.rows():
            done.add(row["id"])
            if row["_status"] == DONE:
                st.observe(row)
        if st.wants_survey and previous is not None:
            st.survey(r for r in previous.rows() if st.accepts(r))
        engine = self.engines.get(st.role) if st.role else None
        if engine is not None:
            st.model_name = engine.name
            st.setup(engine)
        total = None
        if previous is not None:
            total = sum(1 for r in previous.rows() if st.accepts(r) and r["id"] not in done)
        bar = tqdm(total=total, desc=f"{st.name:<18}", unit="row", disable=not self.cfg.runner.progress,
                   dynamic_ncols=True, smoothing=0.1)
        todo = (r for r in self._source(st, previous) if r["id"] not in done)
        try:
            if engine is not None and hasattr(engine, "submit"):
                self._stream_chunks(st, engine, todo, sf, bar)
            else:
                for chunk in _batched(todo, self.cfg.runner.chunk_size):
                    t0 = time.perf_counter()
                    try:
                        finished = self._process(st, engine, chunk)
                    except _PartialChunk as partial:
                        sf.append(partial.rows, seconds=time.perf_counter() - t0)
                        raise self._stopped(st, partial.unfinished, len(partial.rows)) from None
                    sf.append(finished, seconds=time.perf_counter() - t0)
                    bar.update(len(chunk))
        finally:
            bar.close()

    def _stream_chunks(self, st: Stage, engine: Engine, todo: Iterator[dict], sf: StageFile, bar) -> None:
        """For engines that take work asynchronously (`submit`, e.g. a server): keep
        `runner.chunks_in_flight` chunks at the engine, so the next chunk's requests are already
        running while the last ones of the current chunk finish, and the server never idles at a
        chunk's tail. Chunks are written in order as each completes; a crash loses at most the
        chunks in flight."""
        from collections import deque

        depth = self.cfg.runner.chunks_in_flight or chunks_to_fill(engine, self.cfg.runner.chunk_size)
        queue: deque = deque()  # (pending, future, rows in chunk)
        last = time.perf_counter()

        def drain_one() -> None:
            nonlocal last
            pending, future, n = queue.popleft()
            try:
                results = future.result()
            except EngineUnavailable:
                queue.appendleft((pending, future, n))  # not written: unfinished, like the rows after it
                raise
            try:
                finished = finish_chunk(st, pending, results)
            except _PartialChunk as partial:
                sf.append(partial.rows, seconds=time.perf_counter() - last)
                raise self._stopped(st, partial.unfinished, len(partial.rows)) from None
            now = time.perf_counter()
            sf.append(finished, seconds=now - last)  # wall time between writes: overlapping chunks
            last = now  # are not counted twice
            bar.update(n)

        try:
            for chunk in _batched(todo, self.cfg.runner.chunk_size):
                pending = build_chunk(st, chunk)
                queue.append((pending, engine.submit(pending.requests), len(chunk)))
                while len(queue) >= depth:
                    drain_one()
            while queue:
                drain_one()
        except BaseException:
            # Save what the other chunks in flight finished, then stop (Ctrl-C, a dead server).
            for pending, future, _n in queue:
                if not future.done():
                    future.cancel()
                    continue
                try:
                    sf.append(finish_chunk(st, pending, future.result()), seconds=0.0)
                except _PartialChunk as partial:
                    sf.append(partial.rows, seconds=0.0)
                except Exception:  # noqa: BLE001 - the first error is the one to report
                    pass
            raise

    @staticmethod
    def _stopped(st: Stage, unfinished: int, saved: int) -> EngineUnavailable:
        return EngineUnavailable(
            f"stage {st.name}: the model server stopped answering ({unfinished} rows of this chunk unfinished, "
            f"{saved} saved). Check the server, then run the same command again to resume.")

    def _process(self, st: Stage, engine: Engine | None, chunk: list[dict]) -> list[dict]:
        return process_chunk(st, engine, chunk)


class Pending:
    """One chunk's rows and the requests they need: `build_chunk` makes it, `finish_chunk` ends it."""

    def __init__(self, rows: list[dict], spans: list[tuple[int, int] | None], requests: list):
        self.rows, self.spans, self.requests = rows, spans, requests


def build_chunk(st: Stage, chunk: list[dict]) -> Pending:
    """Copy the rows and collect every request their stage needs, remembering whose is whose."""
    rows, spans, requests = [], [], []
    for row in chunk:
        row = dict(row)
        rows.append(row)
        if "_reject" in row:  # a bad input line: it goes straight to the rejects
            spans.append(None)
            continue
        reqs = st.requests(row)
        spans.append((len(requests), len(requests) + len(reqs)))
        requests.extend(reqs)
    return Pending(rows, spans, requests)


def finish_chunk(st: Stage, pending: Pending, results: list) -> list[dict]:
    """Apply the results to their rows: each row ends done or rejected with its reason. Rows whose
    requests failed because the server was unreachable are left out (raised as `_PartialChunk`)."""
    out, unfinished = [], 0
    for row, span in zip(pending.rows, pending.spans):
        if span is not None and any(r.retryable for r in results[span[0]:span[1]]):
            unfinished += 1  # not the row's fault: leave it for the resumed run
            continue
        if span is None:
            row.update(_status=REJECTED, stage="input", reason=row.pop("_reject"), detail=row.pop("_detail", None))
        else:
            reason = st.apply(row, results[span[0]:span[1]])
            row["_status"] = DONE if reason is None else REJECTED
            if reason is not None:
                row.update(stage=st.name, reason=reason)
        out.append(row)
    if unfinished:
        raise _PartialChunk(out, unfinished)
    return out


def chunks_to_fill(engine: Engine, chunk_size: int) -> int:
    """Chunks to keep at an async engine: enough to offer twice its in-flight window, at least 2."""
    window = getattr(engine, "max_in_flight", chunk_size)
    return max(2, -(-2 * window // chunk_size))


def process_chunk(st: Stage, engine: Engine | None, chunk: list[dict]) -> list[dict]:
    """One chunk through one stage, synchronously (the unit of work of every executor)."""
    pending = build_chunk(st, chunk)
    results = engine.generate(pending.requests) if pending.requests else []
    return finish_chunk(st, pending, results)

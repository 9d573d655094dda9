"""`runner.executor: local`: a stage's rows through its engine in this process, with the one loop.

Every engine has the same interface (`submit` returns a future of a chunk's results), so there is
one loop: chunks are submitted in order, `depth` of them at a time, and written in order as each
completes. An engine that works asynchronously (a server, `window` requests at once: the limit it found) gets
enough chunks to offer three times its window, so the next chunk's requests already run while the
current chunk's last ones finish and the server never idles at a chunk's tail; an in-process engine
gets one (its future is finished when `submit` returns). A crash loses at most the chunks in
flight; Ctrl-C saves what they finished first.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future
from itertools import islice

from ...engines import EngineUnavailable
from ..chunks import Finished, Pending, build_chunk, finish_chunk
from ..stage import Stage
from ..store import StageStore


def batched(it: Iterable[dict], n: int) -> Iterator[list[dict]]:
    it = iter(it)
    while chunk := list(islice(it, n)):
        yield chunk


def depth_for(engine, chunk_size: int, configured: int | None = None) -> int:
    """Chunks to keep at an engine: enough to offer three times an async engine's window (the requests
    it takes at once now: an adaptive limit's current value), at least 3; 1 in process. Read again
    for every chunk, so the offer grows with the limit and stays small while the limit is small."""
    window = getattr(engine, "window", None) or getattr(engine, "max_in_flight", None)
    if not window:
        return 1
    return configured or max(3, -(-3 * window // chunk_size))


def _done(results: list) -> Future:
    f: Future = Future()
    f.set_result(results)
    return f


def stopped(st: Stage, unfinished: int, saved: int) -> EngineUnavailable:
    return EngineUnavailable(
        f"stage {st.name}: the model server stopped answering ({unfinished} rows of a chunk unfinished, "
        f"{saved} saved). Check the server, then run the same command again to resume.")


def run_chunks(st: Stage, todo: Iterable[dict], store: StageStore, engine, *, chunk_size: int, depth=1,
               first: bool = False, progress=None) -> list[dict]:
    """Process `todo` through `st` chunk by chunk and write each finished chunk as a shard.
    Returns the rows the stage chose to leave unfinished (`failed_stay_unfinished`), with their errors."""
    queue: deque[tuple[Pending, Future]] = deque()
    failed: list[dict] = []
    last = time.perf_counter()

    def write(pending: Pending, results: list) -> Finished:
        nonlocal last
        fin = finish_chunk(st, pending, results)
        now = time.perf_counter()
        store.write(fin.rows, fin.bases, st.take_counters(), now - last)  # wall time between writes:
        last = now  # overlapping chunks are not counted twice
        failed.extend(fin.failed)
        if progress is not None:
            progress(len(pending.rows))
        return fin

    def drain_one() -> None:
        pending, future = queue.popleft()
        try:
            results = future.result()
        except EngineUnavailable:
            queue.appendleft((pending, future))  # not written: unfinished, like the rows after it
            raise
        fin = write(pending, results)
        if fin.unfinished:
            raise stopped(st, fin.unfinished, len(fin.rows))

    try:
        for chunk in batched(todo, chunk_size):
            pending = build_chunk(st, chunk, first)
            future = engine.submit(pending.requests) if pending.requests else _done([])
            queue.append((pending, future))
            while len(queue) >= (depth() if callable(depth) else depth):
                drain_one()
        while queue:
            drain_one()
    except BaseException:
        # Save what the other chunks in flight finished, then stop (Ctrl-C, a dead server).
        for pending, future in queue:
            if not future.done():
                future.cancel()
                continue
            try:
                write(pending, future.result())
            except Exception:  # noqa: BLE001 - the first error is the one to report
                pass
        raise
    return failed


class LocalExecutor:
    """Runs each stage in this process (the default executor)."""

    def run_stage(self, job) -> list[dict]:
        engine = job.engine()
        if engine is not None:
            job.stage.model_name = engine.name
        job.stage.setup(engine)
        depth = (lambda: depth_for(engine, job.chunk_size, job.chunks_in_flight)) if engine is not None else 1
        with job.progress() as bar:
            return run_chunks(job.stage, job.todo(), job.store, engine, chunk_size=job.chunk_size, depth=depth,
                              first=job.first, progress=bar)

    def close(self) -> None:
        pass

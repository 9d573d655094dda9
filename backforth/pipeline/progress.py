"""Progress a person and a log can both read.

Where a person watches (stderr is a terminal, or the run is called from a notebook) each stage gets
a tqdm bar (`tqdm.auto`: a widget in a notebook) whose postfix says where the run is ("run 3/5, ETA
4m"). Elsewhere (a log file, CI, `nohup`) a bar would be one endless line of carriage returns, so
instead each stage logs a plain line every few seconds (`BACKFORTH_PROGRESS_INTERVAL`, default 5 s)
to the `backforth.progress` logger, with rows done/total, rate and ETA, and one line for the run: its
stage k of n and an ETA for the whole run. Those lines show where logging is configured (the CLI
sends them to stderr); a library call in a script prints nothing.

The run's ETA is an estimate from what the run has measured so far, read from the shards' metadata
(`StageStore` keeps each chunk's prompt/completion tokens and seconds): the model's throughput in
tokens per second, each model stage's tokens per row (a stage not started yet: the mean of those
seen), and the rows each later model stage will get (the current stage's rows times the share it
keeps so far).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

INTERVAL_ENV = "BACKFORTH_PROGRESS_INTERVAL"
DEFAULT_INTERVAL_S = 5.0


def interval_s() -> float:
    try:
        return max(0.05, float(os.environ.get(INTERVAL_ENV, DEFAULT_INTERVAL_S)))
    except ValueError:
        return DEFAULT_INTERVAL_S


def duration(seconds: float | None) -> str:
    """`42s`, `3m05s`, `2h07m`; `?` when unknown."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "?"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class _ShardStats:
    """Per shard, read once: (rows, kept rows, tokens, seconds)."""

    def __init__(self) -> None:
        self._seen: dict[Path, tuple[int, int, int, float]] = {}

    def of(self, store) -> tuple[int, int, int, float]:
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        from .store import DONE, META_KEY, loads

        rows = kept = tokens = 0
        seconds = 0.0
        for p in store.shards():
            if p not in self._seen:
                try:
                    t = pq.read_table(p, columns=["_status"])
                    meta = loads((t.schema.metadata or {}).get(META_KEY, b"{}"))
                except (OSError, ValueError):  # a shard being replaced: read it next time
                    continue
                c = meta.get("counters", {})
                self._seen[p] = (t.num_rows, int(pc.sum(pc.equal(t.column("_status"), DONE)).as_py() or 0),
                                 int(c.get("prompt_tokens", 0)) + int(c.get("completion_tokens", 0)),
                                 float(meta.get("seconds", 0.0)))
            r, k, tk, s = self._seen[p]
            rows, kept, tokens, seconds = rows + r, kept + k, tokens + tk, seconds + s
        return rows, kept, tokens, seconds


class RunProgress:
    """The run's plan (its stages in order, which of them use a model) and the whole-run ETA."""

    def __init__(self, run, stages: Sequence[tuple[str, bool]]):
        self.run = run
        self.names = [n for n, _ in stages]
        self.model = {n: m for n, m in stages}
        self._stats = _ShardStats()
        self._last: tuple | None = None  # (what the estimate was made from, the estimate, when)

    def position(self, name: str) -> tuple[int, int]:
        return self.names.index(name) + 1, len(self.names)

    def eta(self, name: str, remaining: int | None) -> tuple[float | None, int, float]:
        """(seconds left for the whole run or None, tokens so far, model seconds so far)."""
        if name not in self.names:
            return None, 0, 0.0
        k = self.names.index(name)
        per_stage = {n: self._stats.of(self.run.stage(n)) for n in self.names[: k + 1] if self.model[n]}
        tokens = sum(v[2] for v in per_stage.values())
        seconds = sum(v[3] for v in per_stage.values())
        if remaining is None:
            return None, tokens, seconds
        rows_seen = sum(v[0] for v in per_stage.values())
        if tokens and seconds:
            per_row_mean = tokens / max(1, rows_seen)
            cost = {n: (v[2] / v[0] if v[0] else per_row_mean) / (tokens / seconds) for n, v in per_stage.items()}
            default_cost = per_row_mean / (tokens / seconds)
        elif rows_seen and seconds:  # engines that count no tokens: seconds per row
            default_cost = seconds / rows_seen
            cost = {n: (v[3] / v[0] if v[0] else default_cost) for n, v in per_stage.items()}
        else:
            return None, tokens, seconds
        done, kept = per_stage.get(name, (0, 0, 0, 0.0))[:2] if self.model[name] else self._stats.of(
            self.run.stage(name))[:2]
        keep = kept / done if done else 1.0
        later_rows = kept + remaining * keep  # the rows the next stages get, at the current keep rate
        left = remaining * cost.get(name, default_cost) if self.model[name] else 0.0
        left += sum(later_rows * default_cost for n in self.names[k + 1:] if self.model[n])
        return left, tokens, seconds

    def line(self, name: str, remaining: int | None) -> str:
        k, n = self.position(name)
        eta, tokens, seconds = self.eta(name, remaining)
        now = time.monotonic()
        key = (name, remaining, tokens)
        if eta is not None and self._last is not None and self._last[0] == key:
            # nothing new measured since the last line (a chunk still in flight): count the estimate down
            eta = self._last[1] - (now - self._last[2])
        else:
            self._last = (key, eta, now)
        measured = f" (from {tokens:,} tokens in {duration(seconds)} so far)" if tokens else ""
        if eta is not None and eta <= 0:  # the chunk in flight outlasts the estimate (a rewrite writes
            # more tokens per row than the stages it was estimated from): say so, not "0s" for minutes
            return f"run: stage {k} of {n} ({name}), ETA for the run ? (past the estimate){measured}"
        return f"run: stage {k} of {n} ({name}), ETA for the run {duration(eta)}{measured}"


class _Counter:
    def __init__(self, total: int | None):
        self.total, self.done, self.t0 = total, 0, time.monotonic()

    def rate(self) -> float | None:
        dt = time.monotonic() - self.t0
        return self.done / dt if dt > 0 and self.done else None

    def eta(self) -> float | None:
        r = self.rate()
        return None if self.total is None or r is None else max(0, self.total - self.done) / r

    def line(self, name: str) -> str:
        of = f"/{self.total}" if self.total is not None else ""
        pct = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        r = self.rate()
        rate = f"{r:.2f} rows/s" if r is not None else "- rows/s"
        eta = f", ETA {duration(self.eta())}" if self.total is not None else ""
        return f"{name}: {self.done}{of} rows{pct}, {rate}{eta}"


log = logging.getLogger("backforth.progress")


def _plain_out(msg: str) -> None:
    log.info(msg)


def in_notebook() -> bool:
    """Whether this process is a Jupyter kernel (where tqdm.auto draws a widget)."""
    ipython = sys.modules.get("IPython")
    try:
        shell = ipython.get_ipython() if ipython is not None else None
    except Exception:  # noqa: BLE001 - an IPython without a shell is not a notebook
        return False
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def watched() -> bool:
    """Whether a person watches the progress: stderr is a terminal, or a notebook shows it."""
    try:
        tty = sys.stderr.isatty()
    except (AttributeError, ValueError):  # a closed or replaced stderr
        tty = False
    return tty or in_notebook()


@contextlib.contextmanager
def stage_progress(name: str, total: int | None, *, enabled: bool = True, plan: RunProgress | None = None,
                   terminal: bool | None = None, out=_plain_out) -> Iterator:
    """Yields `update(rows)`, called after each finished chunk: a bar where a person watches, else plain lines."""
    terminal = watched() if terminal is None else terminal
    if not enabled:
        yield lambda n: None
        return
    if terminal:
        yield from _bar(name, total, plan)
        return
    counter = _Counter(total)
    every = interval_s()
    stop = threading.Event()
    lock = threading.Lock()

    def report() -> None:
        with lock:
            out(counter.line(name))
            if plan is not None:
                out(plan.line(name, None if total is None else max(0, total - counter.done)))

    def ticker() -> None:
        while not stop.wait(every):
            try:
                report()
            except Exception:  # noqa: BLE001 - progress never stops a run
                pass

    k_of_n = f"stage {plan.position(name)[0]} of {plan.position(name)[1]} ({name})" if plan else name
    out(f"{k_of_n}: {total} rows to do" if total is not None else f"{k_of_n}: reading the input")
    thread = threading.Thread(target=ticker, name=f"progress-{name}", daemon=True)
    thread.start()

    def update(n: int) -> None:
        with lock:
            counter.done += n

    try:
        yield update
    finally:
        stop.set()
        thread.join(timeout=1)
        out(f"{name}: {counter.done} rows in {duration(time.monotonic() - counter.t0)}")


def _bar(name: str, total: int | None, plan: RunProgress | None) -> Iterator:
    from tqdm.auto import tqdm

    where = "run {}/{}".format(*plan.position(name)) if plan is not None else None
    bar = tqdm(total=total, desc=f"{name:<18}", unit="row", dynamic_ncols=True, smoothing=0.1, postfix=where)
    every = interval_s()
    last = [0.0]

    def update(n: int) -> None:
        bar.update(n)
        now = time.monotonic()
        if plan is not None and now - last[0] >= every:
            last[0] = now
            k, of = plan.position(name)
            eta, _t, _s = plan.eta(name, None if total is None else max(0, total - bar.n))
            bar.set_postfix_str(f"run {k}/{of}, ETA {duration(eta)}", refresh=False)

    try:
        yield update
    finally:
        bar.close()

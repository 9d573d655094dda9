"""How many requests one engine keeps at the server: found by measuring, not set by hand.

A server that queues instead of refusing (vLLM, SGLang) answers more requests a second as more are
in flight, up to its knee, where its batch or its compute is full; past the knee, more requests
only wait in its queue: the latency grows and the throughput does not. `KneeLimit` climbs to the
knee as TCP Vegas and BBR climb to a link's capacity, from what it measures in rounds (at least one
latency long; each round's answers carry the number of requests in flight when they were sent, the
level they measure):

* up: from `INITIAL` (or `max_in_flight`, if lower) the limit grows by one for each answer while
  requests wait for a slot, doubling every round trip, as long as each round brings `GAIN` more
  throughput than the best before it. A round that does not (the latency rose without a gain) ends
  the climb.
* down: the lowest level that reached the best throughput is the knee's upper bound; measured there
  over two full rounds, the limit then steps down by `STEP` while the throughput stays within
  `NEAR` of that (a start above the knee, or a climb that overshot), then holds `HEADROOM` above the
  last level that kept it: a small queue, so the server's batch stays full between an answer and
  the next request.
* hold: every `PROBE_EVERY` rounds the limit tries `PROBE` times higher, and keeps it if two rounds
  there bring more throughput than the hold's own rounds differ by (twice their spread, at least
  `PROBE_GAIN`): the knee moved up (a server with more memory, another client gone), or the descent
  stopped short of it. A round whose latency passed `DRIFT` times the hold's reference (its first
  round, kept through probes that gained less than `GAIN`) without `GAIN` more throughput (the server
  got slower or busier with others' requests, or small gains added up) brings the limit down to
  throughput x the reference latency (Little's law).
* pushback: a 429, 503, 504, 408 or read timeout halves the limit, once per window of requests (the
  requests in flight when the server first complained saw the same overload), and holds.
* the server's own queue: where the server publishes it (vLLM's /metrics, see `metrics.py`),
  requests waiting there beyond `QUEUE_SHARE` of those it runs (in two reads in a row) end a climb,
  cap the limit at what it runs plus that share, and keep probes down; but not while the server also
  says its KV cache has room (under `CACHE_FULL` in use). Then the queue is its scheduler admitting
  long prompts a few a step under its token budget, and more requests in flight still pay: vLLM's CPU
  server on the backtranslation prompts (`benchmarks/server_knee.py --vllm`) ran about 6 and queued the
  rest at 16 in flight, while 32 and 128 in flight answered 8% and 17% more than 8. Capped at its
  running count plus a tenth, the limit held 7 and reached 0.79 of the best fixed limit.

`max_in_flight` is only the ceiling; `adaptive=False` keeps the limit at it. The latencies also set
each attempt's timeout (`attempt_timeout`): never below `timeout_s`, and at least `TIMEOUT_FACTOR`
times the slowest recent answer, so a request waiting in a queue that has grown is not given up on
(and sent again) while the server is still working through it.

Lives on the engine's event loop (not thread-safe by itself). The decisions take the time as an
argument (`sent`, `answered`), so a test can drive them in virtual time.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import time
from collections import deque
from dataclasses import dataclass

INITIAL = 16             # the first limit: a small server is not flooded, a big one is reached in a few doublings
MIN_ANSWERS = (8, 32)    # answers in a round, at least: while climbing (doublings differ a lot); after
GAIN = 1.15              # a doubling must bring this much more throughput for the climb to go on
STEP, NEAR = 0.8, 0.93   # going down: the factor, and the share of the best throughput that must stay
HEADROOM = 1.2           # the limit held over the lowest level that kept the throughput
PROBE, PROBE_GAIN, PROBE_EVERY = 1.25, 0.03, 6
DRIFT = 1.5
QUEUE_SHARE = 0.1        # the server's own queue, as a share of what it runs, that counts as "full" ...
CACHE_FULL = 0.9         # ... when its KV cache is at least this full (or it does not say)
TIMEOUT_FACTOR = 3.0


@dataclass
class _Round:
    start: float
    answers: int = 0
    latency_s: float = 0.0  # sum of the answers' latencies
    level: float = 0.0      # sum, over the answers, of the requests in flight when each was sent
    held_s: float = 0.0     # time with requests waiting for a slot: the limit, not the caller, set the pace


class KneeLimit:
    """The in-flight limit and what it measured; `acquire`/`release` are its async gate."""

    def __init__(self, ceiling: int, adaptive: bool = True, initial: int = INITIAL):
        self.ceiling, self.adaptive = ceiling, adaptive
        self.limit = float(min(initial, ceiling) if adaptive else ceiling)
        self.phase = "up" if adaptive else "fixed"
        self.in_flight = self.waiting = 0  # requests at the server; requests waiting for a slot
        self.peak = self.cuts = 0
        self.best = 0.0                    # the best round throughput (answers/s)
        self.server: tuple[float, float] | None = None  # (running, waiting), the server's own count
        self._queued = 0                   # the server's reads in a row that showed a queue
        self.recent: deque[float] = deque(maxlen=64)    # the last answers' latencies
        self.decisions: deque[tuple[str, int]] = deque(maxlen=64)  # (phase, limit) after each change
        self._round: _Round | None = None
        self._cap = 4.0 * self.limit       # up: the growth stops here until a round measures more
        self._climb: list[tuple[float, float]] = []  # up: (level, throughput) of each round
        self._good = 0.0                   # down: the lowest level that kept the throughput ...
        self._top: list[float] = []        # ... of the rounds at the top of the descent
        self._hold: tuple[float, float] | None = None  # hold: (throughput, latency) of its reference round
        self._seen: list[float] = []       # hold: throughputs since the last change; probe: its rounds
        self._before_probe = self._needed = 0.0  # probe: the limit before it, the throughput it must reach
        self._settle = False               # the next round still answers requests sent before a change
        self._completed, self._cut_at = 0, -(10 ** 9)
        self._cond: asyncio.Condition | None = None
        # what load() reports: time busy, integral of requests in flight, first request, last answer
        self.busy_s = self.request_s = 0.0
        self.first: float | None = None
        self.last: float | None = None
        self._changed: float | None = None

    # ---- the gate ---------------------------------------------------------------------------

    async def acquire(self) -> int:
        """Wait for a slot under the limit; returns the requests in flight with this one."""
        if self._cond is None:
            self._cond = asyncio.Condition()
        async with self._cond:
            self._advance(time.perf_counter())
            self.waiting += 1
            try:
                await self._cond.wait_for(lambda: self.in_flight < max(1, int(self.limit)))
            finally:
                self._advance(time.perf_counter())
                self.waiting -= 1
            return self.sent(time.perf_counter())

    async def release(self, ok: bool, latency: float, level: int) -> None:
        """A request is over: answered (`ok`) `latency` seconds after it was sent at `level`, or failed."""
        assert self._cond is not None
        async with self._cond:
            self.answered(time.perf_counter(), latency, ok, level)
            # wake only as many waiters as there are free slots (notify_all would wake every one
            # of thousands of queued requests on each answer, only for all but one to sleep again)
            self._cond.notify(max(1, int(self.limit) - self.in_flight))

    # ---- what the decisions hear ------------------------------------------------------------

    def sent(self, now: float) -> int:
        self._advance(now)
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        if self.first is None:
            self.first = now
        if self._round is None:
            self._round = _Round(now)
        return self.in_flight

    def answered(self, now: float, latency: float, ok: bool, level: int) -> None:
        self._advance(now)
        self.in_flight -= 1
        self._completed += 1
        self.last = now
        if not ok:
            return
        self.recent.append(latency)
        if not self.adaptive or self._round is None:
            return
        r = self._round
        if self.phase == "up" and self.waiting and self._gaining(r, now):
            self.limit = min(float(self.ceiling), self._cap, self.limit + 1)
        r.answers += 1
        r.latency_s += latency
        r.level += level
        if r.answers >= MIN_ANSWERS[self.phase != "up"] and now - r.start >= r.latency_s / r.answers:
            self._round = _Round(now)
            if r.held_s >= (now - r.start) / 2:  # else the caller, not the limit, set the pace: nothing learned
                self._decide(r.answers / (now - r.start), r.latency_s / r.answers, r.level / r.answers)

    def overload(self) -> None:
        """The server said it has too much to do: halve the limit (once per window of requests)."""
        if self.adaptive and self._completed - self._cut_at >= self.limit:
            self._hold_at(self.limit / 2)
            self._cut_at = self._completed
            self.cuts += 1

    def server_load(self, running: float, waiting: float, cache: float | None = None) -> None:
        """The server's own count of the requests it runs and of those it queues, and the share of its
        KV cache in use where it says. A burst of new requests waits a step or two for its prefill, so
        only a queue seen twice in a row counts, and only with the cache full (or unknown)."""
        queued = waiting > QUEUE_SHARE * running + 1 and (cache is None or cache >= CACHE_FULL)
        self._queued = self._queued + 1 if queued else 0
        self.server = (running, waiting)
        if self.adaptive and self._server_full() and self.limit > self._server_cap():
            self._hold_at(self._server_cap())

    def attempt_timeout(self, base: float) -> float:
        """Seconds an attempt may take: `base`, or more when the server's answers have been slow."""
        return max(base, TIMEOUT_FACTOR * max(self.recent, default=0.0))

    # ---- decisions, once a round --------------------------------------------------------------

    def _decide(self, throughput: float, latency: float, level: float) -> None:
        if self._settle:  # its answers were mostly sent before the last change
            self._settle = False
            return
        if self.phase == "up":
            self._climb.append((level, throughput))
            if throughput >= self.best * GAIN and not self._server_full():
                self.best = throughput
                self._cap = 4 * level  # what was measured lags the limit by a round trip
                return
            self.best = max(self.best, throughput)
            self._good, self._top = min(lv for lv, x in self._climb if x >= self.best * NEAR), []
            self._change("down", self._good)
        elif self.phase == "down":
            if len(self._top) < 2:  # first the top of the descent, over two full rounds: the climb's
                self._top.append(throughput)  # short rounds are noisy, their best flatters
                if len(self._top) == 2:
                    self._step_down()
            elif throughput >= statistics.fmean(self._top) * NEAR:
                self._good = self.limit
                self._step_down()
            else:
                self._hold_at(self._good * HEADROOM)
        elif self.phase == "hold":
            if self._hold is None:
                self._hold = (throughput, latency)
            elif latency > DRIFT * self._hold[1] and throughput < self._hold[0] * GAIN:
                self._hold_at(throughput * self._hold[1])  # Little's law: the level of the old latency
                return
            self._seen.append(throughput)
            if len(self._seen) >= PROBE_EVERY and not self._server_full() and self.limit < self.ceiling:
                mean = statistics.fmean(self._seen)
                # a gain counts when it is clearly more than the hold's own round-to-round noise
                self._needed = mean * (1 + max(PROBE_GAIN, 2 * statistics.pstdev(self._seen) / mean))
                self._before_probe, self._seen = self.limit, []
                self._change("probe", self.limit * PROBE)
        elif self.phase == "probe":
            self._seen.append(throughput)
            if len(self._seen) == 2:
                x = statistics.fmean(self._seen)
                if x < self._needed or self._server_full():
                    self._hold_at(self._before_probe, anew=False)
                else:  # a small gain keeps the hold's reference, so small gains cannot add up unchecked
                    self._hold_at(self.limit, anew=x >= self._hold[0] * GAIN)

    def _gaining(self, r: _Round, now: float) -> bool:
        """Climbing: is the round so far ahead of the best (or too young to tell)? A round that is
        not stops the growth at once, rather than a round later."""
        return r.answers < MIN_ANSWERS[0] or r.answers / max(now - r.start, 1e-9) >= self.best * GAIN

    def _step_down(self) -> None:
        if self._good * STEP < 1:
            self._hold_at(self._good * HEADROOM)
        else:
            self._change("down", self._good * STEP)

    def _hold_at(self, limit: float, anew: bool = True) -> None:
        """Hold `limit`; `anew`: its first round is the new reference for the drift rule."""
        self._change("hold", limit)
        self._seen = []
        if anew:
            self._hold = None

    def _change(self, phase: str, limit: float) -> None:
        self.phase, self._settle = phase, True
        self.limit = min(float(self.ceiling), max(1.0, limit))
        self.decisions.append((phase, int(self.limit)))

    def _server_full(self) -> bool:
        return self._queued >= 2

    def _server_cap(self) -> float:
        return self.server[0] * (1 + QUEUE_SHARE) + 1 if self.server else math.inf

    # ---- what load() reports ------------------------------------------------------------------

    def _advance(self, now: float) -> None:
        if self._changed is not None:
            dt = now - self._changed
            self.request_s += self.in_flight * dt
            if self.in_flight:
                self.busy_s += dt
            if self.waiting and self._round is not None:
                self._round.held_s += dt
        self._changed = now

    def mean_in_flight(self) -> float | None:
        """Requests at the server on average, from the first request to the last answer."""
        if self.first is None or self.last is None or self.last <= self.first:
            return None
        return self.request_s / (self.last - self.first)

    def utilization(self) -> float | None:
        """Share of the time from the first request to the last answer with the server busy."""
        if self.first is None or self.last is None or self.last <= self.first:
            return None
        return min(1.0, self.busy_s / (self.last - self.first))


class _Slot:
    """One request's place under the limit; given back while it waits out an overload backoff."""

    def __init__(self, limit: KneeLimit):
        self.limit, self.held = limit, False
        self._since, self._level = 0.0, 0

    async def take(self) -> None:
        self._level = await self.limit.acquire()
        self._since = time.perf_counter()
        self.held = True

    async def give(self, ok: bool) -> None:
        if self.held:
            self.held = False
            await self.limit.release(ok, time.perf_counter() - self._since, self._level)

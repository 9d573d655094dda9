"""How many requests one engine has at the server at once: an AIMD limit, as TCP's window.

At most `max_in_flight` requests are at the server. A request waiting out an overload backoff
gives its slot back; one waiting after a connection error keeps it, so a dead server sees one
window of attempts before the circuit opens. The limit adapts: a sign of overload (429, 503, 504,
408, a read timeout) halves it, at most once per window of requests; every success raises it by
1/limit, back up to `max_in_flight`. A server that queues without complaint (vLLM, SGLang) keeps
the full window, so set `max_in_flight` at least to its batch size (vLLM's `max_num_seqs`).
"""

from __future__ import annotations

import asyncio
import time


class AdaptiveLimit:
    """How many requests may be at the server at once, adapted by additive increase and
    multiplicative decrease between 1 and `ceiling`; it also measures how busy the server was kept.

    Lives on the engine's event loop (not thread-safe by itself). A cut happens at most once per
    window: the requests already in flight when the server first complained see the same overload,
    and must not halve the limit again each.
    """

    def __init__(self, ceiling: int, adaptive: bool = True):
        self.ceiling, self.adaptive = ceiling, adaptive
        self.limit = float(ceiling)
        self.in_flight = 0
        self.cuts = 0
        self.peak = 0
        self._completed = 0
        self._cut_at = -(10 ** 9)
        self._cond: asyncio.Condition | None = None
        self.busy_s = 0.0  # time with at least one request at the server
        self._busy_since: float | None = None
        self.request_s = 0.0  # integral of requests in flight over time (for the mean in flight)
        self._changed: float | None = None
        self.first: float | None = None  # first request sent, last one finished
        self.last: float | None = None

    async def acquire(self) -> None:
        if self._cond is None:
            self._cond = asyncio.Condition()
        async with self._cond:
            await self._cond.wait_for(lambda: self.in_flight < max(1, int(self.limit)))
            now = time.perf_counter()
            self._integrate(now)
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            if self.first is None:
                self.first = now
            if self._busy_since is None:
                self._busy_since = now

    async def release(self, ok: bool) -> None:
        """A request is over (after its retries); a success lets the limit grow back."""
        assert self._cond is not None
        async with self._cond:
            now = time.perf_counter()
            self._integrate(now)
            self.in_flight -= 1
            self._completed += 1
            self.last = now
            if self.in_flight == 0 and self._busy_since is not None:
                self.busy_s += now - self._busy_since
                self._busy_since = None
            if self.adaptive and ok:
                self.limit = min(float(self.ceiling), self.limit + 1.0 / self.limit)
            # wake only as many waiters as there are free slots (notify_all would wake every one
            # of thousands of queued requests on each answer, only for all but one to sleep again)
            self._cond.notify(max(1, int(self.limit) - self.in_flight))

    def overload(self) -> None:
        """The server said it has too much to do: halve the limit (once per window of requests)."""
        if self.adaptive and self._completed - self._cut_at >= self.limit:
            self.limit = max(1.0, self.limit / 2)
            self._cut_at = self._completed
            self.cuts += 1

    def _integrate(self, now: float) -> None:
        if self._changed is not None:
            self.request_s += self.in_flight * (now - self._changed)
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

    def __init__(self, limit: AdaptiveLimit):
        self.limit, self.held = limit, False

    async def take(self) -> None:
        await self.limit.acquire()
        self.held = True

    async def give(self, ok: bool) -> None:
        if self.held:
            self.held = False
            await self.limit.release(ok)

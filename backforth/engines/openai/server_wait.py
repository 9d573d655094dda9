"""Waiting out a server restart: `ServerWait`, one per engine, on the engine's loop.

A request that fails at the connection level (refused, reset, closed without an answer, a connect
timeout) asks `after_connection_error()` what to do. The first such request starts one probe of
`GET {base_url}/models`, which every other failing request awaits too:

* the server answers at once: it is up, and the failure was this request's (a dropped connection);
  `UP`: the request goes on with its own retries (`max_retries`), as before;
* it does not: the server is down (restarting, a node rebooting). The probe repeats with backoff
  (`backoff_base_s`, doubling, at most 5 s or `backoff_max_s` apart) for up to
  `wait_for_server_s`, saying so in the log (`backforth.engines.openai`, warnings) when it starts,
  every 15 s or so, and when it ends. `BACK`: the server answered again, and the waiting requests
  are sent again, without counting against their retries. `SPENT`: the time is up, and they fail as
  unreachable, which stops the run as before (exit code 3, the finished rows saved, resumable).
  Requests failing in the minute after that (other calls' requests) fail at once, without a new wait.

What is sent again: only requests whose answer never arrived. A connection refused or timed out
never reached the server. A connection closed (or reset) before any answer came means the server
dropped the request: a restarting server loses what it was computing with its process, so sending
it again is the only way to get the answer, and nothing was delivered twice. An answer that arrived
is never asked for again (the row is recorded from it). A read timeout is not a connection error:
the server may still be working on it; it stays under the usual retries (and the in-flight limit's
overload cut). The one cost: a hosted API that bills a request it computed but whose connection
broke before the answer came would bill that request again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import httpx

log = logging.getLogger(__package__)

UP, BACK, SPENT = "up", "back", "spent"
LOG_EVERY_S = 15.0  # at most one "still waiting" line this often
GAVE_UP_S = 60.0  # after a spent wait, connection errors fail at once for this long (no second wait)
PROBE_MAX_S = 5.0  # probes at most this far apart: a GET is cheap, and a restart is seen soon after it ends


def duration(seconds: float) -> str:
    s = int(round(seconds))
    return f"{round(seconds, 1):g} s" if s < 120 else f"{s // 60} min {s % 60:02d} s"


class ServerWait:
    def __init__(self, base_url: str, wait_s: float, first_s: float, max_s: float, timeout_s: float,
                 headers: Callable[[], dict[str, str]], redact: Callable[[str], str]):
        self.base_url, self.wait_s = base_url, wait_s
        self.first_s, self.max_s, self.timeout_s = max(first_s, 0.01), max(max_s, 0.01), timeout_s
        self.headers, self.redact = headers, redact
        self.outages: list[dict] = []  # {"seconds", "back"}: each wait, for stats and tests
        self._watch: asyncio.Task | None = None
        self.gave_up_at: float | None = None  # when the last wait was spent

    @property
    def enabled(self) -> bool:
        return self.wait_s > 0

    async def after_connection_error(self, error: str) -> str:
        """UP, BACK or SPENT (see the module's docstring) for a request that just failed with `error`."""
        if self.gave_up_at is not None and time.monotonic() - self.gave_up_at < GAVE_UP_S:
            return SPENT  # the time was just spent: the requests of other calls, still failing, fail too
        if self._watch is None or self._watch.done():
            self._watch = asyncio.ensure_future(self._wait(error))
        return await asyncio.shield(self._watch)

    async def _wait(self, error: str) -> str:
        start = time.monotonic()
        async with httpx.AsyncClient(timeout=min(self.timeout_s, 10.0), headers=self.headers()) as client:
            problem = await self._probe(client)
            if problem is None:
                return UP
            log.warning("model server %s is not answering (%s; GET /models: %s): waiting up to %s for it to "
                        "come back (wait_for_server_s)", self.base_url, self.redact(error), problem,
                        duration(self.wait_s))
            delay, said = self.first_s, start
            while True:
                waited = time.monotonic() - start
                if waited >= self.wait_s:
                    log.warning("model server %s: still not answering after %s (GET /models: %s); giving up",
                                self.base_url, duration(waited), problem)
                    self.outages.append({"seconds": round(waited, 3), "back": False})
                    self.gave_up_at = time.monotonic()
                    return SPENT
                await asyncio.sleep(min(delay, self.wait_s - waited))
                delay = min(delay * 2, self.max_s, PROBE_MAX_S)
                problem = await self._probe(client)
                waited = time.monotonic() - start
                if problem is None:
                    log.warning("model server %s is back after %s; sending again the requests it never answered",
                                self.base_url, duration(waited))
                    self.outages.append({"seconds": round(waited, 3), "back": True})
                    return BACK
                if time.monotonic() - said >= LOG_EVERY_S:
                    said = time.monotonic()
                    log.warning("model server %s: still not answering after %s (of up to %s)", self.base_url,
                                duration(waited), duration(self.wait_s))

    async def _probe(self, client: httpx.AsyncClient) -> str | None:
        """None when the server answers GET /models (any status below 500), else what went wrong."""
        try:
            resp = await client.get(self.base_url + "/models")
        except httpx.HTTPError as err:
            return self.redact(f"{type(err).__name__}: {err}" if str(err) else type(err).__name__)
        return None if resp.status_code < 500 else f"http {resp.status_code}"

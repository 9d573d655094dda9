"""Engine for any OpenAI-compatible HTTP server: vLLM serve, llama-server, SGLang, hosted APIs.

`generate()` is synchronous for the runner but async inside: every request of one call goes out
concurrently, bounded by `max_in_flight`, and results come back in request order. Transient trouble
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
import logging
import os
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx

from .base import EngineError, EngineUnavailable, Request, Result

log = logging.getLogger(__name__)

TOP_LOGPROBS = 20  # the most vLLM (default max_logprobs) and hosted chat APIs return
_ERROR_SNIPPET = 200  # characters of a server's error message kept in Result.error


class _Retryable(Exception):
    """A transient failure of one attempt; `connection` marks "no server answered at all"."""

    def __init__(self, message: str, retry_after: float | None = None, connection: bool = False):
        super().__init__(message)
        self.retry_after = retry_after
        self.connection = connection


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
                 context_length: int | None = None):
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
        self._stats_lock = threading.Lock()  # generate() may run from several threads at once
        self.stats: dict[str, Any] = {"requests": 0, "attempts": 0, "retries": 0, "errors": 0, "by_status": {}}

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
        """Nothing persistent to close: each `generate()` call owns (and closes) its own HTTP client."""

    # ---- generation -------------------------------------------------------------------------

    def generate(self, requests: list[Request]) -> list[Result]:
        if not requests:
            return []
        outcomes = _run_sync(lambda: self._generate_all(requests))
        if all(o.unreachable for o in outcomes):
            last = next((o.result.error for o in reversed(outcomes) if o.result.error), "")
            raise EngineUnavailable(self._redact(
                f"cannot reach the model server at {self.base_url} ({last}). Start the server (e.g. "
                f"`vllm serve {self.name}`) or fix `base_url` in the config, then resume by re-running "
                "the same command."))
        return [o.result for o in outcomes]

    async def _generate_all(self, requests: list[Request]) -> list[_Outcome]:
        limits = httpx.Limits(max_connections=self.max_in_flight, max_keepalive_connections=self.max_in_flight)
        gate = asyncio.Semaphore(self.max_in_flight)
        state = _CallState()
        async with httpx.AsyncClient(timeout=self.timeout_s, limits=limits, headers=self._headers()) as client:
            return list(await asyncio.gather(*(self._one(client, gate, state, r) for r in requests)))

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._key}"} if self._key else {}

    async def _one(self, client: httpx.AsyncClient, gate: asyncio.Semaphore, state: _CallState,
                   req: Request) -> _Outcome:
        async with gate:
            self._bump("requests")
            if state.dead:
                return self._failed(req, "connection error: server unreachable (gave up earlier in this call)",
                                    unreachable=True)
            path, body = self._payload(req)
            return await self._with_retries(client, state, req, path, body)

    async def _with_retries(self, client: httpx.AsyncClient, state: _CallState, req: Request, path: str,
                            body: dict) -> _Outcome:
        successes_at_start = state.successes
        for attempt in range(self.max_retries + 1):
            try:
                result = await self._attempt(client, req, path, body)
            except _Retryable as err:
                if attempt == self.max_retries or (state.dead and err.connection):
                    if err.connection and state.successes == successes_at_start:
                        state.dead = True
                    tries = attempt + 1
                    return self._failed(req, f"{err} (after {tries} attempt{'s' * (tries > 1)})", err.connection)
                delay = self._delay(attempt, err.retry_after)
                log.debug("retrying %s after %.2fs: %s", req.key or path, delay, self._redact(str(err)))
                self._bump("retries")
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
            raise _Retryable(f"timeout ({type(err).__name__})", connection=connect) from None
        except httpx.TransportError as err:  # refused, reset, dropped mid-response, ...
            self._bump_status("connect")
            raise _Retryable(f"connection error ({type(err).__name__}: {err})", connection=True) from None
        self._bump_status(str(resp.status_code))
        if resp.status_code == 429 or resp.status_code == 408 or resp.status_code >= 500:
            raise _Retryable(f"http {resp.status_code}: {_server_message(resp)}", retry_after=_retry_after(resp))
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


def _run_sync(make_coro):
    """Run a coroutine to completion from sync code, even where an event loop is already running."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make_coro())
    # asyncio.run refuses to nest; a private thread gets a fresh loop (e.g. called from a notebook).
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(make_coro())).result()


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

"""A stub OpenAI-compatible HTTP server for tests: deterministic replies plus fault injection.

Standard library only, so engine and pipeline tests can exercise real HTTP (retries, timeouts,
dropped connections) without a model server. Usage:

    with StubOpenAIServer(faults={"429": 0.1}, seed=0) as stub:
        engine = OpenAIEngine("stub-model", base_url=stub.base_url)
        ...
        assert stub.count["/v1/chat/completions"] == 3

`go_away()` and `come_back()` are a server process that dies and is restarted: in between its port
refuses connections (and `GET /models` with them), and the requests it was serving are dropped
unanswered. A recorded request says whether it was `answered` (its full answer written).

Faults ("429", "500", "400", "timeout", "drop", "bad_json", "empty_choices") come from, in order:
`down()` (every request drops), `capacity` (a 429 for a request arriving while `capacity` others
are being served: an overloaded server), `fault_for(body)` (targeted, per request), `fail_first`
(the first N requests, deterministic) and `faults` (random rates from a seeded RNG).

`delay_s` (seconds, or a function of the body) makes each answer take that long, like a model
would; `metrics` (a function returning a Prometheus text page) serves GET /metrics, which is
counted in `count` but not recorded in `requests` (the engine reads it on its own); every recorded request carries its arrival and answer times (`t_in`, `t_out`,
`time.perf_counter()`), and `peak_active` is the most requests served at once.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

FAULTS = ("429", "500", "400", "timeout", "drop", "bad_json", "empty_choices")
DEFAULT_LOGPROBS = {"5": -0.1, "4": -2.5, " 3": -4.0}

Responder = Callable[[dict], "str | tuple[str, str]"]


def default_logprobs(body: dict) -> dict[str, float]:
    """Score 5 for a curation request; for stage page_kind's, an explanation (letter A)."""
    if "You classify web pages" in json.dumps(body.get("messages") or body.get("prompt")):
        return {"A": -0.05, "B": -3.0}
    return dict(DEFAULT_LOGPROBS)


def default_responder(body: dict) -> str:
    """'stub:' + the first 40 characters of the last user message (or of the prompt)."""
    if "messages" in body:
        users = [m for m in body["messages"] if m.get("role") == "user"]
        text = str(users[-1].get("content", "")) if users else ""
    else:
        text = str(body.get("prompt", ""))
    return "stub:" + text[:40]


class StubOpenAIServer:
    def __init__(self, responder: Responder | None = None,
                 logprobs_for: Callable[[dict], dict[str, float]] | None = None,
                 faults: dict[str, float] | None = None, seed: int = 0, fail_first: dict[str, int] | None = None,
                 fault_for: Callable[[dict], str | None] | None = None, retry_after: str | None = "0",
                 timeout_sleep_s: float = 2.0, model: str = "stub-model", echo_auth_in_errors: bool = False,
                 delay_s: float | Callable[[dict], float] = 0.0, capacity: int | None = None,
                 metrics: Callable[[], str | None] | None = None):
        for name in list(faults or {}) + list(fail_first or {}):
            if name not in FAULTS:
                raise ValueError(f"unknown fault '{name}' (known: {', '.join(FAULTS)})")
        self.responder = responder or default_responder
        self.logprobs_for = logprobs_for or default_logprobs
        self.faults = dict(faults or {})
        self.fault_for = fault_for
        self.retry_after = retry_after
        self.timeout_sleep_s = timeout_sleep_s
        self.model = model
        # Servers that echo the bad key back in errors exist; this lets tests prove redaction works.
        self.echo_auth_in_errors = echo_auth_in_errors
        self.delay_s = delay_s
        self.capacity = capacity
        self.metrics = metrics  # GET /metrics: a Prometheus page (None: 404, like a server without them)
        self.active = 0
        self.peak_active = 0
        self._rng = random.Random(seed)
        self._first = [name for name, n in (fail_first or {}).items() for _ in range(n)]
        self._lock = threading.Lock()
        self._requests: list[dict] = []
        self._count: Counter[str] = Counter()
        self._served = 0
        self._down = False
        self._stop = threading.Event()
        self._gone = threading.Event()  # set by stop() and go_away(): wakes handlers waiting out a delay
        self._port = 0
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle ----------------------------------------------------------------------------

    def start(self) -> StubOpenAIServer:
        self._httpd = _Server(("127.0.0.1", self._port), _make_handler(self))
        self._port = self._httpd.server_address[1]
        # A short poll keeps stop() (hence every test's teardown) fast.
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()  # wakes handlers sleeping in a "timeout" fault
        self._gone.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> StubOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        assert self._port, "server not started"
        return f"http://127.0.0.1:{self._port}/v1"

    def down(self) -> None:
        """Simulate a dead server: every request from now on has its connection dropped."""
        self._down = True

    def up(self) -> None:
        self._down = False

    def go_away(self) -> None:
        """The server process dies: the port refuses connections, requests being served are dropped."""
        self._gone.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def come_back(self) -> None:
        """The restarted server listens again, on the same port."""
        self._gone.clear()
        self.start()

    @property
    def away(self) -> bool:
        return self._gone.is_set()

    # ---- observations -------------------------------------------------------------------------

    @property
    def requests(self) -> list[dict]:
        """Every request received so far: {"path", "body", "headers"} (a copy)."""
        with self._lock:
            return list(self._requests)

    def settle(self, quiet_s: float = 0.2, timeout_s: float = 10.0) -> None:
        """Wait until nothing has arrived for `quiet_s` and nothing is being served: requests a
        client cancelled may still be on the wire when it gives up, and land a moment later."""
        deadline = time.perf_counter() + timeout_s
        seen = -1
        while time.perf_counter() < deadline:
            with self._lock:
                n, active = len(self._requests), self.active
            if n == seen and active == 0:
                return
            seen = n
            time.sleep(quiet_s)

    @property
    def count(self) -> Counter[str]:
        """Requests received per path (e.g. count["/v1/chat/completions"]); missing paths read 0."""
        with self._lock:
            return Counter(self._count)

    # ---- decisions (called from handler threads) ----------------------------------------------

    def _record(self, path: str, body: Any, headers: dict[str, str]) -> dict:
        entry = {"path": path, "body": body, "headers": headers, "t_in": time.perf_counter(), "t_out": None,
                 "answered": False}
        with self._lock:
            self._requests.append(entry)
            self._count[path] += 1
        return entry

    def _enter(self) -> bool:
        """Count a request in; False when the server is over capacity (it answers 429)."""
        with self._lock:
            self.active += 1
            self.peak_active = max(self.peak_active, self.active)
            return self.capacity is None or self.active <= self.capacity

    def _leave(self, entry: dict) -> None:
        with self._lock:
            self.active -= 1
            if entry["t_out"] is None:
                entry["t_out"] = time.perf_counter()

    def _pick_fault(self, body: Any) -> str | None:
        if self._down:
            return "drop"
        if self.fault_for is not None and isinstance(body, dict):
            targeted = self.fault_for(body)
            if targeted:
                return targeted
        with self._lock:
            index = self._served
            self._served += 1
            if index < len(self._first):
                return self._first[index]
            roll, edge = self._rng.random(), 0.0
            for name, rate in self.faults.items():
                edge += rate
                if roll < edge:
                    return name
        return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # The default listen backlog (5) refuses bursts of concurrent clients, which would look like
    # "drop" faults nobody injected.
    request_queue_size = 256


def _make_handler(stub: StubOpenAIServer) -> type[BaseHTTPRequestHandler]:
    class Handler(_StubHandler):
        server_stub = stub

    return Handler


class _StubHandler(BaseHTTPRequestHandler):
    server_stub: StubOpenAIServer
    protocol_version = "HTTP/1.0"  # one request per connection: a dropped connection never poisons a pool

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence per-request stderr lines
        pass

    def do_GET(self) -> None:
        stub = self.server_stub
        if self.path == "/metrics":  # the engine's queue probe: counted, not a model request
            with stub._lock:
                stub._count[self.path] += 1
            page = stub.metrics() if stub.metrics else None
            if page is None:
                self._json(404, {"error": {"message": "no metrics"}})
            else:
                self._send(200, page.encode(), "text/plain; version=0.0.4")
            return
        stub._record(self.path, None, dict(self.headers))
        if self.path.rstrip("/") == "/v1/models":
            self._json(200, {"object": "list", "data": [{"id": stub.model, "object": "model", "owned_by": "stub"}]})
        else:
            self._json(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self) -> None:
        stub = self.server_stub
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw)
        except ValueError:
            body = raw.decode("utf-8", "replace")
        entry = stub._record(self.path, body, dict(self.headers))
        if self.path not in ("/v1/chat/completions", "/v1/completions"):
            self._json(404, {"error": {"message": f"no route {self.path}"}})
            return
        if not isinstance(body, dict):
            self._json(400, {"error": {"message": "body is not JSON"}})
            return
        admitted = stub._enter()
        try:
            fault = "429" if not admitted and not stub._down else stub._pick_fault(body)
            if fault is not None:
                self._fault(fault)
                return
            delay = stub.delay_s(body) if callable(stub.delay_s) else stub.delay_s
            if delay:
                stub._gone.wait(delay)
            if stub.away:  # the process died with the request: no answer, the connection just closes
                self.close_connection = True
                return
            # the answer's time and mark, set before it is written: the client may read the stub's
            # records as soon as it has the answer, before this thread gets to `finally`
            entry["t_out"], entry["answered"] = time.perf_counter(), True
            try:
                self._json(200, _completion(stub, self.path, body))
            except OSError:  # the client was gone: not answered after all
                entry["answered"] = False
                raise
        finally:
            stub._leave(entry)

    def _fault(self, fault: str) -> None:
        stub = self.server_stub
        note = f" (auth: {self.headers.get('Authorization')})" if stub.echo_auth_in_errors else ""
        if fault == "drop":
            self.close_connection = True  # return without a byte: the client sees a dropped connection
        elif fault == "timeout":
            stub._stop.wait(stub.timeout_sleep_s)
            self._json(200, {"choices": []}, quiet=True)
        elif fault == "429":
            headers = {"Retry-After": stub.retry_after} if stub.retry_after is not None else {}
            self._json(429, {"error": {"message": "rate limited" + note}}, headers)
        elif fault == "500":
            self._json(500, {"error": {"message": "internal error" + note}})
        elif fault == "400":
            self._json(400, {"error": {"message": "prompt is too long: 9999 tokens > 4096" + note}})
        elif fault == "bad_json":
            self._send(200, ("<html>not json" + note).encode(), "text/html")
        elif fault == "empty_choices":
            self._json(200, {"id": "x", "object": "chat.completion", "choices": []})

    def _json(self, status: int, payload: dict, headers: dict[str, str] | None = None, quiet: bool = False) -> None:
        try:
            self._send(status, json.dumps(payload).encode(), "application/json", headers)
        except OSError:
            if not quiet:  # after a "timeout" the client is usually gone; anywhere else it is news
                raise

    def _send(self, status: int, data: bytes, ctype: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


def _completion(stub: StubOpenAIServer, path: str, body: dict) -> dict:
    chat = path.endswith("/chat/completions")
    wants_logprobs = bool(body.get("logprobs")) if chat else body.get("logprobs") is not None
    if wants_logprobs:
        n = int(body.get("top_logprobs") or 0) if chat else int(body["logprobs"])
        table = sorted(stub.logprobs_for(body).items(), key=lambda kv: -kv[1])
        text, finish = (table[0][0] if table else ""), "length"
        logprobs = _chat_logprobs(table, n) if chat else _completion_logprobs(table, n)
    else:
        reply = stub.responder(body)
        text, finish = reply if isinstance(reply, tuple) else (reply, "stop")
        logprobs = None
    prompt = json.dumps(body.get("messages")) if chat else str(body.get("prompt", ""))
    choice: dict[str, Any] = {"index": 0, "finish_reason": finish, "logprobs": logprobs}
    if chat:
        choice["message"] = {"role": "assistant", "content": text}
    else:
        choice["text"] = text
    usage = {"prompt_tokens": max(1, len(prompt) // 4), "completion_tokens": 1 if wants_logprobs else max(1, len(text) // 4)}
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    return {"id": "stub-1", "object": "chat.completion" if chat else "text_completion", "model": stub.model,
            "choices": [choice], "usage": usage}


def _chat_logprobs(table: list[tuple[str, float]], n: int) -> dict:
    tops = [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in table[:n]]
    first = table[0] if table else ("", 0.0)
    return {"content": [{"token": first[0], "logprob": first[1], "bytes": list(first[0].encode()), "top_logprobs": tops}]}


def _completion_logprobs(table: list[tuple[str, float]], n: int) -> dict:
    first = table[0] if table else ("", 0.0)
    return {"tokens": [first[0]], "token_logprobs": [first[1]], "top_logprobs": [dict(table[:n])], "text_offset": [0]}

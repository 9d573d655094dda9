"""An engine wrapper that answers a request it has seen before from a cache file, at no cost.

Judging the same pair again (another run, an edited table, a resumed experiment) costs nothing: each
request's key is a hash of the model's identity and everything the model reads and how it samples
(messages or prompt, forced prefix, choices, max_tokens, temperature, top_p, stop). The cache keeps
the raw reply, not what a stage parsed from it, so a better parser later re-reads old replies for
free. The wrapped engine is built only when a request misses the cache: a fully cached run loads no
model. Entries are appended to a jsonl file and flushed per call; a partial last line (a crash
mid-write) is ignored. Only replies that succeeded are cached.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path

from .base import Engine, Request, Result


def request_key(identity: dict, req: Request) -> str:
    fields = {"model": identity, "messages": req.messages, "prompt": req.prompt,
              "prefix": req.assistant_prefix, "choices": req.choices, "max_tokens": req.max_tokens,
              "temperature": req.temperature, "top_p": req.top_p, "stop": list(req.stop)}
    if req.draw:  # a second draw of the same request is another sample, not the first one again
        fields["draw"] = req.draw
    blob = json.dumps(fields, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


class ResultCache:
    """Replies by request key, in memory and (with a path) in an append-only jsonl file."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path).expanduser() if path else None
        self._entries: dict[str, dict] = {}
        self._lock = threading.Lock()
        if self.path is not None and self.path.is_file():
            from ..io import iter_records

            for _where, rec, _problem in iter_records(self.path, json_array=False, drop_partial_last_line=True):
                if rec is not None and "key" in rec:
                    self._entries[rec["key"]] = rec

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> Result | None:
        e = self._entries.get(key)
        if e is None:
            return None
        return Result(text=e.get("text") or "", finish_reason=e.get("finish_reason"), prompt_tokens=e.get("prompt_tokens") or 0,
                      completion_tokens=e.get("completion_tokens") or 0, choice_logprobs=e.get("choice_logprobs"),
                      cached=True)

    def add(self, items: list[tuple[str, Result]]) -> None:
        entries = [{"key": k, "text": r.text, "finish_reason": r.finish_reason, "prompt_tokens": r.prompt_tokens,
                    "completion_tokens": r.completion_tokens, "choice_logprobs": _finite(r.choice_logprobs)}
                   for k, r in items if r.ok]
        with self._lock:
            for e in entries:
                self._entries[e["key"]] = e
            if self.path is not None and entries:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.path, "a", encoding="utf-8") as fh:
                    fh.write("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries))
                    fh.flush()
                    os.fsync(fh.fileno())


class CachedEngine:
    """`Engine` in front of another: cached replies come back at once, the rest go to the engine."""

    def __init__(self, identity: dict, cache: ResultCache, make_engine: Callable[[], Engine], name: str = ""):
        self.identity, self.cache, self._make, self._engine = identity, cache, make_engine, None
        self.name = name
        self.sent = 0  # requests that reached the engine
        self.hits = 0  # requests answered from the cache

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = self._make()
            self.name = self.name or self._engine.name
        return self._engine

    @property
    def max_in_flight(self):
        return getattr(self._engine, "max_in_flight", None) if self._engine is not None else None

    @property
    def window(self):
        return getattr(self._engine, "window", None) if self._engine is not None else None

    @property
    def context_length(self):
        return self.engine.context_length

    def count_tokens(self, text: str) -> int:
        return self.engine.count_tokens(text)

    def submit(self, requests: list[Request]) -> Future:
        keys = [request_key(self.identity, r) for r in requests]
        results: list[Result | None] = [self.cache.get(k) for k in keys]
        todo = [i for i, r in enumerate(results) if r is None]
        self.hits += len(requests) - len(todo)
        out: Future = Future()
        if not todo:
            out.set_result(_keyed(results, requests))
            return out
        self.sent += len(todo)
        inner = self.engine.submit([requests[i] for i in todo])

        def done(f: Future) -> None:
            try:
                fresh = f.result()
            except BaseException as err:  # noqa: BLE001 - handed to the caller
                out.set_exception(err)
                return
            self.cache.add([(keys[i], r) for i, r in zip(todo, fresh)])
            for i, r in zip(todo, fresh):
                results[i] = r
            out.set_result(_keyed(results, requests))

        inner.add_done_callback(done)
        return out

    def generate(self, requests: list[Request]) -> list[Result]:
        return self.submit(requests).result()

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()


def _finite(table: dict | None) -> dict | None:
    """-inf and nan as null: JSON has no such numbers (a reader sees a choice the engine did not give)."""
    if table is None:
        return None
    return {k: (v if isinstance(v, (int, float)) and math.isfinite(v) else None) for k, v in table.items()}


def _keyed(results: list, requests: list[Request]) -> list[Result]:
    for r, q in zip(results, requests):
        r.key = q.key
    return results

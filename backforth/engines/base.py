"""The one interface every way of running a model implements.

An engine turns a list of `Request`s into a list of `Result`s, in the same order. It knows nothing
about stages or prompts: a request is either chat `messages` (the engine applies the model's chat
template) or a raw `prompt` string, plus sampling settings. Two kinds of request exist:

* generation: sample up to `max_tokens` new tokens;
* choice scoring (`choices` set): one forward pass over the prompt, return the log-probability of
  each candidate continuation's first token (used to score 1..5 by logprobs).

`assistant_prefix` forces the start of the assistant turn (e.g. "Score:") after the chat template.

An engine never raises for one bad request: it returns a `Result` with `error` set, so one bad row
never kills a run. It raises `EngineUnavailable` when it cannot serve anything at all (a server that
is down for good), so the runner can stop cleanly and the run can be resumed later.
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Protocol

from ..errors import UserError


class EngineError(UserError):
    """A user-facing engine problem (bad model path, missing extra, ...)."""


class EngineUnavailable(EngineError):
    """The engine cannot serve requests at all (server down after all retries)."""

    exit_code = 3


@dataclass
class Request:
    messages: list[dict] | None = None
    prompt: str | None = None
    assistant_prefix: str | None = None
    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 0.9
    stop: list[str] = field(default_factory=list)
    choices: list[str] | None = None  # score these continuations instead of generating
    key: str = ""  # caller's tag (row id / stage); engines echo it back untouched
    draw: int = 0  # which draw of the same request this is (a redraw: 1): a cache answers each draw apart

    def __post_init__(self) -> None:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("a Request needs exactly one of `messages` or `prompt`")


@dataclass
class Result:
    text: str = ""
    finish_reason: str | None = None  # "stop" | "length" | "error"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    choice_logprobs: dict[str, float] | None = None  # for choice-scoring requests
    error: str | None = None
    key: str = ""
    # The failure was the server's, not the request's (unreachable): the runner leaves the row
    # unfinished, so that resuming later sends it again, instead of rejecting it.
    retryable: bool = False
    cached: bool = False  # answered from a cache (`engines.cache`), not by the model now

    @property
    def ok(self) -> bool:
        return self.error is None


class Engine(Protocol):
    """What every engine provides. `name` is what goes into rows' `<stage>_model` column.

    `submit` hands requests over and returns a future of their results (in request order); the runner
    keeps several chunks at an engine that works asynchronously (a server: `max_in_flight` says how
    many requests it takes at once) and one at an in-process engine, whose future is finished when
    `submit` returns. `generate` is `submit(...).result()`.
    """

    name: str

    def submit(self, requests: list[Request]) -> Future: ...

    def generate(self, requests: list[Request]) -> list[Result]: ...

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` under this model's tokenizer (an estimate when it has none)."""
        ...

    @property
    def context_length(self) -> int | None: ...

    def close(self) -> None: ...


class InProcessEngine:
    """For engines that run in this process: `submit` runs the requests now and returns a finished
    future, so the runner drives every engine through the same submit/collect loop."""

    max_in_flight: int | None = None  # not a server: one chunk at a time

    def generate(self, requests: list[Request]) -> list[Result]:
        raise NotImplementedError

    def submit(self, requests: list[Request]) -> Future:
        future: Future = Future()
        try:
            future.set_result(self.generate(requests))
        except Exception as err:  # noqa: BLE001 - handed to the caller, raised by .result()
            future.set_exception(err)
        return future


class Borrowed:
    """An engine lent to a run that must not close it (its owner does): every call but `close` passes through."""

    def __init__(self, engine) -> None:
        self._engine = engine

    def __getattr__(self, name: str):
        return getattr(self._engine, name)

    def close(self) -> None:
        pass

"""A deterministic in-process engine for tests: answers come from a `responder(request)` function.

It implements the `backforth.engines.base.Engine` protocol without any model, counts every request
it receives (per key and per (stage, key), the stage read from the prompt text), and can be told to
raise after N requests to simulate an interruption (Ctrl-C, a server that went away).

    fake = FakeEngine(lambda req: "How do I boil an egg?")
    run_method(cfg, out, engine_factory=lambda model_cfg: fake)
    assert max(fake.by_stage_key.values()) == 1
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from backforth.engines.base import EngineUnavailable, InProcessEngine, Request, Result

Responder = Callable[[Request], "Result | str"]
PAGE_KIND_MARKER = "You classify web pages"  # the page_kind prompt's first line


def explanation_page(req: Request) -> Result:
    """Stage page_kind's answer for every page unless a test says otherwise: an explanation (letter A)."""
    return Result(text="A", finish_reason="length", choice_logprobs={"A": 0.0, "B": -6.0, "F": -6.0})


def prompt_text(req: Request) -> str:
    """Everything the model would read: every message, the raw prompt and the forced prefix."""
    parts = [m["content"] for m in req.messages] if req.messages is not None else [req.prompt or ""]
    return "\n".join(parts + [req.assistant_prefix or ""])


def stage_of(req: Request) -> str:
    """Which pipeline stage wrote `req`, read from the prompt templates' fixed text."""
    text = prompt_text(req)
    if PAGE_KIND_MARKER in text:
        return "page_kind"
    if req.choices is not None or "You judge training data" in text:
        return "curate"
    if "You find the question behind a text" in text or "write the user's instruction" in text:
        return "backtranslate"
    if "Rewrite the draft" in text:
        return "rewrite"
    return "distill"


def counted_stage(req: Request) -> str:
    """`stage_of`, with a rewrite's second draw (`rewrite_redraw`, same prompt) counted as its own stage's."""
    stage = stage_of(req)
    return "rewrite_redraw" if stage == "rewrite" and req.draw else stage


def last_user(req: Request) -> str:
    if req.messages is None:
        return req.prompt or ""
    users = [m["content"] for m in req.messages if m["role"] == "user"]
    return users[-1] if users else ""


def section(text: str, start: str, end: str) -> str:
    """The text between the last `start` marker and the next `end` marker (a prompt's section)."""
    i = text.rindex(start) + len(start)
    return text[i:text.index(end, i)].strip()


class FakeEngine(InProcessEngine):
    """Engine protocol: `name`, `generate`, `count_tokens` (whitespace words), `context_length`, `close`."""

    def __init__(self, responder: Responder, *, name: str = "fake-model", context_length: int | None = None,
                 fail_after: int | None = None, fail_with: type[BaseException] = KeyboardInterrupt,
                 fail_stage: str | None = None, page_kind: Responder = explanation_page):
        self.responder = responder
        # Stage page_kind's requests are answered by `page_kind` (every page an explanation by default) and
        # counted apart (`page_kind_served`), so that tests written for the other stages count what they did.
        self.page_kind = page_kind
        self.page_kind_served = 0
        self.name = name
        self._context = context_length
        # Raise `fail_with` instead of serving a request once `fail_after` requests (of `fail_stage`,
        # or of any stage when None) have been served.
        self.fail_after = fail_after
        self.fail_with = fail_with
        self.fail_stage = fail_stage
        self.received: list[Request] = []
        self.by_key: Counter[str] = Counter()
        self.by_stage_key: Counter[tuple[str, str]] = Counter()
        self.served: Counter[str] = Counter()  # per stage
        self.generate_calls = 0
        self.closed = 0

    # ---- Engine protocol ----------------------------------------------------------------------

    @property
    def context_length(self) -> int | None:
        return self._context

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def close(self) -> None:
        self.closed += 1

    def generate(self, requests: list[Request]) -> list[Result]:
        self.generate_calls += 1
        results = []
        for req in requests:
            stage = stage_of(req)
            if stage == "page_kind":
                out = self.page_kind(req)
                res = Result(text=out, finish_reason="stop") if isinstance(out, str) else out
                res.key, res.prompt_tokens, res.completion_tokens = req.key, self.count_tokens(prompt_text(req)), 1
                self.page_kind_served += 1
                results.append(res)
                continue
            if self.fail_after is not None:
                served = self.served[stage] if self.fail_stage else sum(self.served.values())
                if (self.fail_stage in (None, stage)) and served >= self.fail_after:
                    if self.fail_with is EngineUnavailable:
                        raise EngineUnavailable("fake engine: the server went away")
                    raise self.fail_with()
            self.received.append(req)
            self.by_key[req.key] += 1
            counted = counted_stage(req)
            self.by_stage_key[(counted, req.key)] += 1
            self.served[counted] += 1
            out = self.responder(req)
            res = Result(text=out, finish_reason="stop") if isinstance(out, str) else out
            res.key = req.key
            if not res.prompt_tokens:
                res.prompt_tokens = self.count_tokens(prompt_text(req))
            if not res.completion_tokens and res.ok:
                res.completion_tokens = self.count_tokens(res.text) if req.choices is None else 1
            results.append(res)
        return results

    # ---- for tests ----------------------------------------------------------------------------

    def reset_counts(self) -> None:
        self.received.clear()
        self.by_key.clear()
        self.by_stage_key.clear()
        self.served.clear()

    def keys_for(self, stage: str) -> list[str]:
        return [k for (s, k), n in self.by_stage_key.items() if s == stage for _ in range(n)]

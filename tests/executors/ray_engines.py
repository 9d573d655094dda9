"""Engine factories for Ray actors in tests: picklable, and counting requests across processes.

A factory is pickled to every actor of a pool, so each actor has its own `FakeEngine`. To count what
the whole pool was asked, each engine appends one line per served request (`stage<TAB>key`) to a
shared log file. `fail_after` makes every actor's engine raise `EngineUnavailable` once it has
served that many requests of `fail_stage` (a server that went away).
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from fake_engine import FakeEngine, counted_stage, stage_of
from test_runner import CONTEXT, responder

from backforth.engines.base import EngineUnavailable, InProcessEngine


class RecordingEngine(FakeEngine):
    def __init__(self, log: str, answer=responder, **kw):
        super().__init__(answer, context_length=CONTEXT, **kw)
        self.log = log

    def generate(self, requests):
        results = super().generate(requests)  # raises before logging when it fails: nothing was saved
        with open(self.log, "a", encoding="utf-8") as fh:
            fh.write("".join(f"{counted_stage(r)}\t{r.key}\n" for r in requests))
        return results


class RecordingFactory:
    """`answer`: the responder (default the runner tests'); a module-level function, pickled by name."""

    def __init__(self, log: Path, fail_after: int | None = None, fail_stage: str | None = None, answer=responder):
        self.log, self.fail_after, self.fail_stage, self.answer = str(log), fail_after, fail_stage, answer

    def __call__(self, model_cfg) -> RecordingEngine:
        return RecordingEngine(self.log, self.answer, fail_after=self.fail_after, fail_stage=self.fail_stage,
                               fail_with=EngineUnavailable)


def requests_logged(log: Path) -> Counter[tuple[str, str]]:
    """(stage, key) -> how many times the pool was asked."""
    if not log.exists():
        return Counter()
    return Counter(tuple(line.split("\t")) for line in log.read_text(encoding="utf-8").splitlines())


class NodeLoggedEngine(InProcessEngine):
    """The real engine of `model_cfg`, built on the first request (the driver only counts tokens for
    `prepare`, with the tokenizer), logging two lines per request: `asked` when it starts and
    `answered` when its answer came, each `event<TAB>stage<TAB>key<TAB>node id<TAB>time.time()`."""

    def __init__(self, model_cfg, log: str):
        from backforth.engines.tokenized import token_counter

        self.cfg, self.log, self.name = model_cfg, log, model_cfg.model
        self.counter = token_counter(model_cfg)
        self.engine = None

    @property
    def context_length(self):
        return self.counter.context_length

    def count_tokens(self, text: str) -> int:
        return self.counter.count_tokens(text)

    def generate(self, requests):
        import ray

        from backforth.engines import build_engine

        if self.engine is None:
            self.engine = build_engine(self.cfg)
        node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else "driver"
        self._note("asked", requests, node)
        results = self.engine.generate(requests)
        self._note("answered", requests, node)
        return results

    def _note(self, event: str, requests, node: str) -> None:
        now = time.time()
        with open(self.log, "a", encoding="utf-8") as fh:
            fh.write("".join(f"{event}\t{stage_of(r)}\t{r.key}\t{node}\t{now:.3f}\n" for r in requests))

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()


class NodeLoggedFactory:
    def __init__(self, log: Path):
        self.log = str(log)

    def __call__(self, model_cfg) -> NodeLoggedEngine:
        return NodeLoggedEngine(model_cfg, self.log)

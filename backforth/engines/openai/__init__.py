"""Engine for any OpenAI-compatible HTTP server: vLLM serve, llama-server, SGLang, hosted APIs.

* `engine.py`: `OpenAIEngine` itself: submit/generate, retries, stats and key redaction;
* `opener.py`: the prefix-family opener (`order_by_prefix=True`, off by default);
* `limiter.py`: `KneeLimit`, the limit on requests in flight that finds the server's knee;
* `metrics.py`: the server's own queue, from its Prometheus /metrics (vLLM, SGLang);
* `loop.py`: the private event-loop thread and the per-call circuit breaker;
* `server_wait.py`: `ServerWait`, a server restart waited out (`wait_for_server_s`);
* `wire.py`: request bodies and response parsing, as plain functions.
"""

from __future__ import annotations

from .engine import OVERLOAD_STATUSES, OpenAIEngine
from .limiter import KneeLimit
from .opener import PREFIX_HEAD_CHARS
from .wire import TOP_LOGPROBS

__all__ = ["OVERLOAD_STATUSES", "PREFIX_HEAD_CHARS", "TOP_LOGPROBS", "KneeLimit", "OpenAIEngine"]

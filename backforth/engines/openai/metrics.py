"""The server's own count of the requests it runs and of those it queues, from its Prometheus /metrics.

vLLM publishes `vllm:num_requests_running` and `vllm:num_requests_waiting` (gauges, one series per
model and engine: summed here); SGLang, started with `--enable-metrics`, `sglang:num_running_reqs`
and `sglang:num_queue_reqs`; with them, where published, the share of the KV cache in use
(`vllm:kv_cache_usage_perc`, older vLLM `vllm:gpu_cache_usage_perc`, SGLang `sglang:token_usage`; a
mean over the series). The URL is the server's root, `/metrics` next to `/v1`. While requests
are in flight the engine reads it every `INTERVAL_S` and hands the counts to the limiter
(`KneeLimit.server_load`). A server without it (a hosted API, llama-server, a proxy) is normal: the
first answer that is not such a page, or `FAILURES` failed reads in a row, stop the polling for the
engine's life, and the limiter goes by throughput and latency alone.
"""

from __future__ import annotations

import asyncio
import logging

import httpx

log = logging.getLogger(__name__)

INTERVAL_S = 1.0
IDLE_S = 0.05
TIMEOUT_S = 2.0
FAILURES = 3
RUNNING = ("vllm:num_requests_running", "sglang:num_running_reqs")
WAITING = ("vllm:num_requests_waiting", "sglang:num_queue_reqs")
CACHE = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc", "sglang:token_usage")


def metrics_url(base_url: str) -> str:
    """`http://host:8000/v1` -> `http://host:8000/metrics` (a path before `/v1` is kept)."""
    root = base_url.rstrip("/")
    return root.removesuffix("/v1") + "/metrics"


def parse_load(text: str) -> tuple[float, float, float | None] | None:
    """(running, waiting, KV cache share in use or None) summed over every series (the cache share
    averaged), or None when the page has neither count."""
    running = waiting = 0.0
    cache: list[float] = []
    seen = False
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in RUNNING or name in WAITING or name in CACHE:
            try:
                value = float(line.rsplit(" ", 1)[1])
            except (IndexError, ValueError):
                continue
            if name in CACHE:
                cache.append(value)
                continue
            seen = True
            if name in RUNNING:
                running += value
            else:
                waiting += value
    return (running, waiting, sum(cache) / len(cache) if cache else None) if seen else None


async def poll(client: httpx.AsyncClient, url: str, busy, report) -> None:
    """Read `url` every INTERVAL_S while `busy()`, and `report(running, waiting, cache)`; returns when the
    server has no such metrics (or they fail FAILURES times in a row)."""
    failures = 0
    while True:
        if not busy():  # idle: look again soon, but read the page only while requests are out
            await asyncio.sleep(IDLE_S)
            continue
        try:
            resp = await client.get(url, timeout=TIMEOUT_S)
            load = parse_load(resp.text) if resp.status_code == 200 else None
        except httpx.HTTPError as err:
            failures += 1
            if failures >= FAILURES:
                log.debug("queue metrics at %s failed %d times (%s): no more polling", url, failures, err)
                return
        else:
            if load is None:
                log.debug("no queue metrics at %s (http %s): the limit goes by latency and throughput",
                          url, resp.status_code)
                return
            failures = 0
            report(*load)
        await asyncio.sleep(INTERVAL_S)

"""KneeLimit's decisions in virtual time: a simulated server, no sockets, no sleeping.

The servers: `queue` serves `capacity` requests at once and queues the rest (throughput flat past
the knee, latency growing with the queue: a vLLM whose batch is full); `batch` runs up to
`capacity` at once, each slower as the batch grows (latency rises *with* throughput, as on a GPU);
`compute` shares a fixed compute among all it runs (throughput flat past 4, no queue: a CPU server).
"""

from __future__ import annotations

import math
import random

import pytest

from backforth.engines.openai.limiter import KneeLimit


def simulate(kind: str, capacity: int, limit: KneeLimit, n: int, service_s: float = 1.0, seed: int = 0,
             metrics=None) -> dict:
    """Send `n` requests through `limit` to a simulated server, in steps of service_s/100; returns the
    throughput, the slowest answer and the most requests in flight."""
    rng = random.Random(seed)
    dt, now, sent, done = service_s / 100, 0.0, 0, 0
    queue: list[list] = []    # [work left, sent at, level]
    running: list[list] = []
    slowest = 0.0
    while done < n:
        limit.waiting = n - sent  # every request not sent yet waits for a slot
        while sent < n and limit.in_flight < max(1, int(limit.limit)):
            level = limit.sent(now)
            sent += 1
            limit.waiting = n - sent
            queue.append([service_s * math.exp(rng.gauss(-0.045, 0.3)), now, level])
        while queue and len(running) < capacity:
            running.append(queue.pop(0))
        b = len(running)
        speed = {"queue": 1.0, "batch": 1 / (1 + 2 * b / capacity), "compute": min(1.0, 4 / max(b, 1))}[kind]
        for r in running:
            r[0] -= speed * dt
        now += dt
        for r in [r for r in running if r[0] <= 0]:
            running.remove(r)
            slowest = max(slowest, now - r[1])
            limit.answered(now, now - r[1], True, r[2])
            done += 1
        if metrics is not None and int(now / service_s) != int((now - dt) / service_s):
            limit.server_load(len(running), len(queue))
    return {"throughput": n / now, "slowest": slowest, "peak": limit.peak}


def best_fixed(kind: str, capacity: int, n: int) -> float:
    return max(simulate(kind, capacity, KneeLimit(c, adaptive=False), n)["throughput"]
               for c in (capacity // 2, capacity, 2 * capacity, 4 * capacity))


@pytest.mark.parametrize("kind,capacity", [("queue", 8), ("queue", 64), ("batch", 64), ("compute", 64)])
def test_the_limit_finds_the_knee_without_a_hand_set_value(kind, capacity):
    n = max(40 * capacity, 1000)
    limit = KneeLimit(1024)
    run = simulate(kind, capacity, limit, n)
    assert run["throughput"] >= 0.9 * best_fixed(kind, capacity, n)
    knee = 4 if kind == "compute" else capacity
    assert 0.7 * knee <= limit.limit <= 2 * knee + 2  # it stopped growing: not the ceiling, not the first guess
    assert limit.peak <= 4 * max(knee, 16)  # the climb's overshoot is bounded


def test_it_climbs_while_throughput_grows_and_stops_when_only_latency_does():
    limit = KneeLimit(1024)
    simulate("queue", 64, limit, 3000)
    phases = [phase for phase, _ in limit.decisions]
    assert phases[0] == "down" and "hold" in phases  # up, then a step back from the overshoot, then hold
    assert limit.best == pytest.approx(64, rel=0.1)  # answers a second: the server's capacity


def test_a_start_above_the_knee_comes_down():
    limit = KneeLimit(1024)
    simulate("compute", 16, limit, 600)
    assert limit.limit <= 8  # started at 16, the compute saturates at 4


def test_pushback_halves_once_per_window_and_holds():
    limit = KneeLimit(64, initial=32)
    for _ in range(8):  # eight requests in flight all hear "429" from the same overload
        limit.sent(0.0)
    for _ in range(8):
        limit.overload()
    assert limit.limit == 16 and limit.cuts == 1 and limit.phase == "hold"  # one cut, not eight
    for i in range(8):
        limit.answered(0.1, 0.1, False, 8)
    for _ in range(16):  # a full window later, a new complaint cuts again
        limit.sent(0.2)
        limit.answered(0.3, 0.1, False, 1)
    limit.overload()
    assert limit.limit == 8 and limit.cuts == 2
    for _ in range(40):
        limit._completed += 100
        limit.overload()
    assert limit.limit == 1.0  # never below one request


def test_a_fixed_limit_never_moves():
    limit = KneeLimit(4, adaptive=False)
    limit.overload()
    limit.server_load(1, 50)
    simulate("queue", 2, limit, 100)
    assert limit.limit == 4 and limit.cuts == 0 and limit.phase == "fixed"


def test_the_servers_own_queue_caps_the_limit():
    limit = KneeLimit(1024, initial=256)
    limit.server_load(running=40, waiting=100)  # it queues far beyond a tenth of what it runs ...
    assert limit.limit == 256  # ... but once may be a burst waiting for its prefill
    limit.server_load(running=40, waiting=100)
    assert limit.limit == pytest.approx(40 * 1.1 + 1) and limit.phase == "hold"
    limit.server_load(running=40, waiting=2)  # a queue of a few: no change
    assert limit.limit == pytest.approx(45)


def test_a_queue_while_the_kv_cache_has_room_is_not_a_full_server():
    # vLLM's CPU server on long prompts: it admits a few prompts a step and queues the rest with its
    # cache far from full, and more in flight still answered more (benchmarks/server_knee.py --vllm)
    limit = KneeLimit(1024, initial=256)
    for _ in range(3):
        limit.server_load(running=6, waiting=100, cache=0.2)
    assert limit.limit == 256 and limit.phase == "up"
    for _ in range(2):
        limit.server_load(running=6, waiting=100, cache=0.95)  # the cache full too: the server is full
    assert limit.limit == pytest.approx(6 * 1.1 + 1) and limit.phase == "hold"


def test_a_queue_at_the_server_ends_the_climb_early():
    with_metrics = KneeLimit(1024)
    simulate("queue", 64, with_metrics, 3000, metrics=True)
    assert with_metrics.peak < 200  # without the server's count, the climb overshoots to about 2-4x


def test_the_attempt_timeout_grows_with_the_answers_latency():
    limit = KneeLimit(64)
    assert limit.attempt_timeout(120) == 120
    for lat in (10.0, 50.0, 30.0):
        limit.sent(0.0)
        limit.answered(lat, lat, True, 1)
    assert limit.attempt_timeout(120) == 150  # three times the slowest recent answer
    assert limit.attempt_timeout(200) == 200

"""Keeping a server busy: the in-flight limit over HTTP (its decisions: test_openai_limiter.py), the
server's queue from /metrics, deadlines that move with the queue, prefix-family ordering, chunks in flight."""

from __future__ import annotations

import random
import re
import sys
import threading
import time
from pathlib import Path

import pytest
from stub_openai import StubOpenAIServer

from backforth.engines.base import Request
from backforth.engines.openai import OpenAIEngine
from backforth.pipeline.method import run_method

sys.path.insert(0, str(Path(__file__).parent.parent / "pipeline"))
from test_runner_openai import make_config, responder, write_docs  # noqa: E402

CHAT = "/v1/chat/completions"
SHARED = "You are a careful assistant. " * 25  # ~700 characters: one prefix family


def chat(user: str, system: str = SHARED, key: str = "") -> Request:
    return Request(messages=[{"role": "system", "content": system}, {"role": "user", "content": user}],
                   max_tokens=8, key=key)


def engine_for(stub: StubOpenAIServer, **kw) -> OpenAIEngine:
    kw.setdefault("backoff_base_s", 0.001)
    kw.setdefault("backoff_max_s", 0.05)
    return OpenAIEngine("stub-model", base_url=stub.base_url, **kw)


def test_overloaded_server_gets_fewer_rejected_attempts_with_the_adaptive_limit():
    rejected = {}
    for adaptive in (True, False):
        with StubOpenAIServer(capacity=4, delay_s=0.03, retry_after="0.01") as stub:
            eng = engine_for(stub, max_in_flight=32, max_retries=40, adaptive=adaptive)
            results = eng.generate([chat(f"q{i}", key=str(i)) for i in range(48)])
            assert all(r.ok for r in results) and [r.key for r in results] == [str(i) for i in range(48)]
            rejected[adaptive] = stub.count[CHAT] - 48
            load = eng.load()
            eng.close()
        if adaptive:
            assert load["cuts"] >= 1 and load["peak_in_flight"] <= 32
        else:
            assert load["cuts"] == 0 and load["limit"] == 32
    assert rejected[True] > 0  # the server did push back
    assert rejected[True] < rejected[False] / 2, rejected


def queueing(slots: int, service_s: float):
    """A stub delay that serves `slots` requests at once and queues the rest (no 429): vLLM when full."""
    sem = threading.Semaphore(slots)

    def delay(body: dict) -> float:
        with sem:
            time.sleep(service_s)
        return 0.0
    return delay


def test_a_request_waiting_in_the_servers_queue_is_never_timed_out_and_sent_again():
    # 40 requests at a server that answers 2 at a time in 0.1 s: the last wait about 2 s, far past
    # timeout_s, but each deadline moves with the answers' latency, so nothing is given up on
    with StubOpenAIServer(delay_s=queueing(2, 0.1)) as stub:
        eng = engine_for(stub, max_in_flight=40, adaptive=False, timeout_s=0.3)
        results = eng.generate([chat(f"q{i}", key=str(i)) for i in range(40)])
        bodies = [r["body"]["messages"][-1]["content"] for r in stub.requests]
        eng.close()
    assert all(r.ok for r in results)
    assert len(bodies) == len(set(bodies)) == 40  # each request reached the server once
    assert "timeout" not in eng.stats["by_status"] and eng.stats["retries"] == 0


def test_a_request_the_server_never_answers_still_times_out():
    # the deadline moves with the others' answers, but it is never infinite: a stuck request is
    # given up after three times the slowest answer (and timeout_s), and its retry succeeds
    stuck = {"n": 0}

    def fault(body: dict) -> str | None:
        if body["messages"][-1]["content"] == "stuck" and stuck["n"] == 0:
            stuck["n"] += 1
            return "timeout"
        return None

    with StubOpenAIServer(fault_for=fault, timeout_sleep_s=3.0, delay_s=0.05) as stub:
        eng = engine_for(stub, timeout_s=0.5)
        t0 = time.perf_counter()
        results = eng.generate([chat("stuck")] + [chat(f"q{i}") for i in range(10)])
        took = time.perf_counter() - t0
        eng.close()
    assert all(r.ok for r in results) and eng.stats["by_status"]["timeout"] == 1 and eng.stats["retries"] == 1
    assert took < 2.5  # given up well before the stub's 3 s


def prometheus(running: int, waiting: int) -> str:
    return ("# HELP vllm:num_requests_running Number of requests in model execution batches.\n"
            "# TYPE vllm:num_requests_running gauge\n"
            f'vllm:num_requests_running{{engine="0",model_name="stub-model"}} {running}.0\n'
            f'vllm:num_requests_waiting{{engine="0",model_name="stub-model"}} {waiting}.0\n')


def test_the_servers_own_queue_from_its_metrics_caps_the_limit():
    with StubOpenAIServer(delay_s=0.3, metrics=lambda: prometheus(running=4, waiting=30)) as stub:
        eng = engine_for(stub, max_in_flight=64)
        t0, i = time.perf_counter(), 0
        while time.perf_counter() - t0 < 2.5:  # long enough for two reads (one a second), however fast the stub
            eng.generate([chat(f"q{i}-{j}") for j in range(40)])
            i += 1
        load = eng.load()
        polled = stub.count["/metrics"]
        eng.close()
    assert polled >= 1 and load["server_queue"] == (4.0, 30.0)
    assert load["limit"] == pytest.approx(4 * 1.1 + 1) and load["phase"] == "hold"
    assert not any(r["path"] == "/metrics" for r in stub.requests)  # counted, not a model request


def test_a_server_without_metrics_is_asked_once():
    with StubOpenAIServer(delay_s=0.05) as stub:  # /metrics answers 404, like llama-server or a hosted API
        eng = engine_for(stub)
        for _ in range(3):
            eng.generate([chat(f"q{i}") for i in range(20)])
        polled = stub.count["/metrics"]
        eng.close()
    assert polled == 1 and eng.load()["server_queue"] is None


def test_the_runner_offers_a_few_times_the_limit_found_not_the_ceiling():
    from backforth.pipeline.executors.local import depth_for

    with StubOpenAIServer() as stub:
        eng = engine_for(stub)  # ceiling 1024, first limit 16
        assert eng.max_in_flight == 1024 and eng.window == 16
        assert depth_for(eng, 64) == 3  # 3 x 16 offered, at least 3 chunks; 48 chunks for the ceiling
        eng.limit.limit = 200.0
        assert depth_for(eng, 64) == 10
        eng.close()


def test_a_prefix_family_opens_with_one_request_then_the_rest_arrive_together():
    users = [f"question {i:02d}" for i in range(10)]
    shuffled = users[:]
    random.Random(0).shuffle(shuffled)
    with StubOpenAIServer(delay_s=0.1) as stub:
        eng = engine_for(stub, max_in_flight=16, order_by_prefix=True)  # the opener is off by default
        results = eng.generate([chat(u, key=u) for u in shuffled])
        assert [r.key for r in results] == shuffled  # request order, whatever the send order
        assert [r.text for r in results] == ["stub:" + u for u in shuffled]
        first, *rest = sorted(stub.requests, key=lambda r: r["t_in"])
        assert first["body"]["messages"][-1]["content"] == "question 00"  # sorted: shared prefixes adjacent
        assert all(r["t_in"] >= first["t_out"] for r in rest)  # the prefix is cached before the burst
        assert max(r["t_in"] for r in rest) < min(r["t_out"] for r in rest)  # and the burst is concurrent

        # the family is known now: a second call sends everything at once
        n = len(stub.requests)
        eng.generate([chat(f"again {i}") for i in range(6)])
        second = stub.requests[n:]
        assert max(r["t_in"] for r in second) < min(r["t_out"] for r in second)

        # prompts with nothing in common are never held back
        n = len(stub.requests)
        eng.generate([chat("x", system=f"{i} " + "distinct system prompt " * 30) for i in range(5)])
        third = stub.requests[n:]
        assert max(r["t_in"] for r in third) < min(r["t_out"] for r in third)
        eng.close()


def test_by_default_a_prefix_family_is_sent_all_at_once():
    users = [f"question {i:02d}" for i in range(10)]
    with StubOpenAIServer(delay_s=0.1) as stub:
        eng = engine_for(stub, max_in_flight=16)
        results = eng.generate([chat(u, key=u) for u in users])
        assert [r.key for r in results] == users
        assert max(r["t_in"] for r in stub.requests) < min(r["t_out"] for r in stub.requests)  # no opener
        eng.close()


def test_close_cancels_and_the_engine_starts_again(tmp_path):
    with StubOpenAIServer(delay_s=0.05) as stub:
        eng = engine_for(stub, max_in_flight=4)
        assert eng.generate([chat("a")])[0].ok
        eng.close()
        eng.close()  # twice is fine
        assert eng.generate([chat("b")])[0].text == "stub:b"
        eng.close()


def _chunk_overlap(tmp_path: Path, chunks_in_flight: int) -> bool:
    """Does some request of the second chunk reach the server before the first chunk is answered?"""
    docs = write_docs(tmp_path / f"docs{chunks_in_flight}.jsonl")
    with StubOpenAIServer(responder=responder, delay_s=0.15) as stub:
        # page_kind off: its requests for every page would come before backtranslation's first chunk
        cfg = make_config(docs, stub, runner={"chunk_size": 4, "chunks_in_flight": chunks_in_flight},
                          page_kind={"enabled": False})
        cfg.models.backward.max_in_flight = 16
        run_method(cfg, tmp_path / f"run{chunks_in_flight}", until="backtranslate")
        reqs = stub.requests
    doc = [int(re.search(r"Document (\d+) explains", str(r["body"]["messages"])).group(1)) for r in reqs]
    first_done = max(r["t_out"] for r, d in zip(reqs, doc) if d < 4)
    return any(r["t_in"] < first_done for r, d in zip(reqs, doc) if 4 <= d < 8)


def test_runner_keeps_the_next_chunk_at_the_server_while_the_current_one_finishes(tmp_path):
    assert _chunk_overlap(tmp_path, 2)
    assert not _chunk_overlap(tmp_path, 1)


def test_overlapping_chunks_give_the_same_output(tmp_path):
    docs = write_docs(tmp_path / "docs.jsonl")
    outs = []
    for depth in (1, 3):
        with StubOpenAIServer(responder=responder, delay_s=0.01) as stub:
            cfg = make_config(docs, stub, runner={"chunk_size": 2, "chunks_in_flight": depth})
            run_method(cfg, tmp_path / f"run{depth}")
        outs.append((tmp_path / f"run{depth}" / "sft.jsonl").read_text())
    assert outs[0] == outs[1] and outs[0].count("\n") == 12


def test_metrics_url_and_page_parsing():
    from backforth.engines.openai.metrics import metrics_url, parse_load

    assert metrics_url("http://gpu-1:8000/v1") == "http://gpu-1:8000/metrics"
    assert metrics_url("https://proxy.example/vllm/v1/") == "https://proxy.example/vllm/metrics"
    two_engines = prometheus(3, 0) + 'vllm:num_requests_running{engine="1",model_name="m"} 5.0\n'
    assert parse_load(two_engines) == (8.0, 0.0, None)  # series summed
    assert parse_load("sglang:num_running_reqs 7\nsglang:num_queue_reqs 2\n") == (7.0, 2.0, None)
    cached = two_engines + 'vllm:kv_cache_usage_perc{engine="0"} 0.2\nvllm:kv_cache_usage_perc{engine="1"} 0.4\n'
    assert parse_load(cached) == pytest.approx((8.0, 0.0, 0.3))  # the cache share averaged
    assert parse_load("sglang:num_running_reqs 7\nsglang:num_queue_reqs 2\nsglang:token_usage 0.95\n") == (7.0, 2.0, 0.95)
    assert parse_load("# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 1.5\n") is None

"""Keeping a server busy: the adaptive in-flight limit, prefix-family ordering, chunks in flight."""

from __future__ import annotations

import asyncio
import random
import re
import sys
from pathlib import Path

from stub_openai import StubOpenAIServer

from backforth.engines.base import Request
from backforth.engines.openai import AdaptiveLimit, OpenAIEngine
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


def test_adaptive_limit_halves_once_per_window_then_grows_back():
    async def scenario() -> None:
        lim = AdaptiveLimit(32)
        for _ in range(8):  # eight requests in flight all hear "429" from the same overload
            await lim.acquire()
        for _ in range(8):
            lim.overload()
        assert lim.limit == 16 and lim.cuts == 1  # one cut, not eight
        for _ in range(8):
            await lim.release(ok=False)
        for _ in range(16):  # a full window later, a new complaint cuts again
            await lim.acquire()
            await lim.release(ok=False)
        lim.overload()
        assert lim.limit == 8 and lim.cuts == 2
        for _ in range(600):  # successes: +1/limit each (about 480 from 8 to 32), capped at the ceiling
            await lim.acquire()
            await lim.release(ok=True)
        assert lim.limit == 32
        for _ in range(40):
            lim._completed += 100
            lim.overload()
        assert lim.limit == 1.0  # never below one request

    asyncio.run(scenario())


def test_fixed_limit_never_moves():
    async def scenario() -> None:
        lim = AdaptiveLimit(4, adaptive=False)
        lim.overload()
        await lim.acquire()
        await lim.release(ok=True)
        assert lim.limit == 4 and lim.cuts == 0

    asyncio.run(scenario())


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
        cfg = make_config(docs, stub, runner={"chunk_size": 4, "chunks_in_flight": chunks_in_flight})
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

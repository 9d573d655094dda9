"""OpenAIEngine against the stub server: round trips, ordering, retries, faults, key hygiene."""

from __future__ import annotations

import asyncio
import logging
import math
import re
import socket
import threading
import time
from collections import Counter

import pytest
from stub_openai import StubOpenAIServer

from backforth.engines.base import EngineError, EngineUnavailable, Request
from backforth.engines.openai import OpenAIEngine

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
SECRET = "sk-test-SECRET-7f3a9c"


def engine_for(stub: StubOpenAIServer, **kw) -> OpenAIEngine:
    """Fast backoff so retry tests take milliseconds, not seconds."""
    opts = dict(backoff_base_s=0.01, backoff_max_s=0.05, timeout_s=5.0)
    opts.update(kw)
    return OpenAIEngine("stub-model", base_url=stub.base_url, **opts)


def chat(text: str, key: str = "", **kw) -> Request:
    return Request(messages=[{"role": "user", "content": text}], key=key, **kw)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- round trips -------------------------------------------------------------------------------

def test_chat_round_trip():
    with StubOpenAIServer() as stub:
        eng = engine_for(stub)
        [res] = eng.generate([chat("hello there", key="row-1", max_tokens=50, temperature=0.7, top_p=0.8,
                                   stop=["\n\n"])])
        [seen] = stub.requests
    assert res.ok and res.text == "stub:hello there" and res.finish_reason == "stop"
    assert res.key == "row-1" and res.prompt_tokens > 0 and res.completion_tokens > 0
    assert seen["path"] == CHAT
    body = seen["body"]
    assert body["model"] == "stub-model" and body["messages"] == [{"role": "user", "content": "hello there"}]
    assert (body["max_tokens"], body["temperature"], body["top_p"], body["stop"]) == (50, 0.7, 0.8, ["\n\n"])
    assert "seed" not in body and "Authorization" not in seen["headers"]


def test_chat_assistant_prefix_continues_final_message():
    with StubOpenAIServer() as stub:
        engine_for(stub).generate([chat("rate this", assistant_prefix="Score:")])
        body = stub.requests[0]["body"]
    assert body["messages"][-1] == {"role": "assistant", "content": "Score:"}
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False


def test_prompt_request_uses_completions_with_prefix_appended():
    with StubOpenAIServer() as stub:
        [res] = engine_for(stub).generate([Request(prompt="Document: x\n", assistant_prefix="Q:", key="k")])
        seen = stub.requests[0]
    assert seen["path"] == COMPLETIONS and seen["body"]["prompt"] == "Document: x\nQ:"
    assert res.ok and res.text == "stub:Document: x\nQ:" and res.key == "k"


def test_api_completions_sends_messages_as_plain_prompt():
    with StubOpenAIServer() as stub:
        engine_for(stub, api="completions").generate([chat("plain text")])
        seen = stub.requests[0]
    assert seen["path"] == COMPLETIONS and seen["body"]["prompt"] == "plain text"


def test_finish_reason_comes_from_server():
    with StubOpenAIServer(responder=lambda body: ("cut off", "length")) as stub:
        [res] = engine_for(stub).generate([chat("x")])
    assert (res.text, res.finish_reason) == ("cut off", "length")


def test_request_order_preserved_and_in_flight_bounded():
    live, peak, lock = [0], [0], threading.Lock()

    def slow(body: dict) -> str:
        n = int(body["messages"][0]["content"])
        with lock:
            live[0] += 1
            peak[0] = max(peak[0], live[0])
        time.sleep(0.01 * ((n * 7) % 5))  # finish out of order
        with lock:
            live[0] -= 1
        return f"answer {n}"

    with StubOpenAIServer(responder=slow) as stub:
        results = engine_for(stub, max_in_flight=4).generate([chat(str(i), key=str(i)) for i in range(20)])
    assert [r.text for r in results] == [f"answer {i}" for i in range(20)]
    assert [r.key for r in results] == [str(i) for i in range(20)]
    assert 1 < peak[0] <= 4


def test_empty_call_and_small_api():
    eng = OpenAIEngine("m", context_length=4096)
    assert eng.generate([]) == [] and eng.name == "m" and eng.context_length == 4096
    assert eng.count_tokens("") == 1 and eng.count_tokens("x" * 400) == 100
    eng.close()


def test_generate_works_from_a_thread_and_inside_a_running_loop():
    with StubOpenAIServer() as stub:
        eng = engine_for(stub)
        box: list = []
        t = threading.Thread(target=lambda: box.append(eng.generate([chat("from thread")])))
        t.start()
        t.join()

        async def inside_loop():
            return eng.generate([chat("from loop")])

        nested = asyncio.run(inside_loop())
    assert box[0][0].text == "stub:from thread" and nested[0].text == "stub:from loop"


# ---- retries -----------------------------------------------------------------------------------

def test_429_honours_retry_after_then_succeeds():
    with StubOpenAIServer(fail_first={"429": 2}, retry_after="0.2") as stub:
        eng = engine_for(stub, backoff_max_s=1.0)
        start = time.monotonic()
        [res] = eng.generate([chat("hi")])
        elapsed = time.monotonic() - start
        assert stub.count[CHAT] == 3
    assert res.ok and res.text == "stub:hi"
    assert elapsed >= 0.4  # two 0.2 s Retry-After waits; plain backoff would have waited ~0.03 s
    assert eng.stats["retries"] == 2 and eng.stats["by_status"]["429"] == 2 and eng.stats["attempts"] == 3


def test_500_then_success():
    with StubOpenAIServer(fail_first={"500": 1}) as stub:
        eng = engine_for(stub)
        [res] = eng.generate([chat("hi")])
        assert stub.count[CHAT] == 2
    assert res.ok and eng.stats["retries"] == 1 and eng.stats["by_status"]["500"] == 1


@pytest.mark.parametrize("fault", ["bad_json", "empty_choices", "drop"])
def test_garbage_and_dropped_responses_are_retried(fault: str):
    with StubOpenAIServer(fail_first={fault: 2}) as stub:
        eng = engine_for(stub)
        [res] = eng.generate([chat("hi")])
        assert stub.count[CHAT] == 3
    assert res.ok and res.text == "stub:hi" and eng.stats["retries"] == 2


def test_timeout_is_retried():
    with StubOpenAIServer(fail_first={"timeout": 1}, timeout_sleep_s=3.0) as stub:
        eng = engine_for(stub, timeout_s=1.0)
        [res] = eng.generate([chat("hi")])
        assert stub.count[CHAT] == 2
    assert res.ok  # the first attempt was cut at timeout_s (the stub slept 3 s), the second answered
    assert eng.stats["by_status"]["timeout"] == 1


def test_400_is_not_retried_and_becomes_an_error_result():
    with StubOpenAIServer(fail_first={"400": 1}) as stub:
        eng = engine_for(stub)
        [res, other] = eng.generate([chat("long", key="a"), chat("short", key="b")])
        assert stub.count[CHAT] == 2
    bad, good = (res, other) if res.error else (other, res)
    assert bad.error == "http 400: prompt is too long: 9999 tokens > 4096" and bad.finish_reason == "error"
    assert good.ok and eng.stats["retries"] == 0 and eng.stats["errors"] == 1


def test_exhausted_retries_give_an_error_result_and_spare_other_rows():
    poison = lambda body: "500" if body["messages"][0]["content"] == "poison" else None  # noqa: E731
    with StubOpenAIServer(fault_for=poison) as stub:
        eng = engine_for(stub, max_retries=2)
        reqs = [chat(t, key=t) for t in ("a", "poison", "b", "c")]
        results = eng.generate(reqs)
        assert stub.count[CHAT] == 3 + 3
    assert [r.key for r in results] == ["a", "poison", "b", "c"]
    bad = results[1]
    assert bad.error.startswith("http 500: internal error") and "3 attempts" in bad.error
    assert bad.finish_reason == "error" and bad.key == "poison"
    assert all(r.ok for i, r in enumerate(results) if i != 1)


# ---- server down -------------------------------------------------------------------------------

def test_dropping_server_raises_engine_unavailable_with_clear_message():
    with StubOpenAIServer() as stub:
        stub.down()
        eng = engine_for(stub, max_retries=2)
        with pytest.raises(EngineUnavailable) as info:
            eng.generate([chat("a"), chat("b")])
        url, msg = stub.base_url, str(info.value)
    assert url in msg and "Start the server" in msg and "base_url" in msg and "re-running" in msg


def test_nothing_listening_raises_engine_unavailable():
    url = f"http://127.0.0.1:{free_port()}/v1"
    eng = OpenAIEngine("m", base_url=url, max_retries=1, backoff_base_s=0.01, timeout_s=2.0, wait_for_server_s=0)
    with pytest.raises(EngineUnavailable, match="cannot reach the model server"):
        eng.generate([chat("a")])
    assert eng.server.outages == []  # 0: no wait, as a server down for good


def test_nothing_listening_is_waited_for_then_given_up(caplog: pytest.LogCaptureFixture):
    url = f"http://127.0.0.1:{free_port()}/v1"
    eng = OpenAIEngine("m", base_url=url, max_retries=1, backoff_base_s=0.01, backoff_max_s=0.05, timeout_s=2.0,
                       wait_for_server_s=0.3, max_in_flight=2)
    with caplog.at_level(logging.WARNING, logger="backforth.engines.openai"):
        calls = [eng.submit([chat(f"{c}-{i}") for i in range(3)]) for c in range(2)]  # two chunks in flight
        errors = []
        for call in calls:
            with pytest.raises(EngineUnavailable) as info:
                call.result()
            errors.append(str(info.value))
    assert all("cannot reach the model server" in e for e in errors)
    # one wait for everything in flight, not one per request or per call (requests queued behind the
    # in-flight limit fail after it with one probe each)
    assert [o["back"] for o in eng.server.outages] == [False]
    assert eng.stats["attempts"] <= 6  # a request failed once at most, then waited: none spent its retries
    assert "waiting up to 0.3 s for it to come back" in caplog.text
    # the time waited is measured, so on a loaded machine it reads 0.4 or 0.7 s, not 0.3
    assert re.search(r"still not answering after [0-9.]+ s .*giving up", caplog.text)


def test_a_restarted_server_gets_again_only_the_requests_it_never_answered(caplog: pytest.LogCaptureFixture):
    n = 24

    def delay(body):  # the 6th request kills the server while it and others are being served
        if len(stub.requests) == 6:
            threading.Timer(0.02, restart).start()
        return 0.1

    def restart():
        stub.go_away()
        time.sleep(1.0)
        stub.come_back()

    with StubOpenAIServer(delay_s=delay) as stub:
        eng = engine_for(stub, max_in_flight=4, max_retries=1, wait_for_server_s=30)
        with caplog.at_level(logging.WARNING, logger="backforth.engines.openai"):
            results = eng.generate([chat(f"q{i}", key=f"k{i}") for i in range(n)])
        stub.settle()
        posts = [r for r in stub.requests if r["path"] == CHAT]
    assert [r.key for r in results] == [f"k{i}" for i in range(n)] and all(r.ok for r in results)
    answered = Counter(r["body"]["messages"][0]["content"] for r in posts if r["answered"])
    dropped = [r for r in posts if not r["answered"]]
    assert answered == Counter(f"q{i}" for i in range(n))  # each answered exactly once
    assert dropped  # the requests in flight when it died reached it, were dropped, and were sent again
    for r in dropped:  # ... before any answer to them: nothing answered was asked for again
        again = [p for p in posts if p["body"] == r["body"] and p["answered"]]
        assert len(again) == 1 and again[0]["t_in"] > r["t_in"]
    assert [o["back"] for o in eng.server.outages] == [True]
    assert eng.stats["errors"] == 0
    assert "is not answering" in caplog.text and "is back after" in caplog.text


def test_dead_server_fails_fast_instead_of_retrying_every_request():
    with StubOpenAIServer() as stub:
        stub.down()
        eng = engine_for(stub, max_in_flight=4, max_retries=2)
        with pytest.raises(EngineUnavailable):
            eng.generate([chat(str(i)) for i in range(40)])
        assert stub.count[CHAT] <= 4 * 3  # one window of retries, then the circuit opens


# ---- choice scoring ----------------------------------------------------------------------------

TABLE = {"5": -0.5, " 5": -0.2, "4": -2.0, " 3": -4.0, "Score": -1.0}
EXPECTED = {"1": -math.inf, "2": -math.inf, "3": -4.0, "4": -2.0, "5": -0.2}
CHOICES = ["1", "2", "3", "4", "5"]


def test_choice_scoring_chat_shape():
    with StubOpenAIServer(logprobs_for=lambda body: dict(TABLE)) as stub:
        [res] = engine_for(stub).generate([chat("rate", choices=CHOICES, assistant_prefix="Score:", key="s")])
        body = stub.requests[0]["body"]
    assert body["logprobs"] is True and body["top_logprobs"] == 20
    assert body["max_tokens"] == 1 and body["temperature"] == 0
    assert res.ok and res.choice_logprobs == EXPECTED and res.text == "5" and res.key == "s"


def test_choice_scoring_completions_shape():
    with StubOpenAIServer(logprobs_for=lambda body: dict(TABLE)) as stub:
        [res] = engine_for(stub).generate([Request(prompt="rate:", choices=CHOICES)])
        seen = stub.requests[0]
    assert seen["path"] == COMPLETIONS and seen["body"]["logprobs"] == 20 and seen["body"]["max_tokens"] == 1
    assert res.ok and res.choice_logprobs == EXPECTED and res.text == "5"


def test_choice_scoring_default_stub_table():
    with StubOpenAIServer() as stub:
        [res] = engine_for(stub).generate([chat("rate", choices=CHOICES)])
    assert res.choice_logprobs == {"1": -math.inf, "2": -math.inf, "3": -4.0, "4": -2.5, "5": -0.1}


# ---- the API key -------------------------------------------------------------------------------

def test_missing_key_variable_is_named(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("BF_NO_SUCH_KEY", raising=False)
    with pytest.raises(EngineError, match="BF_NO_SUCH_KEY"):
        OpenAIEngine("m", api_key_env="BF_NO_SUCH_KEY")


def test_api_key_is_sent_but_never_leaks(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture):
    monkeypatch.setenv("BF_TEST_KEY", SECRET)
    caplog.set_level(logging.DEBUG)
    faults = ["400", "429", "500", "bad_json", "empty_choices", "timeout", "drop"]
    by_text = lambda body: body["messages"][0]["content"] if body["messages"][0]["content"] in faults else None  # noqa: E731
    with StubOpenAIServer(fault_for=by_text, echo_auth_in_errors=True, timeout_sleep_s=3.0) as stub:
        eng = engine_for(stub, api_key_env="BF_TEST_KEY", max_retries=1, timeout_s=1.0)
        results = eng.generate([chat(f) for f in faults] + [chat("fine")])
        assert stub.requests[0]["headers"]["Authorization"] == f"Bearer {SECRET}"
        stub.down()
        with pytest.raises(EngineUnavailable) as info:
            eng.generate([chat("fine")])
    errors = [r.error for r in results[:-1]]
    assert all(errors) and results[-1].ok
    assert any("Bearer ***" in e for e in errors)  # the server echoed it; redaction caught it
    for text in errors + [str(info.value), repr(eng), str(eng.stats), caplog.text]:
        assert SECRET not in text


# ---- chaos -------------------------------------------------------------------------------------

def test_mixed_faults_at_20_percent_all_rows_accounted_for():
    faults = {"429": 0.04, "500": 0.04, "timeout": 0.04, "drop": 0.04, "bad_json": 0.04}
    with StubOpenAIServer(faults=faults, seed=7, timeout_sleep_s=3.0) as stub:
        eng = engine_for(stub, max_in_flight=16, max_retries=3, timeout_s=1.0)
        results = eng.generate([chat(f"q{i}", key=str(i)) for i in range(50)])
        served = stub.count[CHAT]
    assert len(results) == 50 and [r.key for r in results] == [str(i) for i in range(50)]
    for i, r in enumerate(results):
        assert r.ok != bool(r.error)
        assert r.error or r.text == f"stub:q{i}"
    assert eng.stats["requests"] == 50 and served == eng.stats["attempts"]
    assert 0 < eng.stats["retries"] <= 50 * 3

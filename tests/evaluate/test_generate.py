"""Answering an eval set (backforth.evaluate.generate): suffixes, format, chunking, resume, failures."""

from __future__ import annotations

import json

import pytest

from backforth.config import make_model
from backforth.engines.base import InProcessEngine, Request, Result
from backforth.evaluate.data import EvalDataError, load_eval_set
from backforth.evaluate.generate import SUFFIXES, generate_answers, with_suffix
from backforth.pipeline import RunConflict

CFG = make_model(engine="openai", model="model-under-test")


class EchoEngine(InProcessEngine):
    """Deterministic: answers 'answer to <last user message>'; records every call; can fail chosen keys."""

    name = "model-under-test"

    def __init__(self, fail_keys: set[str] | None = None):
        self.calls: list[list[Request]] = []
        self.fail_keys = fail_keys or set()

    def generate(self, requests: list[Request]) -> list[Result]:
        self.calls.append(list(requests))
        out = []
        for r in requests:
            if r.key in self.fail_keys:
                out.append(Result(error="boom", finish_reason="error", key=r.key))
            else:
                out.append(Result(text=f" answer to {r.messages[-1]['content']} ", finish_reason="stop",
                                  prompt_tokens=11, completion_tokens=7, key=r.key))
        return out

    @property
    def requests(self) -> list[Request]:
        return [r for call in self.calls for r in call]

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    context_length = None

    def close(self) -> None:
        pass


def rows(n: int = 5) -> list[dict]:
    return [{"id": f"q{i}", "instruction": f"Question {i}?", "category": "test", "reference": "ref",
             "reference_generator": "g"} for i in range(n)]


def read(path) -> list[dict]:
    return [json.loads(line) for line in open(path)]


def test_paper_suffixes_exact_text():
    assert SUFFIXES["assistant"] == "Answer in the style of an AI Assistant."
    assert SUFFIXES["assistant_web"] == "Answer in the style of an AI Assistant, with knowledge from web search if needed."
    assert with_suffix("Why?", "assistant") == "Why? Answer in the style of an AI Assistant."
    assert with_suffix("Why?", "none") == "Why?"
    with pytest.raises(EvalDataError, match="suffix 'web'"):
        with_suffix("Why?", "web")


@pytest.mark.parametrize("suffix", ["assistant", "assistant_web", "none"])
def test_answers_in_alpaca_eval_format_with_suffix_recorded(tmp_path, suffix):
    engine = EchoEngine()
    out = tmp_path / "answers.jsonl"
    stats = generate_answers(rows(2), CFG, out, suffix=suffix, engine=engine)
    assert stats.written == 2 and stats.errors == []
    asked = engine.requests[0]
    assert asked.messages == [{"role": "user", "content": with_suffix("Question 0?", suffix)}]
    assert (asked.temperature, asked.top_p, asked.max_tokens) == (0.7, 0.9, 512)  # paper App. A.4 sampling
    row = read(out)[0]
    assert row["instruction"] == "Question 0?"  # as in the eval set, without the suffix
    assert row["output"] == f"answer to {with_suffix('Question 0?', suffix)}"
    assert row["generator"] == "model-under-test" and row["generate_model"] == "model-under-test"
    assert row["suffix"] == suffix and row["suffix_text"] == SUFFIXES[suffix]
    assert row["generate_finish_reason"] == "stop"
    assert (row["generate_prompt_tokens"], row["generate_completion_tokens"]) == (11, 7)
    assert row["generate_sampling"] == {"temperature": 0.7, "top_p": 0.9, "max_tokens": 512}
    assert row["category"] == "test" and "reference" not in row and "reference_generator" not in row


def test_generator_name_from_adapter_or_option(tmp_path):
    cfg = make_model(engine="transformers", model="base", adapter="/runs/dolma-filter-rewrite/adapter/")
    generate_answers(rows(1), cfg, tmp_path / "a.jsonl", engine=EchoEngine())
    assert read(tmp_path / "a.jsonl")[0]["generator"] == "adapter"
    assert read(tmp_path / "a.jsonl")[0]["generate_model"] == "base+adapter"
    generate_answers(rows(1), CFG, tmp_path / "b.jsonl", engine=EchoEngine(), generator="Dolma + rewriting")
    assert read(tmp_path / "b.jsonl")[0]["generator"] == "Dolma + rewriting"


def test_chunks_go_to_the_engine_one_at_a_time(tmp_path):
    engine = EchoEngine()
    ticks = []
    generate_answers(rows(5), CFG, tmp_path / "a.jsonl", engine=engine, chunk_size=2, progress=ticks.append)
    assert [len(c) for c in engine.calls] == [2, 2, 1]
    assert ticks == [2, 2, 1]
    assert [r["id"] for r in read(tmp_path / "a.jsonl")] == ["q0", "q1", "q2", "q3", "q4"]


def test_resume_skips_done_ids_and_repairs_a_torn_line(tmp_path):
    out = tmp_path / "a.jsonl"
    generate_answers(rows(3), CFG, out, engine=EchoEngine())
    with open(out, "a") as fh:
        fh.write('{"id": "q3", "instruction": "Quest')  # a crash mid-write
    engine = EchoEngine()
    stats = generate_answers(rows(5), CFG, out, engine=engine)
    assert [r.key for r in engine.requests] == ["q3", "q4"]
    assert (stats.already_done, stats.written) == (3, 2)
    assert [r["id"] for r in read(out)] == ["q0", "q1", "q2", "q3", "q4"]
    engine = EchoEngine()
    assert generate_answers(rows(5), CFG, out, engine=engine).written == 0 and engine.calls == []


def test_failed_requests_are_not_written_and_retried(tmp_path):
    out = tmp_path / "a.jsonl"
    stats = generate_answers(rows(3), CFG, out, engine=EchoEngine(fail_keys={"q1"}))
    assert stats.errors == [{"id": "q1", "error": "boom"}]
    assert [r["id"] for r in read(out)] == ["q0", "q2"]
    engine = EchoEngine()
    generate_answers(rows(3), CFG, out, engine=engine)
    assert [r.key for r in engine.requests] == ["q1"]


def test_resume_refuses_answers_made_another_way(tmp_path):
    out = tmp_path / "a.jsonl"
    generate_answers(rows(2), CFG, out, suffix="assistant", engine=EchoEngine())
    with pytest.raises(RunConflict, match="(?s)answer: changed suffix.*new --out"):
        generate_answers(rows(3), CFG, out, suffix="assistant_web", engine=EchoEngine())
    with pytest.raises(RunConflict, match="generate_sampling"):
        generate_answers(rows(3), CFG, out, temperature=1.0, engine=EchoEngine())


def test_bundled_eval_set_end_to_end(tmp_path):
    engine = EchoEngine()
    stats = generate_answers(load_eval_set("bundled"), CFG, tmp_path / "a.jsonl", engine=engine, chunk_size=16)
    assert stats.written == 32 and len(engine.calls) == 2
    assert all(r["category"] for r in read(tmp_path / "a.jsonl"))

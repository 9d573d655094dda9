"""The whole pipeline on the `openai` engine against the stub server, with faults injected."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest
from stub_openai import StubOpenAIServer

from run_files import read_distilled, read_sft
from backforth.config import WEB_TAG, build_config
from backforth.engines.base import EngineUnavailable
from backforth.engines.openai import OpenAIEngine
from backforth.pipeline.method import run_method

N_DOCS = 12
HYGIENE_STAGES = ("dedup_documents", "dedup_instructions", "decontaminate", "grounding")


def doc_text(i: int) -> str:
    return f"Document {i} explains topic {i}. " + " ".join(f"fact{i}x{j}" for j in range(45))


def stage_of(body: dict) -> str:
    text = "\n".join(str(m.get("content", "")) for m in body["messages"])
    if "You classify web pages" in text:
        return "page_kind"
    if "You find the question behind a text" in text:
        return "backtranslate"
    if "You judge training data" in text:
        return "curate"
    if "Rewrite the draft" in text:
        return "rewrite"
    return "distill"


def doc_number(body: dict) -> int:
    return int(re.search(r"Document (\d+) explains", json.dumps(body["messages"])).group(1)) \
        if stage_of(body) != "distill" else int(re.search(r"subject number (\d+)", body["messages"][-1]["content"]).group(1))


def responder(body: dict) -> str:
    stage, i = stage_of(body), doc_number(body)
    if stage == "backtranslate":
        return f"Instruction: What should I know about subject number {i} in practice?"
    if stage == "curate":
        return f"The answer is direct and complete for subject {i}.\nScore: 5"
    if stage == "rewrite":
        return f"[RES]Here is what to know about subject {i}: it is explained in detail.[/RES]"
    return f"A distilled answer about subject {i}."


def write_docs(path: Path) -> Path:
    path.write_text("".join(json.dumps({"id": f"doc{i:02d}", "text": doc_text(i)}) + "\n" for i in range(N_DOCS)))
    return path


def make_config(docs: Path, stub: StubOpenAIServer, max_retries: int = 8, **extra):
    model = {"engine": "openai", "model": "stub-model", "base_url": stub.base_url, "max_retries": max_retries,
             "max_in_flight": 4, "timeout_s": 5.0}
    data = {"input": {"path": str(docs)}, "runner": {"progress": False, "chunk_size": 5},
            "models": {role: dict(model) for role in ("backward", "scorer", "rewriter", "distiller")},
            # the engine over HTTP is under test, not the hygiene stages (the stub's instructions differ
            # by one word: near-duplicates; its rewrites add words the documents lack)
            **{name: {"enabled": False} for name in HYGIENE_STAGES}}
    for k, v in extra.items():
        data.setdefault(k, {}).update(v)
    return build_config(data)


class Factory:
    """Engines as build_engine makes them, with millisecond backoff so retries take no time."""

    def __init__(self):
        self.engines: list[OpenAIEngine] = []

    def __call__(self, m) -> OpenAIEngine:
        eng = OpenAIEngine(m.model, base_url=m.base_url, max_in_flight=m.max_in_flight, timeout_s=m.timeout_s,
                           max_retries=m.max_retries, api=m.api, context_length=m.context_length,
                           backoff_base_s=0.001, backoff_max_s=0.01)
        self.engines.append(eng)
        return eng


def stage_counts(stub: StubOpenAIServer) -> Counter:
    return Counter(stage_of(r["body"]) for r in stub.requests if isinstance(r["body"], dict))


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_pipeline_over_http_with_20_percent_faults(tmp_path):
    docs = write_docs(tmp_path / "docs.jsonl")
    with StubOpenAIServer(responder=responder, faults={"429": 0.1, "500": 0.1}, retry_after="0", seed=3) as stub:
        factory = Factory()
        stats = run_method(make_config(docs, stub), tmp_path / "run", engine_factory=factory)
        per_stage = stage_counts(stub)
    sft = read_sft(tmp_path / "run")
    assert [r["id"] for r in sft] == [f"doc{i:02d}" for i in range(N_DOCS)]
    assert read_jsonl(tmp_path / "run" / "rejects.jsonl") == []
    for i, r in enumerate(sft):
        assert r["instruction"] == f"What should I know about subject number {i} in practice?"
        assert r["messages"][0]["content"] == r["instruction"] + " " + WEB_TAG
        assert r["response"] == f"Here is what to know about subject {i}: it is explained in detail."
        assert r["score"] == 5 and r["distilled"] == f"A distilled answer about subject {i}."
        assert r["provenance"]["rewrite_model"] == "stub-model"
    assert stats["funnel"]["exported"] == N_DOCS

    # faults happened and were retried; every logical request was made once
    [eng] = factory.engines  # four roles, one model config: one engine
    assert eng.stats["requests"] == 5 * N_DOCS  # page_kind, backtranslate, curate, rewrite, distill
    assert eng.stats["retries"] > 0 and eng.stats["errors"] == 0
    assert eng.stats["by_status"].get("429", 0) + eng.stats["by_status"].get("500", 0) == eng.stats["retries"]
    assert sum(per_stage.values()) == eng.stats["attempts"] > 5 * N_DOCS
    assert all(per_stage[s] >= N_DOCS for s in ("page_kind", "backtranslate", "curate", "rewrite", "distill"))
    assert stats["stages"]["backtranslate"]["prompt_tokens"] > 0


def test_logprobs_scoring_over_http(tmp_path):
    docs = write_docs(tmp_path / "docs.jsonl")
    lp = {"5": -0.2, "4": -2.0, "1": -3.0}
    explanation = {"A": -0.05}  # stage page_kind's letters
    with StubOpenAIServer(responder=responder,
                          logprobs_for=lambda body: explanation if stage_of(body) == "page_kind" else dict(lp)) as stub:
        cfg = make_config(docs, stub, curate={"method": "logprobs"}, distill={"enabled": False})
        stats = run_method(cfg, tmp_path / "run", engine_factory=Factory())
        scoring = [r["body"] for r in stub.requests if stage_of(r["body"]) == "curate"]
    assert len(scoring) == N_DOCS
    assert all(b["logprobs"] is True and b["max_tokens"] == 1 and b["messages"][-1] == {"role": "assistant", "content": "Score: "}
               for b in scoring)
    sft = read_sft(tmp_path / "run")
    assert len(sft) == N_DOCS and all(r["score"] == 5 and r["score_method"] == "logprobs" for r in sft)
    assert 4.5 < sft[0]["score_expected"] < 5
    assert stats["stages"]["curate"]["parse_rate"] == 1.0


def test_server_down_mid_run_then_resume(tmp_path):
    docs = write_docs(tmp_path / "docs.jsonl")
    state = {"down_for": "rewrite"}

    def fault_for(body):
        return "drop" if stage_of(body) == state["down_for"] else None

    with StubOpenAIServer(responder=responder, fault_for=fault_for) as stub:
        cfg = make_config(docs, stub, max_retries=1)
        with pytest.raises(EngineUnavailable, match="cannot reach the model server"):
            run_method(cfg, tmp_path / "run", engine_factory=Factory())
        stub.settle()  # the other chunk in flight was cancelled; its last requests may still land
        first = stage_counts(stub)
        state["down_for"] = None
        run_method(cfg, tmp_path / "run", engine_factory=Factory())
        second = stage_counts(stub) - first
    assert first["backtranslate"] == N_DOCS and first["curate"] == N_DOCS and first["distill"] == 0
    assert second["backtranslate"] == 0 and second["curate"] == 0  # finished stages are not paid for twice
    assert second["rewrite"] == N_DOCS and second["distill"] == N_DOCS
    assert len(read_sft(tmp_path / "run")) == N_DOCS

"""Rows that bring their instruction skip backtranslation; `curate.keep_share` keeps the best share."""

from __future__ import annotations

import json
import math

from fake_engine import FakeEngine, prompt_text, section, stage_of

from run_files import read_distilled, read_sft
from backforth.config import build_config
from backforth.engines.base import Request, Result
from backforth.pipeline.method import run_method

N = 10


def doc(i: int) -> str:
    return f"Document {i} about topic {i}. " + " ".join(f"word{i}w{j}" for j in range(50))


def responder(req: Request) -> Result | str:
    stage, key = stage_of(req), req.key
    if stage == "backtranslate":
        return f"What does document {key} explain about its topic?"
    if stage == "curate":  # score = the row's number mod 5 + 1, as logprobs: one label takes most mass
        n = int(key[1:])
        return Result(text="", finish_reason="stop",
                      choice_logprobs={str(s): (0.0 if s == n % 5 + 1 else -4.0 - 0.01 * n) for s in range(1, 6)})
    if stage == "rewrite":
        return section(req.messages[0]["content"], "<draft>", "</draft>")
    return "A distilled answer."


def write(tmp_path, with_instruction: set[int]):
    path = tmp_path / "docs.jsonl"
    with open(path, "w") as fh:
        for i in range(N):
            rec = {"id": f"d{i}", "text": doc(i)}
            if i in with_instruction:
                rec["instruction"] = f"Given instruction {i}: explain topic {i}."
            fh.write(json.dumps(rec) + "\n")
    return path


def cfg_for(path, **curate):
    return build_config({"input": {"path": str(path)}, "runner": {"progress": False, "chunk_size": 4},
                         "curate": {"method": "logprobs", **curate},
                         **{s: {"enabled": False} for s in ("dedup_documents", "dedup_instructions", "decontaminate",
                                                            "grounding")}})


def run(cfg, out, engine):
    return run_method(cfg, out, engine_factory=lambda _m: engine)


def test_given_instructions_skip_backtranslation(tmp_path):
    given = {1, 4, 7}
    engine = FakeEngine(responder)
    stats = run(cfg_for(write(tmp_path, given), threshold=1), tmp_path / "run", engine)
    assert sorted(engine.keys_for("backtranslate")) == sorted(f"d{i}" for i in range(N) if i not in given)
    sft = {r["id"]: r for r in read_sft(tmp_path / "run")}
    for i in range(N):
        r = sft[f"d{i}"]
        if i in given:
            assert r["instruction"] == f"Given instruction {i}: explain topic {i}." and r["instruction_source"] == "input"
        else:
            assert r["instruction_source"] == "backtranslated"
    assert stats["funnel"]["instructions_from_input"] == 3
    assert "3 of the 10 instructions came with the input" in (tmp_path / "run" / "README.md").read_text()


def test_keep_share_keeps_the_best_share_by_expected_score(tmp_path):
    engine = FakeEngine(responder)
    out = tmp_path / "run"
    stats = run(cfg_for(write(tmp_path, set()), keep_share=0.3), out, engine)
    sft = read_sft(out)
    assert len(sft) == math.ceil(0.3 * N) == stats["funnel"]["kept_top_share"]
    # the rows whose score is 5 (n % 5 == 4: d4, d9) come first, then the best score-4 row (d8 beats d3)
    assert [r["id"] for r in sft] == ["d4", "d8", "d9"]
    rejects = [json.loads(line) for line in open(out / "rejects.jsonl")]
    assert {r["reason"] for r in rejects} == {"below_top_share"} and len(rejects) == N - 3
    assert all(r["score_rank"] > 3 for r in rejects)
    assert "keep the best 30% of the scored pairs" in (out / "README.md").read_text()
    # resume: nothing is scored again, and the kept set is the same
    engine.reset_counts()
    run(cfg_for(write(tmp_path, set()), keep_share=0.3), out, engine)
    assert not engine.received
    assert [json.loads(line)["id"] for line in open(out / "sft.jsonl")] == ["d4", "d8", "d9"]


def write_pairs(tmp_path) -> tuple:
    """Six instructions, each answered twice: a good answer and a bad one, in either order. The fake
    scorer gives the good answers 5 and the bad ones 2 (by the word in their text)."""
    path, good = tmp_path / "pairs.jsonl", {}
    with open(path, "w") as fh:
        for q in range(6):
            answers = [("good", doc(q) + " A careful, complete answer."), ("bad", doc(q + 50) + " Buy now.")]
            if q % 2:
                answers.reverse()
            for k, (kind, text) in enumerate(answers):
                rid = f"q{q}{kind}"
                good[rid] = kind == "good"
                fh.write(json.dumps({"id": rid, "instruction": f"How do I do task number {q} well?", "text": text}) + "\n")
    return path, good


def pair_responder(req: Request) -> Result | str:
    if stage_of(req) == "curate":
        score = 5 if "careful, complete answer" in prompt_text(req) else 2
        return Result(text="", finish_reason="stop",
                      choice_logprobs={str(s): (0.0 if s == score else -6.0) for s in range(1, 6)})
    return responder(req)


def test_every_input_pair_is_scored_and_the_best_answer_per_instruction_kept(tmp_path):
    """A dataset with two answers per instruction: near-dedup compares input pairs as instruction + response,
    so none is dropped before scoring; `best_response` keeps the better-scored answer of each."""
    path, good = write_pairs(tmp_path)
    cfg = build_config({"input": {"path": str(path)}, "runner": {"progress": False, "chunk_size": 4},
                        "curate": {"method": "logprobs", "threshold": 1},
                        **{s: {"enabled": False} for s in ("dedup_documents", "decontaminate", "grounding")}})
    stats = run(cfg, tmp_path / "run", FakeEngine(pair_responder))
    assert stats["stages"]["dedup_instructions"]["rejected"] == 0
    assert stats["stages"]["curate"]["in"] == 12  # every pair scored
    sft = read_sft(tmp_path / "run")
    assert sorted(r["id"] for r in sft) == sorted(i for i, g in good.items() if g)
    rejects = [json.loads(line) for line in open(tmp_path / "run" / "rejects.jsonl")]
    assert {r["reason"] for r in rejects} == {"not_best_response"}
    assert all(r["best_response_id"] == r["id"].replace("bad", "good") for r in rejects)


def test_every_passing_answer_is_kept_when_asked(tmp_path):
    path, _good = write_pairs(tmp_path)
    cfg = build_config({"input": {"path": str(path)}, "runner": {"progress": False},
                        "curate": {"method": "logprobs", "threshold": 1, "responses_per_instruction": "all"},
                        **{s: {"enabled": False} for s in ("dedup_documents", "decontaminate", "grounding")}})
    run(cfg, tmp_path / "run", FakeEngine(pair_responder))
    assert len(read_sft(tmp_path / "run")) == 12


def test_a_repeated_input_pair_is_still_a_near_duplicate(tmp_path):
    path = tmp_path / "pairs.jsonl"
    rec = {"instruction": "How do I do task number 1 well?", "text": doc(1)}
    path.write_text(json.dumps({"id": "a", **rec}) + "\n" + json.dumps({"id": "b", **rec, "text": doc(1) + " Thanks!"}) + "\n")
    cfg = build_config({"input": {"path": str(path)}, "runner": {"progress": False}, "variant": "filter",
                        "curate": {"method": "logprobs", "threshold": 1}, "distill": {"enabled": False},
                        **{s: {"enabled": False} for s in ("dedup_documents", "decontaminate", "grounding")}})
    stats = run(cfg, tmp_path / "run", FakeEngine(pair_responder))
    assert stats["stages"]["dedup_instructions"]["rejected_by_reason"] == {"near_duplicate": 1}

"""Humpback's second self-curation round (`curate.iterations: 2`): M1 is really trained (one LoRA step on
the embedded model), then re-scores every candidate round 1 scored; rows keep both rounds' scores."""

from __future__ import annotations

import json

from fake_engine import FakeEngine, stage_of
from test_runner import CONTEXT, config, docs, read_jsonl, responder  # noqa: F401 (docs is a fixture)

from run_files import read_distilled, read_sft
from backforth.engines.base import Request, Result
from backforth.pipeline.store import StageStore
from backforth.workflows import run


def stage_rows(out, stage: str) -> list[dict]:
    return list(StageStore(out / "stages" / stage).rows())


def m1_responder(req: Request) -> Result | str:
    """M1 disagrees with M0: it keeps d05 (round 1: 3) and drops d00 (round 1: 5)."""
    if stage_of(req) == "curate":
        return "Now reads like an assistant.\nScore: 5" if req.key == "d05" else (
            "Off-topic.\nScore: 2" if req.key == "d00" else "Direct and complete.\nScore: 5")
    return responder(req)


def test_two_rounds(tmp_path, docs):  # noqa: F811
    m0, m1 = FakeEngine(responder, context_length=CONTEXT), FakeEngine(m1_responder, context_length=CONTEXT, name="m1")
    factory_calls = []

    def factory(model_cfg):
        factory_calls.append(model_cfg.model)
        return m1 if model_cfg.model.endswith("m1") else m0

    cfg = config(docs, curate={"iterations": 2, "m1_max_steps": 1, "m1_base_model": "embedded:smollm2-135m"})
    out = tmp_path / "run"
    stats = run(cfg, out, engine_factory=factory)

    # M1 is a real adapter trained on the seed pairs + the pairs round 1 kept, then served to round 2
    train = json.loads((out / "m1" / "train_stats.json").read_text())
    round1_kept = sum(1 for r in stage_rows(out, "curate") if r["_status"] == "done")
    assert train["counts"]["web"] == round1_kept and train["counts"]["seed"] == 48
    assert (out / "m1" / "adapter_config.json").is_file() and factory_calls[-1] == str(out / "m1")

    m1_rows = {r["id"]: r for r in stage_rows(out, "curate_m1")}
    # every row round 1 scored comes back (kept or low_score), and nothing else
    scored = [r for r in stage_rows(out, "curate") if r.get("score") is not None]
    assert set(m1_rows) == {r["id"] for r in scored}
    assert m1_rows["d05"]["score_round1"] == 3 and m1_rows["d05"]["score"] == 5 and m1_rows["d05"]["_status"] == "done"
    assert m1_rows["d00"]["score_round1"] == 5 and m1_rows["d00"]["reason"] == "low_score"
    assert m1_rows["d00"]["stage"] == "curate_m1" and m1_rows["d05"]["curate_m1_model"] == "m1"

    sft = {r["id"]: r for r in read_sft(out)}
    rejects = read_jsonl(out / "rejects.jsonl")
    assert "d05" in sft and sft["d05"]["score_round1"] == 3 and "d00" not in sft
    ids = list(sft) + [r["id"] for r in rejects]
    assert len(ids) == len(set(ids))  # d05's round-1 low_score is not a final reject any more
    assert not any(r["id"] == "d05" for r in rejects)
    assert stats["funnel"]["kept_by_m1"] == sum(1 for r in m1_rows.values() if r["_status"] == "done")

    # resume: nothing is trained or scored again
    before = dict(m1.by_stage_key)
    run(cfg, out, engine_factory=factory)
    assert m1.by_stage_key == before

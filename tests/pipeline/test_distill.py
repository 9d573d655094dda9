"""distill: the baseline answers the instruction without the document and never rejects a row."""

from __future__ import annotations

import pytest

from backforth.config import DistillConfig
from backforth.engines.base import Result
from backforth.pipeline.stages.distill import Distill
from backforth.prompts import load_template

DOC = "Sourdough needs a lively starter: feed it flour and water daily and bake when it doubles in four hours."
INSTR = "How do I know my sourdough starter is ready?"


def row() -> dict:
    return {"id": "r2", "text": DOC, "instruction": INSTR, "response": "Feed it daily.", "_index": 2}


def test_request_holds_the_instruction_only():
    [req] = Distill(DistillConfig()).requests(row())
    assert req.messages == [{"role": "user", "content": INSTR}]
    assert "starter: feed it" not in str(req.messages)  # the document is not shown
    assert req.assistant_prefix is None and req.choices is None and req.key == "r2"
    assert (req.temperature, req.top_p, req.max_tokens) == (1.0, 0.9, 768)
    [req] = Distill(DistillConfig(temperature=0.7, top_p=0.95, max_tokens=64)).requests(row())
    assert (req.temperature, req.top_p, req.max_tokens) == (0.7, 0.95, 64)


def test_apply_keeps_the_answer():
    st = Distill(DistillConfig())
    st.model_name = "fake-distiller"
    r = row()
    assert st.apply(r, [Result(text="  Float test: drop a spoonful in water.\n", finish_reason="stop",
                               prompt_tokens=12, completion_tokens=9)]) is None
    assert r["distilled"] == "Float test: drop a spoonful in water." and r["distill_reason"] is None
    assert r["distill_model"] == "fake-distiller" and r["distill_finish_reason"] == "stop"
    assert (r["distill_prompt_tokens"], r["distill_completion_tokens"]) == (12, 9)
    t = load_template("distill")
    assert r["distill_prompt"] == f"distill@{t.version}#{t.sha}"
    assert r["response"] == "Feed it daily."  # the rewrite is untouched


@pytest.mark.parametrize("result, reason", [
    (Result(text="It is ready when", finish_reason="length"), "truncated"),
    (Result(text="   ", finish_reason="stop"), "empty"),
    (Result(text="I'm sorry, I can't help with baking.", finish_reason="stop"), "refusal"),
    (Result(text="", finish_reason="error", error="http 500"), "engine_error"),
])
def test_a_failed_answer_never_rejects_the_row(result, reason):
    r = row()
    assert Distill(DistillConfig()).apply(r, [result]) is None
    assert r["distilled"] is None and r["distill_reason"] == reason


def test_settings_leave_out_enabled():
    assert Distill(DistillConfig(enabled=False)).settings() == Distill(DistillConfig()).settings()
    assert Distill(DistillConfig(max_tokens=5)).settings()["max_tokens"] == 5

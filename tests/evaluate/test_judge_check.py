"""The judge check (backforth.evaluate.judge_check): the labelled pairs, agreement and its diagnostics,
pass/fail against the length rules, and the instruction judge's prompt (evaluate.instructions)."""

from __future__ import annotations

import json
import math
import re

import pytest

from backforth.config import make_model
from backforth.engines.base import InProcessEngine, Request, Result
from backforth.evaluate import judge_check as C
from backforth.evaluate.instructions import InstructionJudge

JUDGE = make_model(engine="openai", model="judge-model")
RESPONSES = C.read_pairs(C.RESPONSE_PAIRS)
INSTRUCTIONS = C.read_pairs(C.INSTRUCTION_PAIRS)
BETTER = {r["better"] for r in RESPONSES + INSTRUCTIONS}


def sides(req: Request) -> tuple[str, str]:
    text = req.messages[-1]["content"]
    what = "Answer" if "Check each answer" in text else "Request"
    a = re.search(rf"\n{what} A:\n(.*?)\n\n{what} B:\n", text, re.S).group(1)
    b = re.search(rf"\n{what} B:\n(.*?)\n\nCheck each ", text, re.S).group(1)
    return a, b


class Judge(InProcessEngine):
    """P(A) from `p_a(a, b)`, as choice logprobs."""

    name = "judge-model"
    context_length = None

    def __init__(self, p_a):
        self.p_a, self.n = p_a, 0

    def generate(self, requests):
        self.n += len(requests)
        out = []
        for r in requests:
            p = min(max(self.p_a(*sides(r)), 1e-6), 1 - 1e-6)
            out.append(Result(text="A", finish_reason="stop", choice_logprobs={"A": math.log(p), "B": math.log(1 - p)}))
        return out

    def count_tokens(self, text):
        return len(text.split())

    def close(self):
        pass


def test_the_labelled_pairs_are_what_they_say():
    kinds = {r["kind"] for r in RESPONSES}
    assert kinds == {"document_vs_rewrite", "invented_fact"} and len(RESPONSES) == 48
    docs = {r["id"][4:]: r for r in RESPONSES if r["kind"] == "document_vs_rewrite"}
    facts = {r["id"][5:]: r for r in RESPONSES if r["kind"] == "invented_fact"}
    assert set(docs) == set(facts)
    for key, d in docs.items():
        f = facts[key]
        assert d["source"] and (d["source"].startswith("pydoc_data") or "long description" in d["source"])
        assert d["better"] == f["better"] and d["instruction"] == f["instruction"]  # one faithful rewrite per page
        assert f["worse"] != f["better"] and f["invented"]
        # the invented variant is the rewrite with a local edit, about as long (length says nothing here)
        assert abs(len(f["worse"]) - len(f["better"])) < 0.25 * len(f["better"])
    assert {r["kind"] for r in INSTRUCTIONS} == {"unseen_text", "vague", "not_a_request", "unanswerable"}
    longer_bad = sum(len(r["worse"]) > len(r["better"]) for r in INSTRUCTIONS)
    assert 6 <= longer_bad <= 10  # the flawed instruction is the longer one about half the time


def test_an_oracle_judge_passes_every_kind(tmp_path):
    engine = Judge(lambda a, b: 0.95 if a in BETTER else 0.05)
    s = C.check_judge(JUDGE, "logprobs", tmp_path, engine=engine, use_cache=False)
    assert engine.n == 2 * (len(RESPONSES) + len(INSTRUCTIONS))  # both orders
    for kind, k in s["kinds"].items():
        assert k["agreement"] == 1.0 and k["passed"], kind
        assert k["both_orders_agree"] == 1.0 and k["first_slot"] == pytest.approx(0.5)
    assert set(s["kinds"]["instructions"]["by_kind"]) == {"unseen_text", "vague", "not_a_request", "unanswerable"}
    assert json.loads((tmp_path / "judge_check.json").read_text())["kinds"]["invented_fact"]["n"] == 24


def test_a_judge_that_always_says_a_scores_a_draw_and_fails(tmp_path):
    s = C.check_judge(JUDGE, "logprobs", tmp_path, engine=Judge(lambda a, b: 0.9), use_cache=False)
    for k in s["kinds"].values():
        assert k["agreement"] == 0.5 and not k["passed"]
        assert k["first_slot"] == pytest.approx(0.9) and k["both_orders_agree"] == 0.0
    assert "FAILED" in C.verdict_line("invented_fact", s["kinds"]["invented_fact"])


def test_a_judge_that_prefers_the_shorter_side_is_no_better_than_the_length_rule(tmp_path):
    s = C.check_judge(JUDGE, "logprobs", tmp_path, engine=Judge(lambda a, b: 0.9 if len(a) < len(b) else 0.1),
                      use_cache=False)
    doc = s["kinds"]["document_vs_rewrite"]
    # raw pages are mostly longer than their rewrites: "shorter wins" agrees often, and shows nothing
    assert doc["agreement"] == doc["shorter_rule"] >= 0.8 and not doc["passed"]
    assert doc["picks_longer"] == 0.0
    assert "no better than the length rule" in C.verdict_line("document_vs_rewrite", doc)


def test_the_instruction_judge_shows_each_instruction_alone():
    stage = InstructionJudge(JUDGE, "logprobs", both_orders=True)
    reqs = stage.requests({"id": "x", "output": "How do I boil an egg?", "reference_output": "Summarize the text."})
    assert len(reqs) == 2 and reqs[0].choices == ["A", "B"]
    text = reqs[0].messages[-1]["content"]
    assert "Request A:\nHow do I boil an egg?\n\nRequest B:\nSummarize the text." in text
    assert "self-contained" in text and reqs[0].assistant_prefix == "The better request is "
    assert stage.labels["judge_prompt"].startswith("instruction_judge_logprobs@1#")

"""decontaminate: instructions that overlap an eval set's (word 8-grams, exact normalised match)."""

from __future__ import annotations

import json

import pytest

from backforth.evaluate.data import EvalDataError
from backforth.config import DecontaminateConfig
from backforth.pipeline.stages.decontaminate import Decontaminate

EVAL = [
    {"id": "e1", "instruction": "I just got a job offer, but the salary is lower than I hoped. How can I negotiate without putting the offer at risk?"},
    {"id": "e2", "instruction": "Write a haiku about autumn."},
    {"instruction": "Explain the difference between a virus and a bacterium to a ten year old child."},
]


def stage(**cfg) -> Decontaminate:
    return Decontaminate(DecontaminateConfig(**cfg), eval_rows={"test": EVAL})


def check(st: Decontaminate, instruction: str) -> tuple[str | None, dict]:
    row = {"id": "r", "instruction": instruction, "text": "a document"}
    assert st.requests(row) == []
    return st.apply(row, []), row


def test_an_exact_eval_instruction_is_contaminated():
    reason, row = check(stage(), EVAL[0]["instruction"])
    assert reason == "contaminated"
    assert row["contaminated_with"] == {"eval_set": "test", "index": 0, "id": "e1"}
    assert row["contaminated_ngram"].startswith("i just got a job offer but the salary")


def test_a_paraphrase_sharing_an_8_gram_is_contaminated():
    reason, row = check(stage(), "My new employer made me an offer. How can I negotiate without putting the offer at risk, politely?")
    assert reason == "contaminated"
    assert row["contaminated_ngram"] == "how can i negotiate without putting the offer"
    assert row["contaminated_with"]["id"] == "e1"
    reason, row = check(stage(), "Could you explain the difference between a virus and a bacterium to a teenager?")
    assert reason == "contaminated" and row["contaminated_with"] == {"eval_set": "test", "index": 2, "id": None}


def test_a_clean_instruction_is_kept():
    reason, row = check(stage(), "How do I negotiate a higher salary for a job offer I already accepted?")
    assert reason is None and "contaminated_with" not in row
    assert check(stage(), "Write a haiku about spring.")[0] is None  # 7 shared words, not 8
    assert check(stage(), "")[0] is None


def test_short_eval_instructions_match_exactly_after_normalisation():
    reason, row = check(stage(), "  write a HAIKU about autumn ")
    assert reason == "contaminated" and row["contaminated_with"]["id"] == "e2"
    assert row["contaminated_ngram"] == "write a haiku about autumn"
    assert check(stage(exact_match=False), "Write a haiku about autumn.")[0] is None
    assert check(stage(), "Write a haiku about autumn leaves.")[0] is None  # containment is not equality


def test_ngram_length_is_a_setting():
    seven = "Please explain the difference between a virus and bacteria."  # a 7-word run of e3
    assert check(stage(), seven)[0] is None
    assert check(stage(ngram=6), seven)[0] == "contaminated"
    assert stage().settings() != stage(ngram=6).settings()


def test_bundled_eval_set_is_the_offline_default():
    st = Decontaminate(DecontaminateConfig())
    first = json.loads(open(_bundled()).readline())
    assert st.n_eval >= 10
    reason, row = check(st, first["instruction"])
    assert reason == "contaminated" and row["contaminated_with"] == {"eval_set": "bundled", "index": 0, "id": first["id"]}


def _bundled():
    from backforth.evaluate.data import BUNDLED_PATH

    return BUNDLED_PATH


def test_a_jsonl_eval_file_and_its_digest_in_the_fingerprint(tmp_path):
    path = tmp_path / "eval.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in EVAL) + "\n")
    st = Decontaminate(DecontaminateConfig(eval_sets=[str(path)]))
    reason, row = check(st, EVAL[1]["instruction"])
    assert reason == "contaminated" and row["contaminated_with"]["eval_set"] == str(path)
    before = st.settings()["eval_digest"]
    path.write_text(json.dumps({"instruction": "Something else entirely, asked for the test."}) + "\n")
    assert Decontaminate(DecontaminateConfig(eval_sets=[str(path)])).settings()["eval_digest"] != before


def test_alpaca_eval_through_the_hub_loader(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(*args, **kwargs):
        calls.append((args, kwargs))
        return [{"instruction": EVAL[2]["instruction"], "output": "ref", "generator": "text_davinci_003", "dataset": "x"}]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    st = Decontaminate(DecontaminateConfig(eval_sets=["alpaca_eval", "bundled"]))
    assert calls[0][0][:2] == ("tatsu-lab/alpaca_eval", "alpaca_eval") and calls[0][1]["split"] == "eval"
    reason, row = check(st, EVAL[2]["instruction"])
    assert reason == "contaminated" and row["contaminated_with"]["eval_set"] == "alpaca_eval"
    assert row["contaminated_with"]["index"] == 0


def test_a_missing_eval_file_names_it(tmp_path):
    with pytest.raises(EvalDataError, match="nope.jsonl"):
        Decontaminate(DecontaminateConfig(eval_sets=[str(tmp_path / "nope.jsonl")]))

"""Loading eval sets, model outputs and references (backforth.evaluate.data), hub loaders included."""

from __future__ import annotations

import json

import pytest

from backforth import evalsets  # where the hub loader reads ALPACA_EVAL_FILE
from backforth.evaluate.data import (EvalDataError, content_id, load_alpaca_eval, load_eval_set, load_outputs,
                                     load_references)

# Rows shaped like tatsu-lab/alpaca_eval, config alpaca_eval, split eval.
ALPACA_ROWS = [
    {"instruction": "What are the names of some famous actors that started their careers on Broadway?",
     "output": "Some famous actors that started their careers on Broadway are Hugh Jackman, Meryl Streep...",
     "generator": "text_davinci_003", "dataset": "helpful_base"},
    {"instruction": "How did US states get their names?", "output": "US states get their names from a variety of sources...",
     "generator": "text_davinci_003", "dataset": "helpful_base"},
]


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def test_bundled_eval_set():
    rows = load_eval_set("bundled")
    assert len(rows) == 32
    assert rows[0]["id"] == "eval-001" and rows[0]["instruction"] and rows[0]["category"]
    assert len({r["id"] for r in rows}) == 32
    assert [r["id"] for r in load_eval_set("bundled", limit=3)] == ["eval-001", "eval-002", "eval-003"]


def test_local_jsonl_ids_references_and_passthrough(tmp_path):
    path = write_jsonl(tmp_path / "q.jsonl", [
        {"instruction": "Name a prime.", "output": "Seven.", "generator": "ref-model", "category": "math"},
        {"id": 7, "instruction": "Say hi."},
        "",
        {"instruction": "Name a prime."},  # the same text again: a distinct, still stable id
    ])
    rows = load_eval_set(str(path))
    assert [r["id"] for r in rows] == [content_id("Name a prime."), "7", content_id("Name a prime.") + "-2"]
    assert rows[0]["reference"] == "Seven." and rows[0]["reference_generator"] == "ref-model"
    assert rows[0]["category"] == "math" and "output" not in rows[0]
    assert load_eval_set(str(path)) == rows  # stable across loads
    assert content_id(" Name a prime.\n") == content_id("Name a prime.")


@pytest.mark.parametrize(("line", "match"), [
    ("{not json", r"q\.jsonl:2: not valid JSON"),
    ('["a list"]', r"q\.jsonl:2: expected a JSON object"),
    ('{"question": "no instruction field"}', r"q\.jsonl:2: field 'instruction' is missing"),
    ('{"instruction": 42}', r"q\.jsonl:2: field 'instruction' is int, not text"),
    ('{"instruction": "   "}', r"q\.jsonl:2: field 'instruction' is empty"),
    ('{"id": "a", "instruction": "again"}', r"q\.jsonl:2: id 'a' appears twice"),
])
def test_bad_lines_name_file_and_line(tmp_path, line, match):
    path = write_jsonl(tmp_path / "q.jsonl", [{"id": "a", "instruction": "Fine."}, line])
    with pytest.raises(EvalDataError, match=match):
        load_eval_set(str(path))


def test_missing_file_and_empty_file(tmp_path):
    with pytest.raises(EvalDataError, match="no such file"):
        load_eval_set(str(tmp_path / "nope.jsonl"))
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(EvalDataError, match="no questions"):
        load_eval_set(str(tmp_path / "empty.jsonl"))


def test_alpaca_eval_json_array_format(tmp_path):
    """AlpacaEval's own files are JSON arrays; outputs and references read the same way."""
    path = tmp_path / "alpaca_eval.json"
    path.write_text(json.dumps(ALPACA_ROWS))
    rows = load_eval_set(str(path))
    assert [r["dataset"] for r in rows] == ["helpful_base", "helpful_base"]
    refs = load_references(path)
    assert refs[ALPACA_ROWS[1]["instruction"]]["generator"] == "text_davinci_003"
    outs = load_outputs(path)
    assert outs[0]["output"] == ALPACA_ROWS[0]["output"] and outs[0]["id"] == content_id(ALPACA_ROWS[0]["instruction"])
    path.write_text(json.dumps({"instruction": "x"}))
    with pytest.raises(EvalDataError, match="list of objects"):
        load_outputs(path)


def test_references_match_by_instruction_and_reject_conflicts(tmp_path):
    path = write_jsonl(tmp_path / "refs.jsonl", [
        {"instruction": "Q1 ", "output": "one", "generator": "g"},
        {"instruction": "Q1", "output": "one"},  # the same answer again is harmless
    ])
    assert load_references(path) == {"Q1": {"output": "one", "generator": "g", "where": f"{path}:1"}}
    write_jsonl(path, [{"instruction": "Q1", "output": "one"}, {"instruction": "Q1", "output": "two"}])
    with pytest.raises(EvalDataError, match=r"refs\.jsonl:2: a second, different reference"):
        load_references(path)
    write_jsonl(path, [{"instruction": "Q1"}])
    with pytest.raises(EvalDataError, match=r"refs\.jsonl:1: field 'output' is missing"):
        load_references(path)


def test_outputs_need_text_output(tmp_path):
    path = write_jsonl(tmp_path / "out.jsonl", [{"instruction": "Q", "output": None}])
    with pytest.raises(EvalDataError, match=r"out\.jsonl:1: field 'output' is missing"):
        load_outputs(path)


# ---------------------------------------------------------------------------------------------- hub


class FakeLoadDataset:
    """Stands in for datasets.load_dataset: records calls; `fail` raises on the first call."""

    def __init__(self, rows, fail: Exception | None = None):
        self.rows, self.fail, self.calls = rows, fail, []

    def __call__(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        if self.fail is not None and len(self.calls) == 1:
            raise self.fail
        return list(self.rows)


def test_alpaca_eval_hub_call(monkeypatch):
    import datasets

    fake = FakeLoadDataset(ALPACA_ROWS)
    monkeypatch.setattr(datasets, "load_dataset", fake)
    rows = load_eval_set("alpaca_eval")
    assert fake.calls == [(("tatsu-lab/alpaca_eval", "alpaca_eval"), {"split": "eval"})]
    assert [r["instruction"] for r in rows] == [r["instruction"] for r in ALPACA_ROWS]
    assert rows[0]["reference"] == ALPACA_ROWS[0]["output"] and rows[0]["reference_generator"] == "text_davinci_003"
    assert rows[0]["dataset"] == "helpful_base"
    refs = load_references("alpaca_eval")
    assert refs[ALPACA_ROWS[0]["instruction"]]["output"] == ALPACA_ROWS[0]["output"]


def test_alpaca_eval_falls_back_to_json_file_when_scripts_are_refused(monkeypatch):
    import datasets

    fake = FakeLoadDataset(ALPACA_ROWS, RuntimeError("Dataset scripts are no longer supported, but found alpaca_eval.py"))
    monkeypatch.setattr(datasets, "load_dataset", fake)
    assert load_alpaca_eval() == ALPACA_ROWS
    assert fake.calls[1] == (("json",), {"data_files": "hf://datasets/tatsu-lab/alpaca_eval/alpaca_eval.json",
                                         "split": "train"})


def test_alpaca_eval_offline_error_says_what_to_do(monkeypatch):
    import datasets

    monkeypatch.setattr(datasets, "load_dataset", FakeLoadDataset([], ConnectionError("offline")))
    with pytest.raises(EvalDataError, match=r"ConnectionError: offline.*resolve/main/alpaca_eval\.json.*pass its path"):
        load_eval_set("alpaca_eval")


def test_fallback_reads_alpaca_eval_json_with_the_real_json_builder(tmp_path, monkeypatch):
    """The fallback's real `datasets` call, on a local file in the hub file's format (a JSON array)."""
    import datasets

    local = tmp_path / "alpaca_eval.json"
    local.write_text(json.dumps(ALPACA_ROWS))
    real = datasets.load_dataset
    calls = []

    def first_refuses(*args, **kwargs):
        calls.append(args)
        if len(calls) == 1:
            raise RuntimeError("Dataset scripts are no longer supported, but found alpaca_eval.py")
        return real(*args, cache_dir=str(tmp_path / "cache"), **kwargs)

    monkeypatch.setattr(datasets, "load_dataset", first_refuses)
    monkeypatch.setattr(evalsets, "ALPACA_EVAL_FILE", str(local))
    rows = load_eval_set("alpaca_eval")
    assert [r["instruction"] for r in rows] == [r["instruction"] for r in ALPACA_ROWS]
    assert rows[1]["reference"] == ALPACA_ROWS[1]["output"]

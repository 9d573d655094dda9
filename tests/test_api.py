"""The Python face (`import backforth`): run on in-memory rows, the Result, load_config, try_stage, a
library call that prints nothing, and messages through logging. Fake engines; the README's notebook
example on the real embedded models is tests/e2e/test_notebook_example.py."""

from __future__ import annotations

import logging
import sys
import tempfile
from pathlib import Path

import datasets
import pytest
from fake_engine import FakeEngine

sys.path.insert(0, str(Path(__file__).parent / "pipeline"))  # the runner tests' corpus and the user's stage
from test_runner import CONTEXT, DOCS, HYGIENE_STAGES, responder  # noqa: E402
from test_user_stage import Headline  # noqa: E402
from test_user_stage import responder as headline_responder  # noqa: E402

import backforth  # noqa: E402
from backforth.config import RunConfig  # noqa: E402
from backforth.errors import UserError  # noqa: E402
from backforth.pipeline import RunConflict  # noqa: E402

ROWS = [{"id": i, "text": t, "url": f"https://example.com/{i}"} for i, t in DOCS if t is not None]
QUIET = {"runner.progress": True, "runner.chunk_size": 3, "prepare.split.enabled": False,  # d12 stays whole: too_long
         **{f"{s}.enabled": False for s in HYGIENE_STAGES}}


def fake() -> FakeEngine:
    return FakeEngine(responder, context_length=CONTEXT)


def run(rows, out, engine=None, **kw):
    engine = engine or fake()
    return backforth.run(None, rows=rows, out=out, overrides=QUIET, engine_factory=lambda _m: engine, **kw)


def test_the_public_api_is_exported_with_docstrings():
    for name in ("run", "Result", "load_config", "Stage", "try_stage"):
        assert name in backforth.__all__ and name in dir(backforth)
        assert getattr(backforth, name).__doc__
    assert issubclass(Headline, backforth.Stage)


def test_run_on_a_list_of_dicts_returns_datasets(tmp_path):
    result = run(ROWS, tmp_path / "run")
    assert isinstance(result.dataset, datasets.Dataset)
    assert {"instruction", "response", "messages", "score"} <= set(result.dataset.column_names)
    assert result.dataset["id"] == ["d10", "d00", "d01", "d09"]  # input order (d07, d08: rewrite rejects them)
    assert isinstance(result.rejects, datasets.Dataset)
    assert result.rejects.column_names[:3] == ["id", "stage", "reason"]
    assert dict(zip(result.rejects["id"], result.rejects["reason"]))["d06"] == "unparsed_score"
    assert isinstance(result.distilled, datasets.Dataset) and len(result.distilled) == 3  # d09's distill failed
    assert result.stats["outputs"] == {"sft": 4, "distilled": 3, "rejects": len(result.rejects)}
    assert result.funnel[0] == ("documents_in", 13) and result.funnel[-1] == ("exported", 4)
    assert isinstance(result.config, RunConfig) and result.card.name == "README.md"
    assert "4 pairs" in repr(result)
    # the rows were written once as the run's input, and a second run resumes from it
    assert Path(result.config.input.path).parent == tmp_path / "run" / "inputs"
    again = fake()
    assert run(ROWS, tmp_path / "run", again).stats == result.stats and again.received == []
    # other rows into the same run dir: the input changed, so the run dir says so
    with pytest.raises(RunConflict, match="changed"):
        run(ROWS[:5], tmp_path / "run")


def test_run_on_a_dataset_a_path_and_without_out(tmp_path, monkeypatch):
    by_list = run(ROWS, tmp_path / "list")
    by_dataset = run(datasets.Dataset.from_list(ROWS), tmp_path / "dataset")
    assert by_dataset.dataset.to_list() == by_list.dataset.to_list()
    path = tmp_path / "docs.jsonl"
    datasets.Dataset.from_list(ROWS).to_json(path)
    by_path = run(path, tmp_path / "path")
    assert by_path.dataset["response"] == by_list.dataset["response"]
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the new temporary run dir goes with the test's
    temporary = run(ROWS[:4], None)
    assert temporary.path.parent == tmp_path and temporary.path.name.startswith("backforth-run-")
    assert temporary.path.is_dir() and (temporary.path / "stats.json").is_file()
    with pytest.raises(UserError, match="DatasetDict"):
        run(datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS)}), tmp_path / "dd")
    with pytest.raises(UserError, match="item 0 is a str"):
        run(["just text"], tmp_path / "str")


def test_until_stops_and_a_stage_can_be_read(tmp_path):
    result = run(ROWS, tmp_path / "run", until="backtranslate")
    assert result.stopped_after == "backtranslate" and "stopped after stage backtranslate" in repr(result)
    with pytest.raises(UserError, match="stopped after stage backtranslate"):
        result.dataset
    rows = result.stage("backtranslate")
    assert isinstance(rows, datasets.Dataset) and rows.column_names[:4] == ["id", "status", "stage", "reason"]
    assert sorted(set(rows["status"])) == ["done", "rejected"] and "instruction" in rows.column_names
    assert backforth.Result(tmp_path / "run").stage("prepare").num_rows == 13


def test_a_users_stage_through_the_api(tmp_path):
    engine = FakeEngine(headline_responder, context_length=CONTEXT)
    result = run(ROWS, tmp_path / "run", engine, after={"curate": Headline()})
    assert dict(result.funnel)["headlined"] == 5 and "headline" in result.stats["stages"]
    assert "short_headline" in result.rejects["reason"]


def test_a_library_call_prints_nothing_and_logs(tmp_path, capfd, caplog):
    """No handler configured: nothing on stdout or stderr, even with runner.progress on (not a
    terminal: the progress goes to the `backforth.progress` logger). The messages are log records."""
    logger = logging.getLogger("backforth")
    assert not [h for h in logger.handlers if not isinstance(h, logging.NullHandler)]
    run(ROWS, tmp_path / "run")
    caplog.set_level(logging.INFO, logger="backforth")
    run(ROWS, tmp_path / "run")
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err == ""
    said = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("resuming: prepare 13/13 done") for m in said)
    assert any(r.name == "backforth.progress" and "rows" in r.getMessage() for r in caplog.records)


def test_load_config_takes_names_paths_dicts_and_configs(tmp_path):
    demo = backforth.load_config("demo")
    assert Path(demo.input.path).is_file() and demo.models.scorer.model == "embedded:qwen2.5-coder-1.5b"
    assert backforth.load_config("demo", ["curate.threshold=4"]).curate.threshold == 4
    assert backforth.load_config("demo", {"curate.threshold": 3, "variant": "filter"}).variant == "filter"
    assert backforth.load_config({"curate": {"threshold": 2}}).curate.threshold == 2
    assert backforth.load_config(demo, {"rewrite.max_tokens": 9}).rewrite.max_tokens == 9
    assert demo.rewrite.max_tokens == 512  # not changed in place
    assert backforth.load_config().variant == "filter+rewrite"
    (tmp_path / "docs.jsonl").write_text("")
    (tmp_path / "c.yaml").write_text("input: {path: docs.jsonl}\n")
    assert backforth.load_config(tmp_path / "c.yaml").input.path == str(tmp_path / "docs.jsonl")
    with pytest.raises(UserError, match="not a bundled config"):
        backforth.load_config("dmeo")


def test_try_stage_runs_one_stage_on_a_few_rows():
    engine = fake()
    pairs = [{"id": "d01", "instruction": "What is subject 1?", "text": "Subject 1 is ..."},
             {"id": "d05", "instruction": "What is subject 5?", "text": "Subject 5 is ..."}]
    out = backforth.try_stage("curate", pairs, model=engine)
    assert [(r["id"], r["status"], r.get("reason"), r["score"]) for r in out] == [
        ("d01", "done", None, 5), ("d05", "rejected", "low_score", 3)]
    assert out[0]["score_raw"].endswith("Score: 5") and out[0]["curate_prompt"].startswith("curate_answer@")
    logprobs = backforth.try_stage("curate", pairs[:1], model=engine, overrides={"curate.method": "logprobs"})
    assert logprobs[0]["score_method"] == "logprobs"
    mine = backforth.try_stage(Headline(), pairs, model=FakeEngine(headline_responder))
    assert [r["headline"] for r in mine] == ["Everything about is d01", "Everything about is d05"]
    with pytest.raises(UserError, match="not a stage of the method"):
        backforth.try_stage("curation", pairs, model=engine)
    assert engine.closed == 0  # a given engine stays open


def test_the_cli_is_a_client_of_the_api():
    import inspect

    from backforth import cli

    source = inspect.getsource(cli._run)
    assert "from .api import run" in source and "workflows" not in inspect.getsource(cli)
    assert "backforth" in sys.modules


def test_a_jsonl_file_of_any_rows_reads_as_a_dataset(tmp_path):
    from backforth.result import jsonl_dataset

    path = tmp_path / "rejects.jsonl"
    path.write_text("")
    assert jsonl_dataset(path).column_names == ["id", "stage", "reason"]  # no rejects: the columns all have
    path.write_text('{"id": "a", "raw": {"1": 0.5}, "n": 1, "x": 1.5}\n{"id": "b", "raw": "text", "n": null, "x": 2}\n')
    rows = jsonl_dataset(path).to_list()
    assert rows == [{"id": "a", "raw": '{"1": 0.5}', "n": 1, "x": 1.5}, {"id": "b", "raw": '"text"', "n": None, "x": 2.0}]


def test_a_run_that_exports_nothing_has_an_empty_dataset(tmp_path):
    result = backforth.run(None, rows=ROWS[:4], out=tmp_path / "run", engine_factory=lambda _m: fake(),
                           overrides={**QUIET, "curate.threshold": 5, "prepare.min_words": 1000})
    assert result.stats["outputs"]["sft"] == 0 and len(result.dataset) == 0
    assert {"instruction", "response"} <= set(result.dataset.column_names) and len(result.rejects) == 4


def test_a_users_stage_with_a_model_role_of_its_own(tmp_path):
    """`models` gives a role the config has not: the user's stage asks that model, and the card names it."""
    editor = Headline()
    editor.role = "editor"
    seen = []

    def factory(model_cfg):
        seen.append(model_cfg.model)
        return FakeEngine(headline_responder, context_length=CONTEXT, name=model_cfg.model)

    result = backforth.run(None, rows=ROWS, out=tmp_path / "run", overrides=QUIET, engine_factory=factory,
                           after={"curate": editor}, models={"editor": {"engine": "openai", "model": "my-editor"}})
    assert "my-editor" in seen and dict(result.funnel)["headlined"] == 5
    assert "| headline | editor | openai: my-editor |" in result.card.read_text()

"""`backforth experiment` on a fake engine and a tiny random model: shared work done once, equal sizes
on the same instructions, a table that matches its judgement files, resume, and redoing only what a
changed setting touches. Training is real (trl/peft on a 2-layer model with SmolLM2's tokenizer)."""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from pathlib import Path

import pytest
from fake_engine import FakeEngine, section, stage_of

from backforth.engines.base import Request, Result
from backforth.evaluate.compare import compare
from backforth.experiment import load_experiment, run_experiment
from backforth.experiment.datasets import read

N_DOCS = 12


def doc(i: int) -> str:
    return f"Document {i} explains topic {i}. " + " ".join(f"fact{i}x{j}" for j in range(45))


def kind(req: Request) -> str:
    text = req.messages[-1]["content"] if req.messages else req.prompt
    if "Check each answer" in text or "Check each request" in text:
        return "judge"
    if text.endswith("Answer in the style of an AI Assistant.") and "Rewrite the draft" not in text:
        return "answer"
    return stage_of(req)


def responder(req: Request, model: str = "") -> Result | str:
    k, key = kind(req), req.key
    if k == "judge":  # prefers the longer answer (or instruction), whichever slot it is in
        text = req.messages[-1]["content"]
        what = "Answer" if "Check each answer" in text else "Request"
        a = re.search(rf"\n{what} A:\n(.*?)\n\n{what} B:\n", text, re.S).group(1)
        b = re.search(rf"\n{what} B:\n(.*?)\n\nCheck each ", text, re.S).group(1)
        p = 0.8 if len(a) > len(b) else 0.2
        return Result(text="A", finish_reason="stop", choice_logprobs={"A": math.log(p), "B": math.log(1 - p)})
    if k == "answer":  # each model answers in its own way (the reference: the base model, briefly)
        return f"An answer by {Path(model).name} to {key}" + " and more" * (len(Path(model).name) % 4)
    if k == "backtranslate":
        return f"What does document {int(key[1:])} explain about its topic?"
    if k == "curate":  # every third document scores 3: `filter` keeps the rest
        return "Fine.\nScore: 3" if int(key[1:]) % 3 == 0 else "Direct and complete.\nScore: 5"
    if k == "rewrite":
        return "Rewritten: " + " ".join(section(req.messages[0]["content"], "<draft>", "</draft>").split()[:8])
    return "A distilled answer without the document."


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> Path:
    """A 2-layer random model with SmolLM2's tokenizer: real training, in seconds."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from backforth.engines.models import resolve_model_dir

    tok = AutoTokenizer.from_pretrained(resolve_model_dir("embedded:smollm2-135m")[0])
    folder = tmp_path_factory.mktemp("tiny")
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                 num_attention_heads=2, num_key_value_heads=1)).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def experiment(tmp: Path, tiny_base: Path, **over) -> Path:
    corpus = tmp / "docs.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"d{i:02d}", "text": doc(i)}) + "\n" for i in range(N_DOCS)))
    evals = tmp / "eval.jsonl"
    evals.write_text("".join(json.dumps({"id": f"q{i}", "instruction": f"Question {i}?"}) + "\n" for i in range(3)))
    cfg = {
        "run": {"input": {"path": str(corpus)}, "runner": {"progress": False, "chunk_size": 4},
                **{s: {"enabled": False} for s in ("dedup_documents", "dedup_instructions", "decontaminate", "grounding")}},
        "datasets": ["filter", "rewrite", "filter+rewrite", "distill"],
        "train": {"base_model": str(tiny_base), "max_steps": 1, "per_device_batch_size": 2, "small_data_batch_size": 2,
                  "max_length": 256, "threads": 1, "bf16": False},
        "eval": {"eval_set": str(evals), "max_tokens": 16},
        "judge": {"model": {"engine": "openai", "model": "fake-judge"}, "method": "logprobs"},
    }
    for k, v in over.items():
        cfg[k] = v
    path = tmp / "exp.yaml"
    path.write_text(json.dumps(cfg))
    return path


class Engines:
    """One fake engine per model (answers differ by model), every request recorded in one place."""

    def __init__(self, fail_after: int | None = None):
        self.received: list[Request] = []
        self.fail_after = fail_after

    def __call__(self, model_cfg) -> FakeEngine:
        outer = self

        class Recording(FakeEngine):
            def generate(self, requests):
                if outer.fail_after is not None and len(outer.received) + len(requests) > outer.fail_after:
                    raise KeyboardInterrupt
                outer.received.extend(requests)
                return super().generate(requests)

        return Recording(lambda req: responder(req, model_cfg.model), name=model_cfg.model)

    def reset_counts(self) -> None:
        self.received.clear()


def run(path: Path, out: Path, engines: Engines, sets=None):
    return run_experiment(load_experiment(path, sets), out, engine_factory=engines)


@pytest.fixture(autouse=True, scope="module")
def own_judge_cache(tmp_path_factory):
    """The judge's cache in a folder of this module's, not the user's ~/.cache (the converted weights stay shared)."""
    from backforth.evaluate import judge

    mp = pytest.MonkeyPatch()
    path = tmp_path_factory.mktemp("cache") / judge.CACHE_FILE
    mp.setattr(judge, "default_cache_path", lambda: path)
    yield
    mp.undo()


@pytest.fixture(scope="module")
def done(tmp_path_factory, tiny_base):
    tmp = tmp_path_factory.mktemp("exp")
    engine = Engines()
    out = tmp / "out"
    result = run(experiment(tmp, tiny_base), out, engine)
    return tmp, out, engine, result


def test_every_dataset_is_derived_from_one_run_at_equal_size(done):
    tmp, out, engine, result = done
    sets = {n: read(out / "datasets" / f) for n, f in (("filter", "filter.jsonl"), ("rewrite", "rewrite.jsonl"),
                                                      ("filter+rewrite", "filter_plus_rewrite.jsonl"),
                                                      ("distill", "distill.jsonl"))}
    sizes = {n: len(v) for n, v in sets.items()}
    assert len(set(sizes.values())) == 1 and sizes["filter"] == 8  # the 8 of 12 scored 5: the smallest set
    ids = {n: {r["id"] for r in v} for n, v in sets.items()}
    assert ids["filter"] == ids["filter+rewrite"] == ids["distill"]  # the same instructions...
    assert ids["rewrite"] != ids["filter"]  # rewrite (no filter) samples its own pool, not the kept pairs
    responses = {n: {r["id"]: r["response"] for r in v} for n, v in sets.items()}
    some = sorted(ids["filter"])[0]
    assert responses["filter"][some].startswith("Document") and responses["filter+rewrite"][some].startswith("Rewritten")
    assert responses["distill"][some] == "A distilled answer without the document."  # ...different responses
    # shared work done once: every pipeline request was sent once, for every document
    pipeline = Counter((kind(r), r.key) for r in engine.received if kind(r) in ("backtranslate", "curate", "rewrite"))
    assert max(pipeline.values()) == 1
    assert sum(k == "rewrite" for k, _ in pipeline) == N_DOCS  # `rewrite` needs every pair rewritten, once
    assert sum(kind(r) == "distill" for r in engine.received) == N_DOCS


def test_the_table_equals_one_computed_from_the_judgement_files(done):
    tmp, out, engine, result = done
    names = ["filter", "rewrite", "filter+rewrite", "distill"]
    files = ["filter", "rewrite", "filter_plus_rewrite", "distill"]
    again = compare([(n, out / "judgements" / f"{f}.jsonl", 8) for n, f in zip(names, files)])
    assert [{k: r[k] for k in ("dataset", "win_rate", "standard_error", "n")} for r in result["table"]] == \
        [{k: r[k] for k in ("dataset", "win_rate", "standard_error", "n")} for r in again]
    md = (out / "table.md").read_text()
    assert "| filter+rewrite | 8 |" in md and "two standard errors" in md
    assert (out / "table.csv").read_text().startswith("dataset,size,win_rate")
    assert (out / "report.html").is_file() and "Win rates" in (out / "report.html").read_text()
    judged = [json.loads(line) for line in open(out / "judgements" / "filter.jsonl")]
    assert len(judged) == 3 and all(len(r["preference_by_order"]) == 2 for r in judged)  # both orders


def test_a_changed_judge_setting_redoes_only_judging_and_the_table(done, tiny_base):
    tmp, out, engine, _result = done
    trained = {p: p.stat().st_mtime_ns for p in (out / "train").rglob("train_stats.json")}
    engine.reset_counts()
    run(tmp / "exp.yaml", out, engine, ["judge.method=generate"])
    assert engine.received and {kind(r) for r in engine.received} == {"judge"}  # no pipeline, no answers
    assert {p: p.stat().st_mtime_ns for p in (out / "train").rglob("train_stats.json")} == trained
    judged = [json.loads(line) for line in open(out / "judgements" / "filter.jsonl")]
    assert all(r["judge_method"] == "generate" for r in judged)
    assert "judge_method" in (out / "judgements" / "filter.jsonl").read_text()
    assert json.loads((out / "steps.json").read_text())["judge filter"]["fields"]["judge"]["method"] == "generate"
    run(tmp / "exp.yaml", out, engine)  # back to the config's judge (from the cache), for the tests after this one


def test_resume_after_a_stop_mid_step(tmp_path, tiny_base):
    path = experiment(tmp_path, tiny_base)
    out = tmp_path / "out"
    engine = Engines(fail_after=2 * N_DOCS + 2)  # stops inside the pipeline's curate stage
    with pytest.raises(KeyboardInterrupt):
        run(path, out, engine)
    before = Counter((kind(r), r.key) for r in engine.received)
    engine.fail_after = None
    engine.reset_counts()
    result = run(path, out, engine)
    again = Counter((kind(r), r.key) for r in engine.received)
    assert not {k for k in before if k[0] in ("backtranslate", "curate")} & set(again)  # nothing paid twice
    assert result["table"] and (out / "table.md").is_file()
    steps = json.loads((out / "steps.json").read_text())
    assert all(s["status"] == "done" for s in steps.values())


# ------------------------------------------------------------------ the response-level table (issue 28)


def test_the_response_table_judges_shared_instructions_before_any_fine_tune(done):
    tmp, out, engine, result = done
    steps = list(json.loads((out / "steps.json").read_text()))
    assert steps.index("response table") < min(i for i, s in enumerate(steps) if s.startswith("train"))
    rows = {r["comparison"]: r for r in csv_rows(out / "response_table.csv")}
    # the kept pairs share their 8 instructions: document, rewrite and distilled answer, head to head
    for name in ("filter+rewrite vs filter", "distill vs filter", "distill vs filter+rewrite"):
        assert rows[name]["table"] == "responses" and rows[name]["n"] == "8"
    # the fake judge prefers the longer side: documents (long) beat the 8-word rewrites
    assert float(rows["filter+rewrite vs filter"]["win_rate"]) == pytest.approx(20.0)
    assert float(rows["filter+rewrite vs filter"]["avg_length_second"]) > float(rows["filter+rewrite vs filter"]["avg_length_first"])
    # rewrite and filter+rewrite hold the same rewrite for the instructions they share: counted, not judged
    assert "rewrite vs filter+rewrite" not in rows
    md = (out / "response_table.md").read_text()
    assert "identical responses" in md and "| Comparison | Win rate (%) | LC win rate (%) |" in md
    judged = [json.loads(line) for line in open(out / "response_table" / "responses" / "distill__vs__filter.jsonl")]
    assert len(judged) == 8 and all(len(r["preference_by_order"]) == 2 for r in judged)  # both orders


def test_instruction_quality_compares_the_sources_that_do_not_share_instructions(done):
    tmp, out, engine, result = done
    rows = {r["comparison"]: r for r in csv_rows(out / "response_table.csv") if r["table"] == "instructions"}
    kept = "filter = filter+rewrite = distill"  # one source: the same instructions
    assert set(rows) == {f"rewrite vs {kept}", f"seed vs {kept}", "seed vs rewrite"}
    assert rows[f"seed vs {kept}"]["n"] == "8"  # the smaller side's count
    assert "Instruction quality (rubric: clear, self-contained, answerable, useful)" in (out / "response_table.md").read_text()


def test_a_judge_that_fails_its_check_is_named_in_the_table(done):
    tmp, out, engine, result = done
    check = json.loads((out / "judge_check" / "judge_check.json").read_text())
    # a judge that prefers the longer side: raw documents are mostly longer than their rewrites
    assert check["kinds"]["document_vs_rewrite"]["passed"] is False
    assert check["kinds"]["document_vs_rewrite"]["agreement"] < 0.5
    md = (out / "response_table.md").read_text()
    assert "FAILED, this judge cannot tell these apart" in md
    assert "✗ raw document vs its faithful rewrite" in md and "not which data is better" in md
    row = {r["comparison"]: r for r in csv_rows(out / "response_table.csv")}["filter+rewrite vs filter"]
    assert row["check"] == "document_vs_rewrite" and row["check_passed"] == "False"


def test_the_report_shows_both_tables_and_says_they_answer_different_questions(done):
    tmp, out, engine, result = done
    page = (out / "report.html").read_text()
    assert "Response level: the data" in page and "Fine-tuned: the models" in page
    assert "answer different questions" in page
    assert result["response_table"] == str(out / "response_table.md")


def test_a_changed_response_table_setting_redoes_only_that_step(done):
    tmp, out, engine, _result = done
    engine.reset_counts()
    before = json.loads((out / "steps.json").read_text())
    run(tmp / "exp.yaml", out, engine, ["response_table.limit=3"])
    steps = json.loads((out / "steps.json").read_text())
    assert engine.received == []  # every judgement came from the cache
    assert {n for n in steps if steps[n]["fingerprint"] != before[n]["fingerprint"]} == {"response table"}
    rows = {r["comparison"]: r for r in csv_rows(out / "response_table.csv")}
    assert rows["distill vs filter"]["n"] == "3"
    run(tmp / "exp.yaml", out, engine)  # back to the default, for the tests after this one


def test_train_none_still_makes_the_response_table(tmp_path, tiny_base):
    path = experiment(tmp_path, tiny_base, train="none", response_table={"instructions": False, "judge_check": False})
    result = run(path, tmp_path / "out", Engines())
    assert result["table"] is None and result["response_table"]
    md = (tmp_path / "out" / "response_table.md").read_text()
    assert "Judge check: not run" in md and "Instruction quality" not in md
    assert "distill vs filter+rewrite" in md
    assert "answer different questions" in (tmp_path / "out" / "report.html").read_text()


def csv_rows(path: Path) -> list[dict]:
    import csv

    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))

"""The learned pre-filter with a fake engine: the sample first, the classifier, the rest filtered,
the audit's recall estimate, resume, and the inputs that cannot teach a classifier."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from benchmark_scripts import load_benchmark as load_script
from fake_engine import FakeEngine, section, stage_of

from backforth import embedding
from backforth.config import build_config
from backforth.pipeline.prefilter_model import recall_estimate, threshold_for_recall, wilson
from backforth.pipeline.store import StageStore
from backforth.workflows import run as run_workflow


def good(i: int) -> bool:
    return i % 10 < 3  # 30% of the documents are worth keeping


def doc(i: int, keepable: bool | None = None) -> str:
    keepable = good(i) if keepable is None else keepable
    topic = "recipe: how to bake bread with flour and water" if keepable else "cookie banner accept all subscribe now"
    words = " ".join(f"w{i}x{j}" for j in range(40))
    return f"Page {i}. {topic}. {words} {topic}."


class KeywordEmbedder:
    """A stub sentence embedder: the logic of the pre-filter, not MiniLM, is under test."""

    name = "keywords"

    def embed(self, texts, batch_size=64):
        rows = [[t.count("recipe"), t.count("cookie"), (hash(t) % 7) / 7.0] for t in texts]
        return np.asarray(rows, dtype=np.float32)


@pytest.fixture(autouse=True)
def stub_embedder():
    embedding._LOADED["keywords"] = embedding.Embedder.__new__(embedding.Embedder)
    embedding._LOADED["keywords"] = KeywordEmbedder()
    yield
    embedding._LOADED.pop("keywords", None)


def responder(req):
    stage = stage_of(req)
    text = "\n".join(m["content"] for m in req.messages)
    if stage == "backtranslate":
        return f'Sure! Here is the instruction:\n"What does page {req.key} say about its subject, in detail?"'
    if stage == "curate":
        return "Great.\nScore: 5" if "recipe" in text else "Boilerplate.\nScore: 2"
    return "answer"


def write_docs(path: Path, n: int, keepable=None) -> Path:
    with open(path, "w") as fh:
        for i in range(n):
            fh.write(json.dumps({"id": f"p{i:03d}", "text": doc(i, keepable)}) + "\n")
    return path


def config(path: Path, **prefilter):
    pf = {"enabled": True, "sample": 60, "audit": 0.2, "embedder": "keywords", **prefilter}
    return build_config({"input": {"path": str(path)}, "variant": "filter", "runner": {"progress": False, "chunk_size": 8},
                         "distill": {"enabled": False}, "prefilter": pf,
                         **{s: {"enabled": False} for s in ("dedup_documents", "dedup_instructions", "decontaminate")}})


def run(cfg, out, engine):
    return run_workflow(cfg, out, engine_factory=lambda _m: engine, check=False)


def read(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_sample_then_classifier_then_the_rest(tmp_path):
    docs = write_docs(tmp_path / "docs.jsonl", 200)
    out, engine = tmp_path / "run", FakeEngine(responder)
    stats = run(config(docs), out, engine)
    pf = stats["stages"]["prefilter"]
    assert pf["sample"] == 60 and pf["in"] == 200
    metrics = json.loads((out / "prefilter" / "metrics.json").read_text())
    assert metrics["status"] == "trained" and (out / "prefilter" / "classifier.joblib").is_file()
    assert metrics["held_out_recall"] >= 0.9 and metrics["sample"] == 60 and metrics["embedder"] == "keywords"
    assert [c["target_recall"] for c in metrics["curve_held_out"]][:2] == [0.5, 0.6]
    rejects = read(out / "rejects.jsonl")
    unlikely = [r for r in rejects if r["reason"] == "prefilter_unlikely"]
    assert unlikely and all(r["stage"] == "prefilter" and r["prefilter_p"] < metrics["threshold"] for r in unlikely)
    assert all(not good(int(r["id"][1:])) for r in unlikely)  # the keywords separate the classes
    # every document ends once in sft or rejects; the skipped ones were never sent to a model
    sft = read(out / "sft.jsonl")
    assert sorted(r["id"] for r in sft + rejects) == [f"p{i:03d}" for i in range(200)]
    bt = set(engine.keys_for("backtranslate"))
    assert not bt & {r["id"] for r in unlikely} and len(bt) == len(engine.keys_for("backtranslate"))
    assert len(bt) == 200 - len(unlikely)
    assert {r["id"] for r in sft} == {f"p{i:03d}" for i in range(200) if good(i)}  # nothing kept was lost
    audit = pf["audit"]
    assert audit["audited"] == pf["audited"] > 0 and audit["kept_among_audited"] == 0
    assert audit["recall"] == 1.0 and audit["recall_ci95"][1] == 1.0 and audit["recall_ci95"][0] < 1.0
    assert pf["classifier"]["threshold"] == metrics["threshold"]
    card = (out / "README.md").read_text()
    assert "Pre-filter: a classifier on document embeddings" in card and "Recall estimated from the audit: 1.0" in card
    assert stats["tokens"]["per_exported_pair"] > 0


def test_a_kill_in_the_second_part_resumes_without_paying_twice(tmp_path):
    docs = write_docs(tmp_path / "docs.jsonl", 200)
    whole = run(config(docs), tmp_path / "whole", FakeEngine(responder))
    out = tmp_path / "run"
    engine = FakeEngine(responder, fail_after=90, fail_stage="backtranslate")  # the sample is 60: dies in part two
    with pytest.raises(KeyboardInterrupt):
        run(config(docs), out, engine)
    assert (out / "prefilter" / "metrics.json").is_file()
    done = set(StageStore(out / "stages" / "backtranslate").ids())
    assert len(done) >= 60
    engine.fail_after = None
    engine.reset_counts()  # the chunk in flight at the kill is sent again; nothing finished is
    stats = run(config(docs), out, engine)
    assert max(engine.by_stage_key.values()) == 1 and not done & set(engine.keys_for("backtranslate"))
    assert read(out / "sft.jsonl") == read(tmp_path / "whole" / "sft.jsonl")
    assert stats["stages"]["prefilter"]["audit"] == whole["stages"]["prefilter"]["audit"]
    assert stats["tokens"] == whole["tokens"]


def test_a_kill_while_the_sample_is_scored_resumes_then_trains(tmp_path):
    docs = write_docs(tmp_path / "docs.jsonl", 120)
    out = tmp_path / "run"
    engine = FakeEngine(responder, fail_after=30, fail_stage="curate")  # half of the sample scored
    with pytest.raises(KeyboardInterrupt):
        run(config(docs), out, engine)
    assert not (out / "prefilter" / "metrics.json").exists()
    assert len(list(StageStore(out / "stages" / "prefilter").ids())) == 60  # the others wait
    done = set(StageStore(out / "stages" / "curate").ids())
    engine.fail_after = None
    engine.reset_counts()
    stats = run(config(docs), out, engine)
    assert max(engine.by_stage_key.values()) == 1 and not done & set(engine.keys_for("curate"))
    assert stats["stages"]["prefilter"]["in"] == 120


@pytest.mark.parametrize("keepable, says", [(True, "every pair of the sample"), (False, "has no kept pair")])
def test_a_sample_that_cannot_teach_turns_it_off(tmp_path, caplog, keepable, says):
    docs = write_docs(tmp_path / "docs.jsonl", 100, keepable)
    out = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="backforth"):
        stats = run(config(docs), out, FakeEngine(responder))
    assert says in caplog.text and "without the pre-filter" in caplog.text
    metrics = json.loads((out / "prefilter" / "metrics.json").read_text())
    assert metrics["status"] == "off" and says in metrics["reason"]
    assert stats["stages"]["prefilter"]["kept"] == 100 and stats["stages"]["backtranslate"]["in"] == 100
    assert "Pre-filter: off for this run" in (out / "README.md").read_text()


def test_an_embedder_that_does_not_load_turns_it_off(tmp_path, caplog):
    docs = write_docs(tmp_path / "docs.jsonl", 100)
    out = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="backforth"):
        stats = run(config(docs, embedder=str(tmp_path / "no-such-model")), out, FakeEngine(responder))
    assert "could not be loaded" in caplog.text
    assert json.loads((out / "prefilter" / "metrics.json").read_text())["status"] == "off"
    assert stats["stages"]["backtranslate"]["in"] == 100 and stats["outputs"]["sft"] == 30


def test_a_variant_without_a_scorer_is_refused(tmp_path):
    docs = write_docs(tmp_path / "docs.jsonl", 10)
    cfg = config(docs)
    cfg.variant = "rewrite"
    from backforth.errors import UserError

    with pytest.raises(UserError, match="no scorer"):
        run(cfg, tmp_path / "run", FakeEngine(responder))


def test_threshold_wilson_and_recall_estimate():
    p = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05])
    y = np.array([1, 0, 1, 0, 1, 0, 0, 1, 0, 0])
    assert threshold_for_recall(p, y, 0.5) == 0.7 and threshold_for_recall(p, y, 0.75) == 0.5
    assert threshold_for_recall(p, y, 1.0) == 0.2
    lo, hi = wilson(0, 20)
    assert lo == 0 and 0.15 < hi < 0.17
    lo, hi = wilson(5, 10)
    assert lo < 0.5 < hi and abs((0.5 - lo) - (hi - 0.5)) < 1e-9
    est = recall_estimate(kept_above=90, kept_audited=1, audited=10, below=100)
    assert est["recall"] == round(90 / (90 + 10), 4)
    assert est["recall_ci95"][0] < est["recall"] < est["recall_ci95"][1]
    assert recall_estimate(5, 0, 0, 3)["recall"] is None


def load_benchmark():
    return load_script("prefilter")


def test_the_benchmark_labels_a_finished_run_and_prints_its_curve(tmp_path, capsys):
    docs = write_docs(tmp_path / "docs.jsonl", 80)
    out = tmp_path / "run"
    cfg = config(docs)
    cfg.prefilter.enabled = False
    stats = run(cfg, out, FakeEngine(responder))
    bench = load_benchmark()
    labels = bench.labels_from_run(out)
    assert len(labels) == 80 and sum(r["kept"] for r in labels) == 24 == stats["outputs"]["sft"]
    assert all(r["exported"] == r["kept"] for r in labels)  # variant filter: a kept pair is exported
    assert all(set(r["tokens"]) == {"page_kind", "backtranslate", "curate"} and all(v > 0 for v in r["tokens"].values())
               for r in labels)
    assert sum(sum(r["tokens"].values()) for r in labels) == stats["tokens"]["total_tokens"]
    lines = []
    chosen = bench.report(labels, KeywordEmbedder().embed, folds=4, repeats=2, out=lines.append)
    assert lines[-1] == f"prefilter: tokens per exported pair ratio {chosen['ratio']:.3f} at recall {chosen['recall']:.3f}"
    assert chosen["recall"] == 1.0 and 0 < chosen["ratio"] < 0.6 and chosen["skipped"] > 0.5
    # the command line: --from-run, writing the labels file that --labels reads back
    labels_file = tmp_path / "labels.jsonl"
    embedding._LOADED["keywords"] = KeywordEmbedder()
    assert bench.main(["--from-run", str(out), "--write-labels", str(labels_file), "--embedder", "keywords",
                       "--folds", "4", "--repeats", "1"]) == 0
    assert bench.main(["--labels", str(labels_file), "--embedder", "keywords", "--folds", "4", "--repeats", "1"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[0] == f"wrote 80 labels to {labels_file}" and printed[-1].startswith("prefilter: tokens per exported pair ratio")


def test_the_bundled_minilm_learns_the_scorer_on_real_embeddings(tmp_path):
    docs = write_docs(tmp_path / "docs.jsonl", 150)
    out, engine = tmp_path / "run", FakeEngine(responder)
    stats = run(config(docs, embedder=None, sample=50), out, engine)
    clf = stats["stages"]["prefilter"]["classifier"]
    assert clf["status"] == "trained" and clf["embedder"] == "all-MiniLM-L6-v2" and clf["auc_held_out"] > 0.9
    assert stats["stages"]["prefilter"]["rejected_by_reason"]["prefilter_unlikely"] > 40
    assert stats["outputs"]["sft"] == 45  # every page worth keeping is still exported


def test_a_run_of_what_the_prefilter_skipped_labels_the_rest_of_the_corpus(tmp_path):
    docs = write_docs(tmp_path / "docs.jsonl", 200)
    first, second = tmp_path / "run", tmp_path / "skipped-run"
    stats = run(config(docs), first, FakeEngine(responder))
    skipped = stats["stages"]["prefilter"]["rejected_by_reason"]["prefilter_unlikely"]
    bench = load_benchmark()
    skipped_file = tmp_path / "skipped.jsonl"
    assert bench.main(["--skipped-to", str(first), str(skipped_file)]) == 0
    rows = read(skipped_file)
    assert len(rows) == skipped > 0 and rows == [r for r in read(docs) if r["id"] in {x["id"] for x in rows}]
    cfg = config(skipped_file)
    cfg.prefilter.enabled = False
    run(cfg, second, FakeEngine(responder))
    labels = [r for out in (first, second) for r in bench.labels_from_run(out)]
    assert sorted(r["id"] for r in labels) == [f"p{i:03d}" for i in range(200)]  # every document, once
    assert {r["id"] for r in labels if r["kept"]} == {f"p{i:03d}" for i in range(200) if good(i)}

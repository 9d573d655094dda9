"""`analyze` on small synthetic run dirs whose answers are known in advance.

A hashed bag-of-words embedder stands in for MiniLM (the metrics themselves are tested on the real
embedder in test_metrics.py): identical word sets give identical features, disjoint vocabularies
give disjoint ones, and nothing is downloaded or loaded.
"""

from __future__ import annotations

import json
import random
import re
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import typer
from typer.testing import CliRunner

from backforth.analysis.analyze import RunDirError, analyze, parse_tags, tag_texts
from backforth.engines.base import InProcessEngine, Request, Result
from backforth.pipeline.store import RunStore

COOKING = ("onion butter simmer knead dough bake oven whisk eggs garlic roast carrots season salt pepper "
           "saute pan boil pasta sauce stir flour sugar chop parsley marinate grill crust").split()
SPACE = ("star galaxy orbit planet comet nebula telescope pulsar quasar asteroid gravity moon eclipse "
         "supernova light year cosmic dust spectrum redshift horizon black hole crater ring").split()


def sentences(vocab: list[str], n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(vocab) for _ in range(14)).capitalize() + "." for _ in range(n)]


class HashEmbedder:
    """Bag of words hashed into 256 dimensions, L2-normalised (what `metrics.Embedder.embed` returns)."""

    name = "hash-bow-256"

    def __init__(self) -> None:
        self.calls = 0

    def embed(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        out = np.zeros((len(texts), 256), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                out[i, zlib.crc32(word.encode()) % 256] += 1.0
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


class NoEmbedder:
    name = "must-not-be-used"

    def embed(self, texts):
        raise AssertionError("tiny sets must not be embedded")


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def make_run(root: Path, documents: list[str], rewrites: list[str], distilled: list[str]) -> Path:
    """A run dir shaped like `backforth run` writes it: stage shards, sft, distilled, stats."""
    n = len(documents)
    base = [{"id": f"d{i}", "_index": i, "text": documents[i], "instruction": f"Question {i} about {documents[i][:20]}?"}
            for i in range(n)]
    done = lambda rows: [dict(r, _status="done") for r in rows]  # noqa: E731
    run = RunStore(root)
    run.stage("prepare").write(done(base))
    run.stage("backtranslate").write(done(base))
    run.stage("curate").write(done([dict(r, score=5) for r in base]))
    rewritten = [dict(r, response=rewrites[i]) for i, r in enumerate(base) if i < len(rewrites)]
    run.stage("rewrite").write(done(rewritten))
    run.stage("distill").write(
        done([dict(r, distilled=distilled[i] if i < len(distilled) else None) for i, r in enumerate(rewritten)]))
    write_jsonl(root / "sft.jsonl", [{"id": r["id"], "instruction": r["instruction"], "response": r["response"]}
                                     for r in rewritten])
    pq.write_table(pa.Table.from_pylist([{"id": r["id"], "instruction": r["instruction"], "response": d}
                                         for r, d in zip(rewritten, distilled)]), root / "distilled.parquet")
    stats = {"variant": "filter+rewrite",
             "funnel": {"documents_in": n, "prepared": n, "kept": n, "rewritten": len(rewrites), "exported": len(rewrites)},
             "stages": {"curate": {"rejected_by_reason": {"low_score": 3}, "score_distribution": {"4": 3, "5": n}},
                        "rewrite": {"rejected_by_reason": {}}},
             "outputs": {"sft": len(rewrites)}}
    (root / "stats.json").write_text(json.dumps(stats))
    return root


def by_name(result: dict) -> dict[str, dict]:
    return {c["comparison"].split(" (")[0]: c for c in result["comparisons"]}


def test_same_distribution_scores_high_and_disjoint_sets_low(tmp_path):
    run = make_run(tmp_path / "run", documents=sentences(SPACE, 40, seed=2), rewrites=sentences(COOKING, 40, seed=1),
                   distilled=sentences(COOKING, 40, seed=3))
    result = analyze(run, embedder=HashEmbedder(), tokenizer=None)
    rows = by_name(result)
    assert rows["distilled vs rewritten"]["mauve"] > 0.9 and rows["distilled vs rewritten"]["note"] is None
    assert rows["distilled vs rewritten"]["accuracy"] < 0.75
    assert rows["distilled vs documents"]["mauve"] < 0.3
    assert rows["rewritten vs documents"]["mauve"] < 0.3
    assert rows["distilled vs documents"]["accuracy"] > 0.9
    control = rows["distilled vs distilled"]
    assert control["mauve"] > 0.5 and control["n_a"] == control["n_b"] == 20
    # one bucket count for every row, so they share a scale with the control
    assert len({c["num_buckets"] for c in result["comparisons"]}) == 1
    assert result["sets"]["documents"]["n"] == 40 and result["sets"]["rewritten"]["n"] == 40
    assert result["diversity"]["responses"]["sample_size"] == 40
    assert result["complexity"] == {"skipped": "no tagger (--no-tags)"}
    on_disk = json.loads((run / "analysis.json").read_text())
    assert on_disk["comparisons"] == json.loads(json.dumps(result["comparisons"]))
    md = (run / "analysis.md").read_text()
    assert "| comparison | MAUVE | classifier accuracy |" in md
    assert re.search(r"\| distilled vs rewritten \| 0\.9\d\d|\| distilled vs rewritten \| 1\.000", md)
    assert "| set | n | instruction tokens | response tokens |" in md


def test_identical_sets_score_one(tmp_path):
    cooking = sentences(COOKING, 40, seed=1)
    run = make_run(tmp_path / "run", documents=sentences(SPACE, 40, seed=2), rewrites=cooking, distilled=cooking)
    row = by_name(analyze(run, embedder=HashEmbedder(), tokenizer=None))["distilled vs rewritten"]
    assert row["mauve"] == 1.0 and row["note"].startswith("identical sets")
    assert row["accuracy"] <= 0.6  # copies never straddle the split: the classifier is at chance


def test_degenerate_sets_get_notes_not_a_crash(tmp_path):
    run = make_run(tmp_path / "run", documents=["the same page"] * 12, rewrites=["one answer"] * 12,
                   distilled=["one answer"] * 12)
    rows = by_name(analyze(run, embedder=HashEmbedder(), tokenizer=None))
    assert rows["distilled vs documents"]["mauve"] is not None
    assert "classifier not computed" in rows["distilled vs documents"]["note"]
    assert rows["distilled vs rewritten"]["mauve"] == 1.0


def test_tiny_sets_are_null_with_a_note_not_a_crash(tmp_path):
    run = make_run(tmp_path / "run", documents=sentences(SPACE, 3, 1), rewrites=sentences(COOKING, 2, 2),
                   distilled=sentences(COOKING, 1, 3))
    result = analyze(run, embedder=NoEmbedder(), tokenizer=None)
    for row in result["comparisons"]:
        assert row["mauve"] is None and row["accuracy"] is None
        assert "needs at least" in row["note"]
    assert "distilled has 1" in by_name(result)["distilled vs rewritten"]["note"]
    div = result["diversity"]["responses"]
    assert div["sets"]["rewritten"] is None and "2 text(s)" in div["notes"]["rewritten"]
    assert result["lengths"]["distilled"]["response"] == pytest.approx(15.0)  # 14 words and a full stop
    assert result["lengths"]["instructions"]["response"] is None
    assert result["embedder"] is None
    text = (run / "analysis.json").read_text()
    assert "NaN" not in text and json.loads(text)["min_items"] == 4
    assert "not computed" in (run / "analysis.md").read_text()


@pytest.mark.parametrize("raw, expected", [
    ("physics\nlight scattering\natmosphere", ["physics", "light scattering", "atmosphere"]),
    ("Sure! Here are the tags:\n1. **Physics**\n2) Light Scattering\n- physics\n* `optics`.",
     ["physics", "light scattering", "optics"]),
    ("Tags: cooking, baking; recipes | how-to", ["cooking", "baking", "recipes", "how-to"]),
    ('["explanation", "finance", "compound interest"]', ["explanation", "finance", "compound interest"]),
    ("<think>the user wants tags, maybe physics</think>\nastronomy", ["astronomy"]),
    ("<text>\nWhy Is the Sky Blue?\nSunlight looks white, but it is a mixture of all the colours of the spectrum\n</text>",
     ["why is the sky blue", "sunlight looks white"]),  # an echo: `tag_texts` drops it, knowing the text
    ("#travel #budget-tips", ["travel #budget-tips"]),
    ("", []), ("   \n\n ,,, ;;", []), ("1.1.1.1.1.1", []), ("I hope this helps!", []),
    ("breathe\nbreathe\nBreathe\n\"Breathe\"", ["breathe"]),
])
def test_parse_tags_survives_what_models_write(raw, expected):
    assert parse_tags(raw) == expected


class TinyTagger(InProcessEngine):
    """Engine protocol in a dozen lines: the answer depends on the text it is asked to tag."""

    name = "tiny-tagger"

    def __init__(self) -> None:
        self.requests: list[Request] = []

    def generate(self, requests: list[Request]) -> list[Result]:
        self.requests += requests
        return [self._answer(r) for r in requests]

    def _answer(self, req: Request) -> Result:
        text = req.messages[-1]["content"]
        if "BROKEN" in text:
            return Result(error="server said no", finish_reason="error")
        if "ECHO" in text:
            return Result(text=text.split("Text:\n", 1)[1], finish_reason="stop")
        if "CUT" in text:
            return Result(text="cooking\nbaking\nhalf-writ", finish_reason="length")
        if "?" in text:
            return Result(text="Here are the tags:\n- question\n- cooking", finish_reason="stop")
        return Result(text="cooking, recipe, cooking, how-to, A sentence that is much too long to be a tag.",
                      finish_reason="stop")

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    context_length = None

    def close(self) -> None:
        pass


def test_tag_texts_asks_each_text_once_and_keeps_errors_apart():
    engine = TinyTagger()
    echo = "ECHO Sunlight looks white, but it is a mixture of all colours,\nso the sky looks blue"
    texts = ["How do I bake bread?", "How do I bake bread?", "BROKEN text", "CUT here", "[[user]] Knead the dough.", echo]
    tags = tag_texts(texts, engine)
    assert len(engine.requests) == 5  # the repeated instruction is tagged once
    assert all(r.temperature == 0.0 for r in engine.requests)
    assert "[[user]] Knead the dough." in engine.requests[3].messages[-1]["content"]  # data stays data
    assert tags == [["question", "cooking"], ["question", "cooking"], None, ["cooking", "baking"],
                    ["cooking", "recipe", "how-to"], []]


def test_complexity_averages_unique_tags_per_set(tmp_path):
    run = make_run(tmp_path / "run", documents=sentences(SPACE, 5, 1), rewrites=sentences(COOKING, 5, 2),
                   distilled=["BROKEN answer"] + sentences(COOKING, 4, 3))
    engine = TinyTagger()
    result = analyze(run, embedder=HashEmbedder(), tagger_engine=engine, tag_samples=3, tokenizer=None)
    cx = result["complexity"]
    assert cx["model"] == "tiny-tagger" and cx["samples_per_set"] == 3
    docs = cx["sets"]["documents"]
    assert docs["instructions"]["mean"] == 2.0 and docs["instructions"]["n"] == 3
    assert docs["responses"]["mean"] == 3.0
    distilled = cx["sets"]["distilled"]["responses"]
    assert distilled["n"] + distilled["failed"] == 3
    assert cx["sets"]["instructions"]["responses"] is None
    md = (run / "analysis.md").read_text()
    assert "Tags by tiny-tagger" in md
    assert re.search(r"\| documents \| 5 \|.*\| 2\.0 \| 3\.0 \|", md)


def test_against_adds_runs_and_datasets(tmp_path):
    run = make_run(tmp_path / "run", documents=sentences(SPACE, 6, 1), rewrites=sentences(COOKING, 6, 2),
                   distilled=sentences(COOKING, 6, 3))
    other = make_run(tmp_path / "other", documents=sentences(SPACE, 5, 4), rewrites=sentences(SPACE, 5, 5),
                     distilled=[])
    chat = tmp_path / "chat.jsonl"
    write_jsonl(chat, [{"messages": [{"role": "system", "content": "be nice"}, {"role": "user", "content": f"q {i}?"},
                                     {"role": "assistant", "content": f"answer number {i} here"}]} for i in range(4)]
                + [{"unrelated": 1}])
    result = analyze(run, against=[str(other), str(chat)], embedder=HashEmbedder(), tokenizer=None)
    assert result["sets"]["other"]["n"] == 5 and result["sets"]["chat"]["n"] == 4
    assert result["lengths"]["chat"]["response"] == pytest.approx(4.0)
    assert result["diversity"]["instructions"]["sample_size"] == 4
    empty = tmp_path / "empty.jsonl"
    write_jsonl(empty, [{"text": "no pairs here"}])
    with pytest.raises(RunDirError, match="no row has `instruction`"):
        analyze(run, against=[str(empty)], embedder=HashEmbedder(), tokenizer=None)
    with pytest.raises(RunDirError, match="neither"):
        analyze(run, against=[str(tmp_path / "missing")], embedder=HashEmbedder(), tokenizer=None)


def cli_app() -> typer.Typer:
    """`analyze` and `report` as backforth/cli.py registers them, inside its one error path."""
    from backforth.cli import app

    return app


def test_cli_errors_exit_2_with_a_message(tmp_path):
    runner = CliRunner()
    missing = runner.invoke(cli_app(), ["analyze", str(tmp_path / "nope"), "--no-tags"])
    assert missing.exit_code == 2 and "no such run directory" in missing.output
    (tmp_path / "never").mkdir()
    never = runner.invoke(cli_app(), ["report", str(tmp_path / "never")])
    assert never.exit_code == 2 and "not a run dir" in never.output  # a folder that was never a run
    (tmp_path / "unfinished").mkdir()
    (tmp_path / "unfinished" / "config.yaml").write_text("variant: filter\n")  # a run stopped before exporting
    no_stats = runner.invoke(cli_app(), ["report", str(tmp_path / "unfinished")])
    assert no_stats.exit_code == 2 and "stats.json is missing" in no_stats.output
    run = make_run(tmp_path / "run", documents=sentences(SPACE, 3, 1), rewrites=sentences(COOKING, 2, 2),
                   distilled=sentences(COOKING, 1, 3))
    bad = runner.invoke(cli_app(), ["analyze", str(run), "--no-tags", "--against", str(tmp_path / "nope.jsonl")])
    assert bad.exit_code == 2 and "--against" in bad.output


def test_cli_analyze_then_report(tmp_path):
    run = make_run(tmp_path / "run", documents=sentences(SPACE, 3, 1), rewrites=sentences(COOKING, 2, 2),
                   distilled=sentences(COOKING, 1, 3))
    runner = CliRunner()
    analyzed = runner.invoke(cli_app(), ["analyze", str(run), "--no-tags"])
    assert analyzed.exit_code == 0, analyzed.output
    assert "| comparison | MAUVE |" in analyzed.output and (run / "analysis.json").is_file()
    reported = runner.invoke(cli_app(), ["report", str(run)])
    assert reported.exit_code == 0, reported.output
    assert "How far apart the sets are" in (run / "report.html").read_text()

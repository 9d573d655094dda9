"""The demo's configuration end to end on real embedded models (PyPI wheels), on the CPU.

Three documents through every stage with the models of backforth/data/demo.yaml (Qwen2.5-Coder 1.5B
backtranslating, reading page kinds and scoring, 0.5B rewriting and distilling). The page-kind and score
thresholds are lowered so that every page and pair is kept and rewrite and distill run for real on all three.
"""

import json

import pyarrow.parquet as pq
import pytest

from backforth.analysis.analyze import stage_rows
from backforth.cli import DATA_DIR
from backforth.config import PAGE_KINDS, load_config
from backforth.pipeline.method import run_method


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    cfg = load_config(DATA_DIR / "demo.yaml", [
        "curate.threshold=1", "page_kind.min_p=0.001", "rewrite.max_tokens=96", "distill.max_tokens=48", "backtranslate.max_tokens=48",
        "runner.progress=false"])
    cfg.input.path = str(DATA_DIR / "demo_corpus.jsonl")
    cfg.input.limit = 3
    stats = run_method(cfg, out)
    return out, stats


def test_every_document_ends_in_sft_or_rejects(demo_run):
    out, stats = demo_run
    sft = [json.loads(line) for line in open(out / "sft.jsonl")]
    rejects = [json.loads(line) for line in open(out / "rejects.jsonl")]
    ids = [r["id"] for r in sft] + [r["id"] for r in rejects]
    assert sorted(ids) == ["doc-001", "doc-002", "doc-003"]
    assert stats["funnel"]["documents_in"] == 3
    assert stats["outputs"]["sft"] == len(sft)
    for r in rejects:
        assert r["stage"] in {"prepare", "dedup_documents", "page_kind", "backtranslate", "dedup_instructions", "decontaminate",
                              "curate", "rewrite", "grounding"} and r["reason"]


def test_real_model_wrote_every_column(demo_run):
    out, stats = demo_run
    kinds = list(stage_rows(out, "page_kind").values())
    assert len(kinds) == 3
    for row in kinds:
        assert row["page_kind_model"] == "embedded:qwen2.5-coder-1.5b" and row["page_kind"] in PAGE_KINDS
        assert abs(sum(row["page_kind_probs"].values()) - 1) < 1e-3 and 0 <= row["page_kind_p"] <= 1
    curate = list(stage_rows(out, "curate").values())
    assert curate, "backtranslate kept no instruction from three real documents"
    for row in curate:
        assert row["backtranslate_model"] == "embedded:qwen2.5-coder-1.5b"
        assert row["curate_model"] == "embedded:qwen2.5-coder-1.5b"
        assert row["instruction"] and row["instruction_raw"]
        assert row["backtranslate_prompt_tokens"] > 100  # the few-shot prompt plus the document
        assert row["score_method"] == "logprobs" and row["score"] in {1, 2, 3, 4, 5}
        assert abs(sum(row["score_probs"].values()) - 1) < 1e-3
        assert 1 <= row["score_expected"] <= 5
    assert stats["stages"]["curate"]["parse_rate"] == 1.0
    rewrite = list(stage_rows(out, "rewrite").values())
    assert len(rewrite) == len(curate)  # threshold 1 keeps all
    for row in rewrite:
        assert row["rewrite_completion_tokens"] > 0
        assert row["rewrite_finish_reason"] in {"stop", "length"}
        assert (row["_status"] == "done") == bool(row.get("response"))


def test_exports_agree(demo_run):
    out, stats = demo_run
    sft = [json.loads(line) for line in open(out / "sft.jsonl")]
    table = pq.read_table(out / "sft.parquet")
    assert table.column("id").to_pylist() == [r["id"] for r in sft]
    for r, full in zip(sft, table.to_pylist()):
        assert r["messages"][0]["content"].endswith(" Answer with knowledge from web search.")
        assert r["messages"][1]["content"] == r["response"] == full["response"]
        assert full["provenance"]["rewrite_prompt"].startswith("rewrite@")
    card = (out / "README.md").read_text()
    assert "load_dataset" in card and f"{stats['outputs']['sft']} pairs" in card


def test_real_models_token_counts_reach_stats_and_card(demo_run):
    out, stats = demo_run
    for name in ("backtranslate", "curate", "rewrite"):
        st = stats["stages"][name]
        assert st["requests"] > 0 and st["prompt_tokens"] > 0, name  # the engine's tokenized lengths
    assert stats["stages"]["backtranslate"]["completion_tokens"] > 0
    tok = stats["tokens"]
    assert tok["total_tokens"] == sum(st["prompt_tokens"] + st["completion_tokens"] for st in stats["stages"].values())
    if stats["outputs"]["sft"]:
        assert tok["per_exported_pair"] == round(tok["total_tokens"] / stats["outputs"]["sft"], 1) > 0
        assert "tokens per exported pair" in (out / "README.md").read_text()

"""prepare.split: long pages cut at their headings into self-contained sections, each its own document."""

from __future__ import annotations

import json
from pathlib import Path

from fake_engine import FakeEngine, section, stage_of

from run_files import read_sft
from backforth.config import build_config
from backforth.engines.base import Result
from backforth.pipeline.method import run_method
from backforth.split import SplitSettings, blocks, split_rows, split_text
from backforth.web import extract

PAGES = Path(__file__).parent / "data" / "web" / "python-docs"


def para(word: str, n: int) -> str:
    return " ".join([word] * n) + "."


def test_blocks_keep_code_whole_and_find_headings():
    text = "# T\n\nintro\n\n```\na\n\nb\n```\n\n## S\nline one\nline two"
    got = [(b.level, b.text) for b in blocks(text)]
    assert got == [(1, "# T"), (0, "intro"), (0, "```\na\n\nb\n```"), (2, "## S"), (0, "line one\nline two")]


def test_a_short_page_stays_whole():
    text = "# Title\n\n" + para("a", 50)
    assert split_text(text, min_chars=10, max_chars=len(text)) == [text]


def test_sections_are_headed_by_the_headings_above_them():
    text = "\n\n".join(["# Guide", para("intro", 60), "## Install", para("install", 60), "### On Linux",
                       para("linux", 80), "## Use", para("use", 80)])
    parts = split_text(text, min_chars=100, max_chars=600)
    assert [p.split("\n\n")[:-1] for p in parts] == [["# Guide"], ["# Guide", "## Install"],
                                                     ["# Guide", "## Install", "### On Linux"], ["# Guide", "## Use"]]
    assert all(len(p) <= 600 for p in parts)


def test_small_sections_merge_and_long_ones_cut_between_paragraphs():
    text = "\n\n".join(["# Page", "## A", para("a", 10), "## B", para("b", 10), "## C",
                       *[para(f"c{i}", 40) for i in range(8)]])
    parts = split_text(text, min_chars=200, max_chars=700)
    assert parts[0].startswith("# Page\n\n## A\n\na a") and "\n\n## B\n\nb b" in parts[0]  # A and B merged
    assert "\n\n## C\n\nc0 c0" in parts[0]  # ... and with C's first part, headings carried along
    assert all(p.startswith("# Page\n\n## C\n\n") for p in parts[1:])  # C cut, each part under its headings
    assert len(parts) >= 2 and all(len(p) <= 700 for p in parts)
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) < 300  # about equal parts: no stub at the end
    body = [b for p in parts for b in p.split("\n\n") if not b.startswith("#")]
    assert body == [b for b in text.split("\n\n") if not b.startswith("#")]  # nothing lost, nothing repeated


def test_a_page_without_headings_is_cut_at_paragraphs_under_its_title():
    text = "\n\n".join(para(f"p{i}", 50) for i in range(10))
    parts = split_text(text, min_chars=100, max_chars=900, title="Plain page")
    assert len(parts) > 1 and all(p.startswith("# Plain page\n\n") for p in parts)


def test_rows_become_sections_with_source_id_and_number():
    page = extract((PAGES / "howto-sorting.html").read_bytes())
    rows = [{"id": "short", "text": "tiny", "_index": 0},
            {"id": "sorting", "text": page.text, "title": page.title, "url": "u", "_index": 1},
            {"id": "bad", "_reject": "malformed_json", "_index": 2}]
    out = list(split_rows(rows, SplitSettings(min_chars=600, max_chars=3000)))
    sections = [r for r in out if r.get("source_id") == "sorting"]
    assert len(sections) >= 3 and [r["id"] for r in sections] == [f"sorting#{i}" for i in range(1, len(sections) + 1)]
    assert all(r["section"] == i and r["sections"] == len(sections) and r["url"] == "u" for i, r in enumerate(sections, 1))
    assert all(r["text"].startswith("# Sorting HOW TO\n\n") and len(r["text"]) <= 3000 for r in sections)
    assert [r["_index"] for r in out] == list(range(len(out)))
    assert out[0]["id"] == "short" and out[-1]["id"] == "bad"


def responder(req):
    stage = stage_of(req)
    if stage == "backtranslate":
        return f"What does section {req.key} explain?"
    if stage == "curate":
        return Result(text="", finish_reason="stop", choice_logprobs={str(s): (0.0 if s == 5 else -5.0) for s in range(1, 6)})
    if stage == "rewrite":
        return section(req.messages[0]["content"], "<draft>", "</draft>")
    return "Answer."


def test_a_run_with_split_exports_sections(tmp_path):
    path = tmp_path / "pages"
    path.mkdir()
    (path / "sorting.html").write_bytes((PAGES / "howto-sorting.html").read_bytes())
    cfg = build_config({"input": {"path": str(path)}, "prepare": {"split": {"enabled": True}, "min_words": 20},
                        "runner": {"progress": False}, "curate": {"method": "logprobs"}, "grounding": {"enabled": False},
                        "dedup_instructions": {"enabled": False}, "distill": {"enabled": False}})
    stats = run_method(cfg, tmp_path / "run", engine_factory=lambda _m: FakeEngine(responder))
    sft = read_sft(tmp_path / "run")
    assert len(sft) >= 3 and {r["source_id"] for r in sft} == {"sorting.html"}
    assert [r["section"] for r in sft] == sorted(r["section"] for r in sft)
    assert stats["funnel"]["documents_in"] == len(sft) + len(list(open(tmp_path / "run" / "rejects.jsonl")))
    assert json.loads(open(tmp_path / "run" / "sft.jsonl").readline())["id"].startswith("sorting.html#")


def test_split_is_the_default_and_never_cuts_a_pair_in():
    """Long pages are cut by default (benchmarks/long_pages.py chose it); a long answer that came with its
    instruction is one answer, and stays whole."""
    assert build_config({"input": {"path": "x"}}).prepare.split.enabled
    long = "\n\n".join(f"# Part {i}\n\n" + para(f"w{i}", 300) for i in range(8))
    rows = [{"id": "page", "text": long}, {"id": "pair", "text": long, "instruction_given": "Explain all eight parts."}]
    out = list(split_rows(rows, SplitSettings(600, 3000)))
    assert [r["id"] for r in out if r.get("source_id") == "page"] == [f"page#{n}" for n in range(1, len(out))]
    assert len(out) > 2 and out[-1]["id"] == "pair" and out[-1]["text"] == long and "source_id" not in out[-1]

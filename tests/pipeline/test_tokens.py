"""Token accounting: per stage in stats.json, the summary and the card; per exported pair; cached
replies apart; and the totals of a killed and resumed run equal those of a run that went through."""

from __future__ import annotations

import json

import pytest
from test_runner import config, docs, fake, run  # noqa: F401 - `docs` is a fixture

from backforth.engines.base import Result
from backforth.pipeline.summary import summary
from backforth.pipeline.tokens import COUNTERS

from fake_engine import FakeEngine


def test_tokens_per_stage_and_per_exported_pair(tmp_path, docs):
    out = tmp_path / "run"
    engine = fake()
    stats = run(config(docs), out, engine)
    per = stats["stages"]
    sent = {**engine.served, "page_kind": engine.page_kind_served}  # the fake counts page_kind's apart
    for stage, st in per.items():
        assert set(COUNTERS) <= set(st), stage
        assert st["requests"] == sent.get(stage, 0), stage
        assert st["cached_requests"] == 0
    assert per["prepare"]["prompt_tokens"] == 0
    assert per["backtranslate"]["prompt_tokens"] > 0 and per["backtranslate"]["completion_tokens"] > 0
    tok = stats["tokens"]
    total = sum(st["prompt_tokens"] + st["completion_tokens"] for st in per.values())
    assert tok["total_tokens"] == total > 0
    assert tok["per_exported_pair"] == round(total / stats["outputs"]["sft"], 1)
    card = (out / "README.md").read_text()
    assert "## Model tokens" in card and f"**{tok['per_exported_pair']} tokens per exported pair**" in card
    lines, _ = summary(stats, out)
    line = next(x for x in lines if x.startswith("tokens"))
    assert f"{tok['total_tokens']} in all, {tok['per_exported_pair']} per exported pair" in line
    assert f"backtranslate {per['backtranslate']['prompt_tokens']}+{per['backtranslate']['completion_tokens']}" in line


def test_cached_replies_are_counted_apart(tmp_path, docs):
    inner = fake()

    class HalfCached(FakeEngine):
        def generate(self, requests):
            results = inner.generate(requests)
            for i, r in enumerate(results):
                r.cached = i % 2 == 0
            return results

    engine = HalfCached(lambda r: "")
    stats = run(config(docs), tmp_path / "run", engine)
    tok = stats["tokens"]
    assert tok["cached_requests"] > 0 and tok["requests"] > 0
    assert tok["requests"] + tok["cached_requests"] == sum(inner.served.values()) + inner.page_kind_served
    assert tok["total_tokens"] == tok["prompt_tokens"] + tok["completion_tokens"]
    lines, _ = summary(stats, tmp_path / "run")
    assert f"{tok['cached_requests']} requests from a cache" in next(x for x in lines if x.startswith("tokens"))


@pytest.mark.parametrize("stage", ["backtranslate", "curate", "rewrite"])
def test_a_resumed_run_counts_what_the_first_part_spent(tmp_path, docs, stage):
    whole = run(config(docs), tmp_path / "whole", fake())
    out = tmp_path / "resumed"
    engine = fake(fail_after=4, fail_stage=stage)
    with pytest.raises(KeyboardInterrupt):
        run(config(docs), out, engine)
    engine.fail_after = None
    resumed = run(config(docs), out, engine)
    assert resumed["tokens"] == whole["tokens"]
    for name, st in whole["stages"].items():
        for k in COUNTERS:
            assert resumed["stages"][name][k] == st[k], (name, k)
    assert json.loads((out / "stats.json").read_text())["tokens"] == whole["tokens"]

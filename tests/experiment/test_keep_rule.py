"""One keep rule: the stage that applies it records its decision on each scored pair (`keep`, `keep_rule`),
`curate.filter: false` passes every scored pair on with that record, and the experiment's `filter` and
`filter+rewrite` datasets are the pairs the record keeps: the same pairs a filtered run keeps."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from fake_engine import FakeEngine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "pipeline"))
from test_pairs_and_share import cfg_for, responder, run, write  # noqa: E402

from backforth.analysis.sets import stage_rows  # noqa: E402
from backforth.experiment import datasets as ds  # noqa: E402
from backforth.experiment.config import ExperimentConfig  # noqa: E402
from backforth.experiment.run import pipeline_config  # noqa: E402
from backforth.pipeline import registry  # noqa: E402


@pytest.mark.parametrize("rule, decider", [({"threshold": 4}, "curate"), ({"keep_share": 0.3}, "top_share")])
def test_the_experiment_reads_the_decision_the_filter_made(tmp_path, rule, decider):
    docs = write(tmp_path, set())
    filtered = tmp_path / "filtered"
    run(cfg_for(docs, **rule), filtered, FakeEngine(responder))
    kept_by_filter = {i for i, r in stage_rows(filtered, decider).items() if r["_status"] == "done"}
    assert 0 < len(kept_by_filter) < 10

    exp = ExperimentConfig(run=cfg_for(docs, **rule))
    one_run = pipeline_config(exp)
    assert one_run.curate.filter is False and one_run.curate.model_dump(exclude={"filter"}) == exp.run.curate.model_dump(
        exclude={"filter"})  # the run's own rule, recorded instead of applied
    out = tmp_path / "unfiltered"
    stats = run(one_run, out, FakeEngine(responder))
    assert not any(r in st["rejected_by_reason"] for st in stats["stages"].values() for r in ("low_score", "below_top_share"))
    decided = stage_rows(out, decider)
    assert {i for i, r in decided.items() if r["keep"]} == kept_by_filter
    assert {r["keep_rule"] for r in decided.values()} == {
        "keep score >= 4 (on the most likely score)" if decider == "curate" else
        "keep the best 30% of the scored pairs (on the expected score)"}

    made = ds.pipeline_datasets(out, list(stats["stages"]), exp)
    assert {r["id"] for r in made["filter"]} == kept_by_filter
    assert {r["id"] for r in made["filter+rewrite"]} == kept_by_filter  # the fake rewrites every pair
    assert len(made["rewrite"]) == 10 and len(made["distill"]) == len(kept_by_filter)


def test_filter_is_out_of_the_fingerprint_unless_turned_off():
    from backforth.pipeline.method import build_stages, stage_fingerprints

    def fp(**curate):
        cfg = cfg_for("unused.jsonl", **curate)
        return stage_fingerprints(cfg, build_stages(cfg, lambda _m: FakeEngine(responder)))

    assert "filter" not in fp()["curate"]["fields"] and fp(filter=True) == fp()  # run dirs keep their fingerprints
    assert fp(filter=False)["curate"]["hash"] != fp()["curate"]["hash"]
    assert registry.keep_rule_stages() == ("page_kind", "curate", "curate_m1", "top_share")

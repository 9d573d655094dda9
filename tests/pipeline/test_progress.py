"""The run-level ETA line counts down between measurements instead of repeating itself."""

from backforth.pipeline import progress
from backforth.pipeline.progress import RunProgress


def test_run_eta_counts_down_while_a_chunk_is_in_flight(monkeypatch):
    plan = RunProgress(run=None, stages=[("backtranslate", True), ("rewrite", True)])
    estimates = {("rewrite", 20): 300.0, ("rewrite", 4): 60.0}
    monkeypatch.setattr(plan, "eta", lambda name, remaining: (estimates[(name, remaining)], 1000, 50.0))
    clock = iter([0.0, 100.0, 400.0, 401.0])
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    assert "ETA for the run 5m00s" in plan.line("rewrite", 20)
    assert "ETA for the run 3m20s" in plan.line("rewrite", 20)  # 100 s later, nothing new measured
    assert "ETA for the run ? (past the estimate)" in plan.line("rewrite", 20)  # never "0s" for minutes
    assert "ETA for the run 1m00s" in plan.line("rewrite", 4)  # a chunk finished: a fresh estimate

"""The experiment's step runner: skips what is done, and its ETA speaks only of kinds it has timed."""

from backforth.experiment import steps as st
from backforth.experiment.steps import Step, run_steps


def test_eta_counts_steps_of_kinds_not_timed_yet_instead_of_guessing():
    left = [Step(n, {}, lambda: None, []) for n in ("train b", "answer a", "answer b", "table")]
    assert st._eta(left, {}) == ""
    assert st._eta(left, {"train": [60.0, 120.0]}) == ", ETA 1m30s + 3 steps of kinds not timed yet"
    assert st._eta(left, {"train": [90.0], "answer": [10.0], "table": [1.0]}) == ", ETA 1m51s"


def test_done_steps_are_skipped_and_a_changed_one_is_redone(tmp_path):
    ran = []
    out = tmp_path / "o.txt"

    def make(value):
        def run():
            ran.append(value)
            out.write_text(str(value))
        return [Step("pipeline", {"v": value}, run, [out]), Step("train a", {}, lambda: ran.append("t"), [], after=["pipeline"])]

    lines = []
    run_steps(make(1), tmp_path, log=lines.append)
    run_steps(make(1), tmp_path, log=lines.append)
    assert ran == [1, "t"] and sum("done, unchanged" in line for line in lines) == 2
    run_steps(make(2), tmp_path, log=lines.append)
    assert ran == [1, "t", 2, "t"] and any("pipeline changed (v)" in line for line in lines)

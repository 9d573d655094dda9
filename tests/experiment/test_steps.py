"""The experiment's step runner: skips what is done, and its ETA speaks only of kinds it has timed."""

import logging

from backforth.experiment import steps as st
from backforth.experiment.steps import Step, run_steps


def test_eta_counts_steps_of_kinds_not_timed_yet_instead_of_guessing():
    left = [Step(n, {}, lambda: None, []) for n in ("train b", "answer a", "answer b", "table")]
    assert st._eta(left, {}) == ""
    assert st._eta(left, {"train": [60.0, 120.0]}) == ", ETA 1m30s + 3 steps of kinds not timed yet"
    assert st._eta(left, {"train": [90.0], "answer": [10.0], "table": [1.0]}) == ", ETA 1m51s"


def test_done_steps_are_skipped_and_a_changed_one_is_redone(tmp_path, caplog):
    ran = []
    out = tmp_path / "o.txt"

    def make(value):
        def run():
            ran.append(value)
            out.write_text(str(value))
        return [Step("pipeline", {"v": value}, run, [out]), Step("train a", {}, lambda: ran.append("t"), [], after=["pipeline"])]

    caplog.set_level(logging.INFO, logger="backforth")
    run_steps(make(1), tmp_path)
    run_steps(make(1), tmp_path)
    lines = [r.getMessage() for r in caplog.records]
    assert ran == [1, "t"] and sum("done, unchanged" in line for line in lines) == 2
    run_steps(make(2), tmp_path)
    lines = [r.getMessage() for r in caplog.records]
    assert ran == [1, "t", 2, "t"] and any("pipeline changed (v)" in line for line in lines)


def test_a_changed_step_removes_what_it_would_resume_from_and_a_stopped_one_keeps_it(tmp_path):
    state = tmp_path / "checkpoints"
    done = tmp_path / "done.txt"
    seen = []

    def step(value, fail=False):
        def run():
            seen.append((value, state.exists()))  # what a trainer would resume from
            state.mkdir(exist_ok=True)
            if fail:
                raise KeyboardInterrupt
            done.write_text(str(value))
        return [Step("train x", {"data": value}, run, [done], clean=[state])]

    try:
        run_steps(step(1, fail=True), tmp_path)
    except KeyboardInterrupt:
        pass
    run_steps(step(1), tmp_path)  # the same inputs: resumes from its checkpoints
    run_steps(step(2), tmp_path)  # other inputs: starts clean
    assert seen == [(1, False), (1, True), (2, False)]

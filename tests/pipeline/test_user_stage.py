"""A user's own stage, defined here, outside the package: placed after curate, it runs, resumes after an
interruption and after kill -9, and shows in the funnel, the stats, the rejects and the provenance like
the method's stages. tests/executors/test_ray.py runs the same stage on Ray actors.

Run as a script (`python test_user_stage.py DOCS OUT LOG`), this file is the program that the kill -9
test kills: the same stage and corpus through the same API, with a slow engine.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fake_engine import FakeEngine, last_user
from test_runner import CONTEXT, DOCS, config, outputs, read_jsonl, write_docs
from test_runner import responder as method_responder

from backforth.engines.base import Request, Result
from backforth.errors import UserError
from backforth.pipeline.method import run_method
from backforth.pipeline.stage import Stage
from backforth.pipeline.store import StageStore

HERE = Path(__file__).resolve().parent


class Headline(Stage):
    """Asks the rewriter's model for a one-line headline of each kept pair; a headline of fewer than
    `min_words` words rejects the pair."""

    name = "headline"
    role = "rewriter"
    funnel = "headlined"
    provenance = ("headline_model",)
    rejects = {"short_headline": "The headline has fewer than `min_words` words. Try: a lower `min_words`."}

    def __init__(self, min_words: int = 3):
        self.min_words = min_words

    def settings(self) -> dict:
        return {"min_words": self.min_words}

    @classmethod
    def summarize(cls, counters: dict, summary: dict) -> None:
        summary["headline_words"] = counters.get("words", 0)

    def requests(self, row: dict) -> list[Request]:
        return [Request(messages=[{"role": "user", "content": f"A headline for: {row['instruction']}"}],
                        max_tokens=16, temperature=0.0, key=f"headline:{row['id']}")]

    def apply(self, row: dict, results: list[Result]) -> str | None:
        if not self.record_call(row, results[0]):
            return "engine_error"
        row["headline"] = results[0].text.strip()
        self.count("words", len(row["headline"].split()))
        return None if len(row["headline"].split()) >= self.min_words else "short_headline"


def responder(req: Request) -> Result | str:
    """The method's deterministic answers, and a headline for the user's stage (d09's is too short)."""
    if req.key and req.key.startswith("headline:"):
        doc = req.key.split(":", 1)[1]
        return "Subject nine" if doc == "d09" else f"Everything about {last_user(req).split()[-3]} {doc}"
    return method_responder(req)


class SlowLoggingEngine(FakeEngine):
    """Answers as `responder`, slowly, and logs each answered request key (for the kill test)."""

    def __init__(self, log: Path, delay: float):
        super().__init__(responder, context_length=CONTEXT)
        self.log, self.delay = log, delay

    def generate(self, requests):
        time.sleep(self.delay * len(requests))
        results = super().generate(requests)
        with open(self.log, "a", encoding="utf-8") as fh:
            fh.write("".join(f"{r.key}\n" for r in requests))
        return results


def headline_keys(engine: FakeEngine) -> list[str]:
    return [k for k in engine.by_key if k.startswith("headline:")]


def run_with_headline(docs: Path, out: Path, engine: FakeEngine, **kw):
    return run_method(config(docs), out, engine_factory=lambda _m: engine, after={"curate": Headline()}, **kw)


KEPT_BY_CURATE = ["d10", "d00", "d07", "d01", "d08", "d09"]  # test_runner's corpus after curate, input order


def test_a_users_stage_runs_and_shows_like_the_methods(tmp_path):
    docs, out, engine = write_docs(tmp_path / "docs.jsonl"), tmp_path / "run", FakeEngine(responder, context_length=CONTEXT)
    stats = run_with_headline(docs, out, engine)

    assert list(stats["stages"]) == ["prepare", "page_kind", "backtranslate", "curate", "headline", "best_response", "rewrite",
                                    "rewrite_redraw", "distill"]
    h = stats["stages"]["headline"]
    assert (h["in"], h["kept"], h["rejected_by_reason"]) == (6, 5, {"short_headline": 1})
    assert h["headline_words"] == 5 * 4 + 2  # its own counters, summarised by its own `summarize`
    funnel = list(stats["funnel"])
    assert funnel.index("kept") < funnel.index("headlined") < funnel.index("rewritten")
    assert stats["funnel"]["headlined"] == 5
    assert sorted(headline_keys(engine)) == sorted(f"headline:{i}" for i in KEPT_BY_CURATE)

    rejects = {r["id"]: r for r in read_jsonl(out / "rejects.jsonl")}
    assert (rejects["d09"]["stage"], rejects["d09"]["reason"], rejects["d09"]["headline"]) == (
        "headline", "short_headline", "Subject nine")
    sft = outputs(out)["sft.parquet"]
    assert [r["id"] for r in sft] == ["d10", "d00", "d01"]  # d07, d08: rewrite rejects them, as without the stage
    assert all(r["provenance"]["headline_model"] == "fake-model" for r in sft)
    assert "headline" in json.loads((out / "fingerprints.json").read_text())
    assert len(list(StageStore(out / "stages" / "headline").ids())) == 6
    assert "| headline | rewriter | transformers: embedded |" in (out / "README.md").read_text()

    again = FakeEngine(responder, context_length=CONTEXT)
    assert run_with_headline(docs, out, again) == stats and again.received == []  # all done: nothing asked

    # a changed setting of the user's stage: that stage and those after it are stale, as for the method's
    with pytest.raises(UserError, match="headline: changed min_words"):
        run_method(config(docs), out, engine_factory=lambda _m: again, after={"curate": Headline(min_words=5)})


def test_a_users_stage_resumes_after_an_interruption(tmp_path):
    docs = write_docs(tmp_path / "docs.jsonl")
    full = FakeEngine(responder, context_length=CONTEXT)
    run_with_headline(docs, tmp_path / "reference", full)

    out = tmp_path / "run"
    # Ctrl-C after 3 requests of the user's stage (its requests read as "distill" to the fake: the stage
    # after it, which has not started)
    first = FakeEngine(responder, context_length=CONTEXT, fail_after=3, fail_stage="distill")
    with pytest.raises(KeyboardInterrupt):
        run_with_headline(docs, out, first)
    stored = set(StageStore(out / "stages" / "headline").ids())
    assert stored and len(stored) < len(KEPT_BY_CURATE)
    second = FakeEngine(responder, context_length=CONTEXT)
    run_with_headline(docs, out, second)
    asked = {k.split(":", 1)[1] for k in headline_keys(second)}
    assert asked == set(KEPT_BY_CURATE) - stored  # a finished row is never asked again
    assert outputs(out) == outputs(tmp_path / "reference")


def test_a_users_stage_resumes_after_kill_9(tmp_path):
    """The run is a separate process (this file as a script) that is killed once the user's stage has
    stored its first chunk; the resumed run asks only for the rows not stored, and ends with the
    uninterrupted run's outputs."""
    docs = write_docs(tmp_path / "docs.jsonl")
    run_with_headline(docs, tmp_path / "reference", FakeEngine(responder, context_length=CONTEXT))
    out, log = tmp_path / "run", tmp_path / "killed.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parent), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, __file__, str(docs), str(out), str(log)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    shards = out / "stages" / "headline"
    deadline = time.monotonic() + 120
    while not list(shards.glob("part-*.parquet")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    stored = set(StageStore(shards).ids())
    assert stored and len(stored) < len(KEPT_BY_CURATE)

    resumed = FakeEngine(responder, context_length=CONTEXT)
    run_with_headline(docs, out, resumed)
    asked = {k.split(":", 1)[1] for k in headline_keys(resumed)}
    assert not asked & stored  # no stored row paid for twice
    assert asked | stored == set(KEPT_BY_CURATE)
    assert outputs(out) == outputs(tmp_path / "reference")


def test_a_users_stage_needs_a_place_a_name_and_a_model(tmp_path):
    docs, engine = write_docs(tmp_path / "docs.jsonl"), FakeEngine(responder, context_length=CONTEXT)
    with pytest.raises(UserError, match=r"after=\{'top_share': \.\.\.\}: not a stage of this run \(prepare, "):
        run_method(config(docs), tmp_path / "a", engine_factory=lambda _m: engine, after={"top_share": Headline()})
    clash = Headline()
    clash.name = "curate"
    with pytest.raises(UserError, match="two stages of this run are named curate"):
        run_method(config(docs), tmp_path / "b", engine_factory=lambda _m: engine, after={"curate": clash})
    unserved = Headline()
    unserved.role = "editor"
    with pytest.raises(UserError, match="stage headline: no model for role 'editor'"):
        run_method(config(docs), tmp_path / "c", engine_factory=lambda _m: engine, after={"curate": unserved})
    assert len(DOCS) == 14 and not engine.received


if __name__ == "__main__":  # the program the kill -9 test kills
    docs_path, out_dir, log_path = map(Path, sys.argv[1:4])
    slow = SlowLoggingEngine(log_path, delay=0.05)
    cfg = config(docs_path)
    run_method(cfg, out_dir, engine_factory=lambda _m: slow, after={"curate": Headline()})


class Mark(Stage):
    name = "mark"

    def apply(self, row, results):
        return None


@pytest.mark.parametrize("settings, after, order", [
    ({}, "rewrite", ["rewrite", "rewrite_redraw", "mark", "grounding"]),  # the second draw sees rewrite's rejects
    ({"rewrite": {"redraw": False}}, "rewrite", ["rewrite", "mark", "grounding"]),
    ({}, "rewrite_redraw", ["rewrite", "rewrite_redraw", "mark", "grounding"]),
    ({"curate": {"iterations": 2}}, "curate", ["curate", "curate_m1", "mark", "best_response"]),  # round 2 rescores round 1's rejects
    ({}, "curate", ["curate", "mark", "best_response"]),
])
def test_a_users_stage_comes_after_the_stages_that_take_up_its_anchors_rejects(settings, after, order):
    from backforth.config import build_config
    from backforth.pipeline.method import build_stages, insert_stages

    stages = insert_stages(build_stages(build_config(settings)), {after: Mark()})
    names = [st.name for st in stages]
    assert names[names.index(order[0]):names.index(order[0]) + len(order)] == order

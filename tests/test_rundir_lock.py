"""One run per run dir (`backforth/rundir_lock.py`): a second run is refused at once, naming the first;
a lock left by a dead process, or a stale one from another host, is taken over with a note; report and
analyze read a run dir without taking it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from stub_openai import StubOpenAIServer
from typer.testing import CliRunner

from backforth import rundir_lock
from backforth.cli import app
from backforth.rundir_lock import LOCK_NAME, RunDirBusy, hold

ROOT = Path(__file__).resolve().parent.parent

HOLDER = """
import sys, time
from backforth.rundir_lock import hold
with hold(sys.argv[1]):
    print("held", flush=True)
    time.sleep(600)
"""


@contextlib.contextmanager
def held_by_another_thread(run_dir: Path):
    """The run dir held by a run in another thread of this process (another open file: flock refuses)."""
    taken, done = threading.Event(), threading.Event()

    def holder():
        with hold(run_dir):
            taken.set()
            done.wait(60)

    thread = threading.Thread(target=holder, daemon=True)
    thread.start()
    assert taken.wait(10)
    try:
        yield
    finally:
        done.set()
        thread.join(10)


def notes(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "backforth.rundir_lock"]


@pytest.fixture
def other_run(tmp_path):
    """Another process holding a run dir's lock, as a run in a second terminal would."""
    procs = []

    def start(run_dir: Path) -> subprocess.Popen:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir)], stdout=subprocess.PIPE, text=True, env=env)
        procs.append(proc)
        assert proc.stdout.readline().strip() == "held"
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_a_second_run_is_refused_at_once_naming_the_first(tmp_path, other_run):
    run_dir = tmp_path / "run"
    first = other_run(run_dir)
    record = json.loads((run_dir / LOCK_NAME).read_text())
    assert record["pid"] == first.pid and record["host"] == socket.gethostname() and record["started"] <= time.time()
    assert "-c" in record["command"]
    with pytest.raises(RunDirBusy) as info:
        with hold(run_dir):
            pass
    msg = str(info.value)
    assert f"pid {first.pid} on host {socket.gethostname()}" in msg and str(run_dir) in msg
    assert f"kill {first.pid} on {socket.gethostname()}" in msg and "another --out" in msg
    assert info.value.exit_code == 2
    assert json.loads((run_dir / LOCK_NAME).read_text())["pid"] == first.pid  # the refused run left it alone


def test_the_cli_refuses_a_second_run_with_exit_2(tmp_path, other_run):
    docs = tmp_path / "docs.jsonl"
    docs.write_text(json.dumps({"id": "a", "text": "A document about kettles. " * 20}) + "\n")
    with StubOpenAIServer() as stub:
        cfg = tmp_path / "run.yaml"
        model = {"engine": "openai", "model": "stub-model", "base_url": stub.base_url}
        cfg.write_text(json.dumps({"input": {"path": str(docs)},
                                   "models": {r: model for r in ("backward", "scorer", "rewriter", "distiller")}}))
        first = other_run(tmp_path / "out")
        result = CliRunner().invoke(app, ["run", str(cfg), "--out", str(tmp_path / "out")])
        posts = [r for r in stub.requests if r["path"] != "/v1/models"]
    assert result.exit_code == 2, result.output
    assert f"is in use by another backforth run: pid {first.pid} on host" in result.output
    assert posts == []  # refused before any model call
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [LOCK_NAME]  # nothing written


def test_a_lock_left_by_a_killed_run_is_taken_over_with_a_note(tmp_path, other_run, caplog):
    run_dir = tmp_path / "run"
    first = other_run(run_dir)
    first.send_signal(signal.SIGKILL)  # kill -9: no cleanup, the record stays; the kernel drops the flock
    first.wait()
    assert json.loads((run_dir / LOCK_NAME).read_text())["pid"] == first.pid
    with hold(run_dir) as mine:
        assert mine["pid"] == os.getpid()
        assert json.loads((run_dir / LOCK_NAME).read_text())["pid"] == os.getpid()
    [note] = notes(caplog)
    assert note.startswith(f"note: {run_dir}: taking over the lock of the run pid {first.pid} on host")
    assert "which is no longer running" in note
    assert not (run_dir / LOCK_NAME).exists()


def record(run_dir: Path, **fields) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    data = {"host": socket.gethostname(), "pid": 1, "started": time.time(), "started_at": "then",
            "command": "backforth run x.yaml --out run", **fields}
    path = run_dir / LOCK_NAME
    path.write_text(json.dumps(data))
    return path


def test_a_record_of_a_live_process_on_this_host_is_respected(tmp_path):
    # flock says free (no filesystem lock reached us), but the recorded process is alive: refuse
    record(tmp_path / "run", pid=os.getppid(), proc_start=rundir_lock._proc_start(os.getppid()))
    with pytest.raises(RunDirBusy, match=f"pid {os.getppid()}"):
        with hold(tmp_path / "run"):
            pass


def test_a_reused_pid_does_not_hold_the_lock(tmp_path, caplog):
    record(tmp_path / "run", pid=os.getppid(), proc_start="1")  # the pid now belongs to another process
    with hold(tmp_path / "run"):
        pass
    assert "is now another process" in notes(caplog)[0]


def test_another_hosts_lock_is_respected_until_it_goes_stale(tmp_path, caplog):
    path = record(tmp_path / "run", host="gpu-node-7", pid=4242)
    with pytest.raises(RunDirBusy) as info:
        with hold(tmp_path / "run"):
            pass
    assert "pid 4242 on host gpu-node-7" in str(info.value) and "BACKFORTH_LOCK_STALE_S" in str(info.value)
    old = time.time() - rundir_lock.STALE_AFTER_S - 60  # its heartbeat (the file's mtime) stopped long ago
    os.utime(path, (old, old))
    with hold(tmp_path / "run"):
        pass
    [note] = notes(caplog)
    assert "pid 4242 on host gpu-node-7" in note and "has not been seen alive for 16m" in note


def test_the_holder_refreshes_its_heartbeat(tmp_path, monkeypatch):
    monkeypatch.setattr(rundir_lock, "HEARTBEAT_S", 0.05)
    with hold(tmp_path / "run"):
        path = tmp_path / "run" / LOCK_NAME
        os.utime(path, (0, 0))
        deadline = time.time() + 10
        while path.stat().st_mtime == 0 and time.time() < deadline:
            time.sleep(0.05)
        assert path.stat().st_mtime > 0


def test_a_run_that_made_the_dir_and_wrote_nothing_leaves_nothing(tmp_path):
    with pytest.raises(ValueError):
        with hold(tmp_path / "new"):
            raise ValueError("stopped before writing")
    assert not (tmp_path / "new").exists()
    (tmp_path / "kept").mkdir()
    with hold(tmp_path / "kept"):
        pass
    assert (tmp_path / "kept").is_dir() and not list((tmp_path / "kept").iterdir())


class WordsEmbedder:
    """Bag of words hashed into 64 dimensions: no model to load."""

    name = "words-64"

    def embed(self, texts):
        import numpy as np

        out = np.zeros((len(texts), 64), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in text.lower().split():
                out[i, hash(word) % 64] += 1.0
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


def test_report_and_analyze_read_a_run_dir_that_a_run_holds(tmp_path):
    sys.path.insert(0, str(Path(__file__).parent / "pipeline"))
    from test_runner import config, fake, write_docs

    from backforth.analysis.analyze import analyze
    from backforth.analysis.report import write_report
    from backforth.workflows import run

    cfg, out = config(write_docs(tmp_path / "docs.jsonl")), tmp_path / "run"
    run(cfg, out, engine_factory=lambda m: fake())
    with held_by_another_thread(out):  # a run going on in that dir
        with pytest.raises(RunDirBusy):
            run(cfg, out, engine_factory=lambda m: fake())
        analyze(out, embedder=WordsEmbedder(), tokenizer=None)
        write_report(out)
    assert (out / "analysis.md").is_file() and (out / "report.html").is_file()


def test_an_experiment_dir_is_held_by_one_experiment(tmp_path):
    from backforth.experiment import load_experiment, run_experiment

    (tmp_path / "docs.jsonl").write_text(json.dumps({"id": "d0", "text": "A page about kettles. " * 20}) + "\n")
    (tmp_path / "eval.jsonl").write_text(json.dumps({"id": "q0", "instruction": "Why boil water?"}) + "\n")
    (tmp_path / "exp.yaml").write_text(json.dumps({
        "run": {"input": {"path": str(tmp_path / "docs.jsonl")}}, "datasets": ["filter", "distill"],
        "eval": {"eval_set": str(tmp_path / "eval.jsonl")}, "train": "none",
        "judge": {"model": {"engine": "openai", "model": "judge"}, "method": "logprobs"}}))
    out = tmp_path / "exp"
    with held_by_another_thread(out):  # an experiment going on in that dir
        with pytest.raises(RunDirBusy, match=f"pid {os.getpid()}"):
            run_experiment(load_experiment(tmp_path / "exp.yaml"), out, engine_factory=pytest.fail)
    assert not out.exists()  # nothing written: not even experiment.yaml


def test_a_run_holds_its_dir_once_however_deep_the_calls(tmp_path):
    # backforth.run takes the lock before writing the rows it was given; the workflow inside takes it again
    sys.path.insert(0, str(Path(__file__).parent / "pipeline"))
    from test_runner import DOCS, config, fake, write_docs

    import backforth

    write_docs(tmp_path / "docs.jsonl")
    rows = [{"id": doc_id, "text": text} for doc_id, text in DOCS if text is not None]
    result = backforth.run(config(tmp_path / "docs.jsonl"), rows=rows, out=tmp_path / "run", engine_factory=lambda m: fake())
    assert len(result.dataset) > 0 and not (tmp_path / "run" / LOCK_NAME).exists()
    with held_by_another_thread(tmp_path / "run2"):
        with pytest.raises(RunDirBusy):
            backforth.run(config(tmp_path / "docs.jsonl"), rows=rows, out=tmp_path / "run2", engine_factory=lambda m: fake())
    assert not (tmp_path / "run2" / "inputs").exists()  # refused before it wrote the rows

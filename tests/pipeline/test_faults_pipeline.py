"""Reliability over HTTP (issue 8): a server failing a quarter of its requests, an API key that must
never be written anywhere, and Ctrl-C in the middle of a run.

All three run the whole pipeline on the `openai` engine against the stub server (no model).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

from stub_openai import StubOpenAIServer

from run_files import read_distilled, read_sft
from backforth.analysis.report import write_report
from backforth.engines import build_engine
from backforth.engines.openai import OpenAIEngine
from backforth.pipeline.method import run_method
from backforth.pipeline.store import StageStore
from test_crash_safety import write_config
from test_runner_openai import doc_number, doc_text, make_config, responder, stage_of

N_DOCS = 20
MODEL_STAGES = ("page_kind", "backtranslate", "curate", "rewrite", "distill")


def write_docs(path: Path, n: int = N_DOCS) -> Path:
    path.write_text("".join(json.dumps({"id": f"doc{i:02d}", "text": doc_text(i)}) + "\n" for i in range(n)))
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@contextmanager
def deadline(seconds: int):
    """Fail (instead of hanging the suite) if the block runs longer than `seconds`."""
    def expire(signum, frame):
        raise TimeoutError(f"still running after {seconds}s: a hang")

    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def accounted(out: Path, n: int = N_DOCS) -> tuple[list[dict], list[dict]]:
    """sft and rejects, after checking that every document ends exactly once in one of them."""
    sft, rejects = read_sft(out), read_jsonl(out / "rejects.jsonl")
    ids = [r["id"] for r in sft] + [r["id"] for r in rejects]
    assert len(ids) == len(set(ids)) and sorted(ids) == [f"doc{i:02d}" for i in range(n)]
    assert all(r["stage"] and r["reason"] for r in rejects)
    return sft, rejects


# ---- a server failing at 25% ------------------------------------------------------------------

FAULTS = {"429": 0.05, "500": 0.05, "timeout": 0.03, "drop": 0.04, "bad_json": 0.04, "empty_choices": 0.04}
# how each injected fault shows in the engine's by_status counter
FAULT_STATUS = {"429": "429", "500": "500", "timeout": "timeout", "drop": "connect", "bad_json": "bad_json",
                "empty_choices": "empty_choices"}


def test_whole_pipeline_against_a_server_failing_a_quarter_of_requests(tmp_path):
    assert sum(FAULTS.values()) >= 0.2
    docs = write_docs(tmp_path / "docs.jsonl")
    engines: list[OpenAIEngine] = []

    def factory(m) -> OpenAIEngine:
        eng = OpenAIEngine(m.model, base_url=m.base_url, max_in_flight=m.max_in_flight, timeout_s=m.timeout_s,
                           max_retries=m.max_retries, backoff_base_s=0.001, backoff_max_s=0.01)
        engines.append(eng)
        return eng

    t0 = time.monotonic()
    with StubOpenAIServer(responder=responder, faults=FAULTS, retry_after="0", timeout_sleep_s=2.0, seed=8) as stub, \
            deadline(90):
        cfg = make_config(docs, stub, max_retries=6)
        for role in ("backward", "scorer", "rewriter", "distiller"):
            getattr(cfg.models, role).timeout_s = 1.0  # a "timeout" fault holds the reply 2 s: the client gives up
        stats = run_method(cfg, tmp_path / "run", engine_factory=factory)
        posts = stub.count["/v1/chat/completions"]
    elapsed = time.monotonic() - t0

    sft, rejects = accounted(tmp_path / "run")
    assert stats["funnel"]["exported"] == len(sft)
    assert len(sft) == N_DOCS and rejects == []  # every fault was retried away; none cost a document
    for r in sft:
        i = int(r["id"][3:])
        assert r["instruction"] == f"What should I know about subject number {i} in practice?"
        assert r["distilled"] == f"A distilled answer about subject {i}."

    [eng] = engines  # four roles, one model config: one engine
    st = eng.stats
    injected = {kind: st["by_status"].get(status, 0) for kind, status in FAULT_STATUS.items()}
    faults = sum(injected.values())
    print(f"\nfault test: {st['requests']} requests, {st['attempts']} attempts ({posts} at the stub), "
          f"{faults} faults {injected}, {st['retries']} retries, {st['errors']} errors, {elapsed:.1f}s")
    assert st["requests"] == len(MODEL_STAGES) * N_DOCS
    assert posts == st["attempts"] == st["requests"] + st["retries"]
    assert all(n > 0 for n in injected.values()), injected  # every kind of fault happened
    assert faults == st["retries"] and st["errors"] == 0  # each fault cost exactly one retry
    assert faults >= 0.15 * st["attempts"]
    assert st["retries"] <= st["requests"] * eng.max_retries  # bounded


# ---- the API key is written nowhere -----------------------------------------------------------

KEY_ENV = "BACKFORTH_TEST_API_KEY"


def secret_fault(body: dict) -> str | None:
    """Definitive and exhausted failures for some rows, so their errors are recorded; the rest answer."""
    stage, i = stage_of(body), doc_number(body)
    return {("backtranslate", 1): "400", ("backtranslate", 2): "500", ("curate", 3): "429",
            ("curate", 4): "bad_json", ("rewrite", 5): "400", ("distill", 6): "500"}.get((stage, i))


def test_the_api_key_is_written_nowhere(tmp_path, monkeypatch, capfd, caplog):
    secret = f"sk-test-{uuid.uuid4().hex}"
    monkeypatch.setenv(KEY_ENV, secret)
    caplog.set_level(logging.DEBUG)  # the engine's retry lines too
    docs = write_docs(tmp_path / "docs.jsonl", n=10)
    out = tmp_path / "run"

    def factory(m):
        eng = build_engine(m)  # the real path: the key read from api_key_env
        eng.backoff_base_s, eng.backoff_max_s = 0.001, 0.01
        return eng

    # a server that echoes the Authorization header back in its error bodies
    with StubOpenAIServer(responder=responder, fault_for=secret_fault, echo_auth_in_errors=True) as stub, deadline(60):
        cfg = make_config(docs, stub, max_retries=1)
        for role in ("backward", "scorer", "rewriter", "distiller", "judge"):
            if getattr(cfg.models, role).engine == "openai":  # the others have no key to read
                getattr(cfg.models, role).api_key_env = KEY_ENV
        run_method(cfg, out, engine_factory=factory)
        sent = stub.requests
    write_report(out)
    print(f"logged {len(caplog.records)} records")

    # the key was really used, and really echoed by the server
    assert all(r["headers"].get("Authorization") == f"Bearer {secret}" for r in sent)
    sft, rejects = accounted(out, n=10)
    errors = {r["id"]: r for r in rejects}
    assert {i: errors[i]["reason"] for i in errors} == {f"doc0{i}": "engine_error" for i in (1, 2, 3, 4, 5)}
    recorded = [v for r in rejects for k, v in r.items() if k.endswith("_error")]
    assert len(recorded) == 5 and all("(auth: Bearer ***)" in e for e in recorded)  # the echoed key, redacted
    assert [r for r in sft if r["id"] == "doc06"][0]["distilled"] is None  # distill failed, the pair is kept

    files = sorted(p for p in out.rglob("*") if p.is_file())
    names = {p.relative_to(out).as_posix() for p in files}
    assert {"config.yaml", "stats.json", "README.md", "fingerprints.json", "rejects.jsonl", "sft.jsonl",
            "sft.parquet", "distilled.parquet", "report.html"} <= names
    assert {n.split("/")[1] for n in names if n.startswith("stages/")} == {
        "prepare", "page_kind", "backtranslate", "curate", "best_response", "rewrite", "rewrite_redraw", "distill"}  # every stage's shards: checked below too
    leaked = [p.relative_to(out).as_posix() for p in files if secret.encode() in p.read_bytes()]
    assert leaked == []
    assert KEY_ENV in (out / "config.yaml").read_text()  # the variable's name is recorded, not its value
    captured = capfd.readouterr()
    assert secret not in captured.out and secret not in captured.err
    log_lines = [rec.getMessage() for rec in caplog.records if rec.name.startswith("backforth")]
    assert not any(secret in line for line in log_lines)
    assert not any(secret in rec.getMessage() for rec in caplog.records)
    assert any("retrying" in rec.getMessage() for rec in caplog.records)  # debug logging was on
    print(f"secret checked in {len(files)} files: {sorted(names)}")


# ---- Ctrl-C ------------------------------------------------------------------------------------

def slow_responder(body: dict) -> str:
    time.sleep(0.1)
    return responder(body)


def rows_in(out: Path, stage: str) -> int:
    return sum(1 for _ in StageStore(out / "stages" / stage).ids())


def default_sigint() -> None:
    """In the child before exec: SIGINT's default disposition, so Python installs its Ctrl-C handler."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_stops_cleanly_then_resumes(tmp_path):
    out = tmp_path / "run"
    with StubOpenAIServer(responder=slow_responder) as stub:
        config = write_config(tmp_path, stub)  # 12 documents, 2 in flight, chunks of 2
        cmd = [sys.executable, "-m", "backforth.cli", "run", str(config), "--out", str(out)]
        env = {**os.environ, "CI": "1"}
        # SIGINT as a terminal delivers it, whatever pytest inherited: a shell starts background jobs
        # with SIGINT ignored, and a child Python that inherits SIG_IGN never raises KeyboardInterrupt
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                                preexec_fn=default_sigint)
        try:
            t0 = time.monotonic()
            # wait until the run is inside a model stage (the first chunk of backtranslation saved), at most 30 s
            while rows_in(out, "backtranslate") == 0 and proc.poll() is None and time.monotonic() - t0 < 30:
                time.sleep(0.02)
            assert proc.poll() is None, "the run ended before it could be interrupted"
            proc.send_signal(signal.SIGINT)
            stdout, stderr = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        err = stderr.decode()
        assert proc.returncode == 130, err[-2000:]
        assert "Stopped. Finished rows are saved in" in err and str(out) in err
        assert "run the same command again to resume" in err
        assert "Traceback" not in err
        assert rows_in(out, "prepare") == 12 and rows_in(out, "backtranslate") >= 1
        assert not (out / "sft.jsonl").exists()  # nothing exported from a half run
        saved = {s: rows_in(out, s) for s in MODEL_STAGES}
        stub.settle()  # requests the interrupted run had on the wire land before we count
        before = len(stub.requests)

        done = subprocess.run(cmd, capture_output=True, env=env, timeout=120)
        assert done.returncode == 0, done.stderr.decode()[-2000:]
        again = Counter((stage_of(r["body"]), doc_number(r["body"])) for r in stub.requests[before:]
                        if isinstance(r["body"], dict))  # not a request cut off mid-send
    print(f"\nCtrl-C after {saved} rows saved; the resumed run sent {sum(again.values())} requests")
    sft, rejects = accounted(out, n=12)
    assert len(sft) == 12
    # the rows saved before Ctrl-C were not requested again
    assert sum(n for (s, _), n in again.items() if s == "backtranslate") == 12 - saved["backtranslate"]
    assert all(n == 1 for n in again.values())

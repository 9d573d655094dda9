"""Every way a user can get the CLI wrong ends in one message that names the culprit and an exit
code, never a traceback; a bug says "internal error" and where its traceback went.

Each test runs the real command line in a subprocess (`python -m backforth.cli ...`), the model
servers being the stub OpenAI server of `stub_openai.py` in this process.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from stub_openai import StubOpenAIServer

from backforth.pipeline import registry
from backforth.pipeline.store import StageStore

HYGIENE_STAGES = ("dedup_documents", "dedup_instructions", "decontaminate", "grounding")


def cli(*args: str, env: dict | None = None, timeout: float = 120, cwd: Path | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "CI": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "backforth.cli", *map(str, args)], capture_output=True, text=True,
                          env=full_env, timeout=timeout, cwd=cwd)


def clean_failure(res: subprocess.CompletedProcess, code: int = 2) -> str:
    """stdout + stderr of a run that failed with `code` and no traceback."""
    out = res.stdout + res.stderr
    assert res.returncode == code, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    if os.environ.get("BACKFORTH_ERROR_TABLE"):  # collect the messages for a table of error paths
        test = os.environ.get("PYTEST_CURRENT_TEST", "").split("::")[-1].split(" ")[0]
        with open(os.environ["BACKFORTH_ERROR_TABLE"], "a", encoding="utf-8") as f:
            f.write(json.dumps({"test": test, "code": res.returncode, "message": out.strip()[-600:]}) + "\n")
    return out


# ---- a stub server that answers every stage ----------------------------------------------------

def doc_text(i: int, words: int = 45) -> str:
    return f"Document {i} explains topic {i}. " + " ".join(f"fact{i}x{j}" for j in range(words))


def _stage_and_doc(body: dict) -> tuple[str, int]:
    text = "\n".join(str(m.get("content", "")) for m in body["messages"])
    for marker, stage in (("You classify web pages", "page_kind"), ("You find the question behind a text", "backtranslate"), ("You judge training data", "curate"),
                          ("Rewrite the draft", "rewrite")):
        if marker in text:
            return stage, int(re.search(r"Document (\d+) explains", text).group(1))
    return "distill", int(re.search(r"subject number (\d+)", text).group(1))


def make_responder(score=lambda i: 5, delay: float = 0.0):
    def respond(body: dict) -> str:
        if delay:
            time.sleep(delay)
        stage, i = _stage_and_doc(body)
        if stage == "backtranslate":
            return f"Instruction: What should I know about subject number {i} in practice?"
        if stage == "curate":
            return f"The answer is direct and complete for subject {i}.\nScore: {score(i)}"
        if stage == "rewrite":
            return f"[RES]Here is what to know about subject {i}: it is explained in detail.[/RES]"
        return f"A distilled answer about subject {i}."

    return respond


def write_docs(path: Path, n: int = 12, text=doc_text) -> Path:
    path.write_text("".join(json.dumps({"id": f"doc{i:03d}", "text": text(i)}) + "\n" for i in range(n)))
    return path


def write_config(tmp: Path, stub: StubOpenAIServer | None, docs: Path, *, base_url: str | None = None,
                 model: str = "stub-model", progress: bool = False, **sections) -> Path:
    served = {"engine": "openai", "model": model, "base_url": base_url or stub.base_url, "max_in_flight": 2,
              "timeout_s": 10.0, "max_retries": 1}
    cfg = {"input": {"path": str(docs)}, "models": {r: served for r in ("backward", "scorer", "rewriter", "distiller")},
           "runner": {"chunk_size": 2, "progress": progress}, "prepare": {"min_words": 5},
           **{stage: {"enabled": False} for stage in HYGIENE_STAGES}}
    for k, v in sections.items():
        if isinstance(v, dict):
            cfg.setdefault(k, {}).update(v)
        else:
            cfg[k] = v
    path = tmp / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def every_document_once(out: Path, n: int) -> None:
    ids = [r["id"] for r in read_jsonl(out / "sft.jsonl")] + [r["id"] for r in read_jsonl(out / "rejects.jsonl")]
    assert sorted(ids) == [f"doc{i:03d}" for i in range(n)]


@pytest.fixture
def stub():
    with StubOpenAIServer(responder=make_responder()) as server:
        yield server


# ---- a tmpfs, for a read-only run dir and a full disk that fail for root too --------------------

@contextmanager
def tmpfs(folder: Path, size: str):
    folder.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here ({res.stderr.strip() or res.returncode}): "
                    "a full or read-only disk cannot be made for this test")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def remount(folder: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(folder)], check=True, capture_output=True)


# ---- the run dir (--out) -----------------------------------------------------------------------

def test_out_naming_an_existing_file(tmp_path, stub):
    config = write_config(tmp_path, stub, write_docs(tmp_path / "docs.jsonl"))
    (tmp_path / "taken").write_text("a file")
    out = clean_failure(cli("run", config, "--out", tmp_path / "taken"))
    assert f"--out {tmp_path / 'taken'}: a file is there, not a folder" in out
    assert stub.count["/v1/models"] == 0  # it failed before asking the server anything


def test_out_inside_a_file(tmp_path, stub):
    config = write_config(tmp_path, stub, write_docs(tmp_path / "docs.jsonl"))
    (tmp_path / "taken").write_text("a file")
    out = clean_failure(cli("run", config, "--out", tmp_path / "taken" / "sub"))
    assert f"{tmp_path / 'taken'} is a file, so no folder can be made inside it" in out


def test_out_that_cannot_be_written(tmp_path, stub):
    """/proc refuses a new folder even to root; a read-only disk too; chmod only stops others."""
    config = write_config(tmp_path, stub, write_docs(tmp_path / "docs.jsonl"))
    out = clean_failure(cli("run", config, "--out", "/proc/backforth-run"))
    assert "--out /proc/backforth-run: cannot write there" in out
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        out = clean_failure(cli("run", config, "--out", locked / "run"))
        assert f"--out {locked / 'run'}: cannot write there (Permission denied)" in out
        locked.chmod(0o700)
    with tmpfs(tmp_path / "ro", "1m") as ro:
        remount(ro, "ro")
        out = clean_failure(cli("run", config, "--out", ro / "run"))
        assert f"--out {ro / 'run'}: cannot write there (Read-only file system)" in out


def test_a_failed_check_leaves_no_empty_run_dir(tmp_path):
    config = write_config(tmp_path, None, write_docs(tmp_path / "docs.jsonl"), base_url="http://127.0.0.1:9/v1")
    out = clean_failure(cli("run", config, "--out", tmp_path / "new" / "run"), code=3)
    assert "cannot reach the model server at http://127.0.0.1:9/v1" in out
    assert not (tmp_path / "new").exists()


# ---- report / analyze ---------------------------------------------------------------------------

def test_report_and_analyze_on_a_folder_that_was_never_a_run(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "cat.jpg").write_bytes(b"\xff\xd8")
    for cmd in (["report", folder], ["analyze", folder, "--no-tags"]):
        out = clean_failure(cli(*cmd))
        assert f"{folder}: not a run dir" in out
        assert "has not finished exporting" not in out


@pytest.fixture
def finished_run(tmp_path, stub) -> Path:
    config = write_config(tmp_path, stub, write_docs(tmp_path / "docs.jsonl", n=6))
    res = cli("run", config, "--out", tmp_path / "run")
    assert res.returncode == 0, res.stderr[-2000:]
    return tmp_path / "run"


def test_report_and_analyze_on_a_read_only_run_dir(tmp_path, finished_run):
    with tmpfs(tmp_path / "ro", "4m") as ro:
        shutil.copytree(finished_run, ro / "run")
        remount(ro, "ro")
        out = clean_failure(cli("report", ro / "run"))
        assert f"{ro / 'run'}: cannot write report.html there (Read-only file system)" in out
        out = clean_failure(cli("analyze", ro / "run", "--no-tags"))
        assert f"{ro / 'run'}: cannot write analysis.json and analysis.md there (Read-only file system)" in out


# ---- config and input ----------------------------------------------------------------------------

def test_a_typo_in_set_on_demo_blames_the_set(tmp_path):
    out = clean_failure(cli("demo", "--set", "curate.treshold=4", "--out", tmp_path / "demo"))
    assert "invalid --set override" in out and "--set curate.treshold: unknown field" in out
    assert "demo.yaml" not in out  # the bundled file is fine
    assert not (tmp_path / "demo").exists()


def test_a_wrong_text_field_names_the_fields_the_record_has(tmp_path, stub):
    docs = tmp_path / "docs.jsonl"
    docs.write_text(json.dumps({"id": "a", "body": doc_text(0), "url": "https://example.org"}) + "\n")
    config = write_config(tmp_path, stub, docs)
    out = clean_failure(cli("run", config, "--out", tmp_path / "run"))
    assert "input.text_field 'text': the first record (docs.jsonl:1) has no such field" in out
    assert "its fields are 'id', 'body', 'url'" in out
    assert not (tmp_path / "run").exists()


def test_an_empty_input_is_a_warning_and_a_note(tmp_path, stub):
    docs = tmp_path / "empty.jsonl"
    docs.write_text("")
    config = write_config(tmp_path, stub, docs)
    res = cli("run", config, "--out", tmp_path / "run")
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-2000:]
    assert "Traceback" not in out
    assert f"warning: input {docs} holds no documents: the run will export nothing" in out
    assert f"note: the input had no documents ({docs}), so nothing was exported" in out


def test_seed_from_the_hub_offline_fails_fast(tmp_path):
    env = {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "",
           "HF_DATASETS_OFFLINE": ""}
    out = clean_failure(cli("seed", "--from", "OpenAssistant/oasst1", "--out", tmp_path / "seed.jsonl", env=env))
    assert "Retrying" not in out and "[Retry" not in out  # no retry noise before the message
    assert "cannot load hub dataset 'OpenAssistant/oasst1'" in out
    assert "the Hugging Face hub (http://127.0.0.1:9) cannot be reached" in out and "not in the local cache" in out
    assert "Retrying" not in out and out.count("\n") <= 3  # one message, no pages of retries


# ---- bugs -----------------------------------------------------------------------------------------

PLANTED_BUG = ("import sys, backforth.docs as docs, backforth.cli as cli\n"
               "def planted(): raise ZeroDivisionError('a planted bug')\n"
               "docs.config_markdown = planted\n"
               "sys.argv = ['backforth', *sys.argv[1:]]\n"
               "cli.main()\n")


def test_a_bug_says_internal_error_and_where_the_traceback_is(tmp_path):
    env = {**os.environ, "BACKFORTH_CACHE": str(tmp_path / "cache")}
    res = subprocess.run([sys.executable, "-c", PLANTED_BUG, "config-doc"], capture_output=True, text=True, env=env)
    out = res.stdout + res.stderr
    log = tmp_path / "cache" / "last-error.log"
    assert res.returncode == 1 and "Traceback" not in out, out
    assert "internal error: ZeroDivisionError: a planted bug" in out and str(log) in out and "--debug" in out
    assert "Traceback" in log.read_text() and "planted" in log.read_text()

    res = subprocess.run([sys.executable, "-c", PLANTED_BUG, "--debug", "config-doc"], capture_output=True, text=True,
                         env=env)
    assert res.returncode == 1
    assert "Traceback" in res.stderr and "ZeroDivisionError: a planted bug" in res.stderr


# ---- a full disk ----------------------------------------------------------------------------------

def test_a_full_disk_is_a_message_and_the_same_command_resumes(tmp_path, stub):
    rng = random.Random(0)
    n = 120

    def big(i: int) -> str:  # random words: parquet cannot compress them to nothing
        return f"Document {i} explains topic {i}. " + " ".join(f"{rng.getrandbits(32):08x}" for _ in range(300))

    config = write_config(tmp_path, stub, write_docs(tmp_path / "docs.jsonl", n=n, text=big))
    with tmpfs(tmp_path / "disk", "512k") as disk:
        out_dir = disk / "run"
        out = clean_failure(cli("run", config, "--out", out_dir, timeout=300))
        assert re.search(rf"cannot write {re.escape(str(out_dir))}/stages/\w+/part-\d+-\w+\.parquet: no space left on the "
                         "device", out), out[-2000:]
        assert "Free space on that disk, or move the run dir" in out and "run the same command again" in out
        saved = {p.name: sum(1 for _ in StageStore(p).ids()) for p in (out_dir / "stages").iterdir()}
        assert saved.get("prepare") and not (out_dir / "sft.jsonl").exists()
        assert not list(out_dir.rglob(".tmp-*"))  # no half-written shard left
        remount(disk, "size=32m")
        res = cli("run", config, "--out", out_dir, timeout=300)
        assert res.returncode == 0, (res.stdout + res.stderr)[-2000:]
        assert "resuming: prepare" in res.stdout
        every_document_once(out_dir, n)


def test_a_write_over_quota_names_the_shard_and_keeps_what_was_saved(tmp_path, monkeypatch):
    """pyarrow reports the errno in its text only ("[errno 122] ..."): still a message, not a traceback."""
    import pyarrow.parquet as pq

    from backforth.pipeline.store import DiskFull

    store = StageStore(tmp_path / "run" / "stages" / "prepare")
    store.write([{"id": "a", "_index": 0, "_status": "done", "text": "kept"}])

    def over_quota(*_a, **_k):
        raise OSError("Error writing bytes to file. Detail: [errno 122] Disk quota exceeded")

    monkeypatch.setattr(pq, "write_table", over_quota)
    with pytest.raises(DiskFull) as err:
        store.write([{"id": "b", "_index": 1, "_status": "done", "text": "lost"}])
    assert f"cannot write {store.path}/part-000000000001-" in str(err.value) and "disk quota exceeded" in str(err.value)
    assert f"move the run dir {tmp_path / 'run'} to a bigger one" in str(err.value)
    assert [r["id"] for r in store.rows()] == ["a"] and not list(store.path.glob(".tmp-*"))


# ---- resume and SIGTERM ---------------------------------------------------------------------------

def test_resume_says_what_is_done_and_what_is_left(tmp_path, stub):
    config = write_config(tmp_path, stub, write_docs(tmp_path / "docs.jsonl"))
    out_dir = tmp_path / "run"
    res = cli("run", config, "--out", out_dir, "--until", "backtranslate")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "resuming" not in res.stdout  # a new run dir
    res = cli("run", config, "--out", out_dir)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "resuming: prepare 12/12 done, page_kind 12/12 done, backtranslate 12/12 done, curate 0/12 done, 12 to go" in res.stdout
    assert res.stdout.index("resuming") < res.stdout.index("funnel")
    every_document_once(out_dir, 12)


def test_sigterm_stops_like_ctrl_c_with_exit_code_143(tmp_path):
    with StubOpenAIServer(responder=make_responder(delay=0.1)) as stub:
        config = write_config(tmp_path, stub, write_docs(tmp_path / "docs.jsonl"))
        out_dir = tmp_path / "run"
        cmd = [sys.executable, "-m", "backforth.cli", "run", str(config), "--out", str(out_dir)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "CI": "1"})
        try:
            t0 = time.monotonic()
            while not StageStore(out_dir / "stages" / "backtranslate").exists() and proc.poll() is None \
                    and time.monotonic() - t0 < 60:
                time.sleep(0.02)
            assert proc.poll() is None, "the run ended before it could be stopped"
            proc.send_signal(signal.SIGTERM)
            stdout, stderr = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 143, stderr[-2000:]
        assert f"Stopped. Finished rows are saved in {out_dir}; run the same command again to resume." in stderr
        assert "Traceback" not in stdout + stderr
        saved = sum(1 for _ in StageStore(out_dir / "stages" / "backtranslate").ids())
        assert saved >= 1 and not (out_dir / "sft.jsonl").exists()
        res = cli("run", config, "--out", out_dir)
        assert res.returncode == 0, res.stderr[-2000:]
        assert "resuming: prepare 12/12 done" in res.stdout
    every_document_once(out_dir, 12)


# ---- progress in a log ----------------------------------------------------------------------------

def test_progress_in_a_log_is_plain_lines_with_rate_and_eta(tmp_path):
    with StubOpenAIServer(responder=make_responder(delay=0.1)) as stub:
        config = write_config(tmp_path, stub, write_docs(tmp_path / "docs.jsonl"), progress=True)
        res = cli("run", config, "--out", tmp_path / "run", env={"BACKFORTH_PROGRESS_INTERVAL": "0.2"})
    assert res.returncode == 0, res.stderr[-2000:]
    err = res.stderr
    assert "\r" not in err  # no bar redrawn in place
    assert "stage 3 of 8 (backtranslate): 12 rows to do" in err
    assert re.search(r"^backtranslate: \d+/12 rows \(\d+%\), [\d.]+ rows/s, ETA \S+$", err, re.MULTILINE), err
    assert re.search(r"^run: stage \d of 8 \(\w+\), ETA for the run \S+(?: \(past the estimate\))? \(from [\d,]+ tokens in \S+ so far\)$", err,
                     re.MULTILINE), err
    assert "distill: 12 rows in" in err


# ---- a run that exports almost nothing -------------------------------------------------------------

def test_a_run_exporting_under_a_tenth_says_why_and_what_to_change(tmp_path):
    with StubOpenAIServer(responder=make_responder(score=lambda i: 5 if i == 0 else 2)) as stub:
        config = write_config(tmp_path, stub, write_docs(tmp_path / "docs.jsonl"))
        res = cli("run", config, "--out", tmp_path / "run")
    assert res.returncode == 0, res.stderr[-2000:]
    err = res.stderr
    assert "only 1 of 12 documents (8.3%) were exported." in err
    assert "curate scores  1: 0  2: 11  3: 0  4: 0  5: 1" in err
    assert "main rejects  curate:low_score 11" in err
    for knob in ("curate.threshold (now 5)", "curate.threshold_on (now score)", "curate.keep_share (now None)",
                 "models.scorer.model (now stub-model)", "variant: rewrite", "docs/rejects.md"):
        assert knob in err, knob


# ---- help -------------------------------------------------------------------------------------------

def _commands() -> list[list[str]]:
    from typer.main import get_command

    from backforth.cli import app

    found: list[list[str]] = []

    def walk(cmd, path):
        found.append(path)
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, path + [name])

    walk(get_command(app), [])
    return found


def test_help_matches_the_code():
    env = {"COLUMNS": "200"}
    text = " ".join(re.sub("[│╭╮╰╯─]", " ", cli("run", "--help", env=env).stdout).split())  # the words, no box
    until = text.split("--until", 1)[1].split("--help")[0]
    assert ", ".join(registry.NAMES) in until and "export" not in until
    assert "NAME=FILE[@SIZE]" in cli("eval", "compare", "--help", env=env).stdout
    res = cli("--version")
    from backforth import __version__
    assert res.returncode == 0 and res.stdout.strip() == f"backforth {__version__}"
    short, long = cli("eval", "judge", "-h", env=env), cli("eval", "judge", "--help", env=env)
    assert short.returncode == 0 and short.stdout == long.stdout and "--both-orders" in long.stdout

    # every command, in process (the same app; a subprocess per command would take a while)
    from typer.testing import CliRunner

    from backforth.cli import app

    invoke = CliRunner().invoke
    for path in _commands():
        short, long = invoke(app, [*path, "-h"], terminal_width=200), invoke(app, [*path, "--help"], terminal_width=200)
        assert short.exit_code == 0 and short.output == long.output, path
        assert "<bool>" not in long.output, path  # a flag takes no value

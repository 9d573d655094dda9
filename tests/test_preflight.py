"""The checks made in seconds before any long work (`backforth.preflight`): input, run dir, model
servers (the stub OpenAI server: down, up, serving another model, silent), model paths."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from stub_openai import StubOpenAIServer

from backforth import preflight
from backforth.config import build_config
from backforth.errors import UserError
from backforth.preflight import ServerUnreachable, check

ROLES = ("backward", "scorer", "rewriter", "distiller")


def docs(tmp: Path, rows: list[dict] | None = None) -> Path:
    path = tmp / "docs.jsonl"
    rows = [{"id": "a", "text": "word " * 50}] if rows is None else rows
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def served(base_url: str, model: str = "stub-model", **roles) -> dict:
    m = {"engine": "openai", "model": model, "base_url": base_url}
    return {r: {**m, **roles.get(r, {})} for r in ROLES}


def config(tmp: Path, models: dict | None = None, **sections):
    data = {"input": {"path": str(docs(tmp))}, "models": models or {}, **sections}
    return build_config(data)


# ---- servers ----------------------------------------------------------------------------------------

def count_gets(monkeypatch) -> list:
    """The timeouts of the GETs preflight makes from now on (it calls httpx.get)."""
    import httpx

    real, calls = httpx.get, []

    def get(*args, **kwargs):
        calls.append(kwargs.get("timeout"))
        return real(*args, **kwargs)

    monkeypatch.setattr(httpx, "get", get)
    return calls


def test_a_server_that_is_up_and_serves_the_model(tmp_path):
    with StubOpenAIServer() as stub:
        check(config(tmp_path, served(stub.base_url)), tmp_path / "run")
        assert stub.count["/v1/models"] == 1  # four roles, one server: asked once
        assert stub.count["/v1/chat/completions"] == 0


def test_a_server_that_is_down(tmp_path, monkeypatch):
    stub = StubOpenAIServer().start()
    url = stub.base_url
    stub.stop()  # nothing listens on its port any more
    calls = count_gets(monkeypatch)
    with pytest.raises(ServerUnreachable) as err:
        check(config(tmp_path, served(url)), tmp_path / "run")
    assert len(calls) == 1  # one GET /models, no retries: the answer comes in seconds
    assert f"models.scorer.base_url: cannot reach the model server at {url}" in str(err.value)  # page_kind: the first
    assert err.value.exit_code == 3
    assert not (tmp_path / "run").exists()


def test_a_server_that_accepts_but_never_answers_times_out(tmp_path, monkeypatch):
    monkeypatch.setenv(preflight.TIMEOUT_ENV, "0.5")
    with socket.socket() as sock:  # connections wait in the backlog; nobody reads them
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
        calls = count_gets(monkeypatch)
        with pytest.raises(ServerUnreachable, match="ReadTimeout"):
            check(config(tmp_path, served(url)), tmp_path / "run")
        assert calls == [0.5]  # one GET, with the short timeout, no retries


def test_a_server_that_serves_another_model(tmp_path):
    with StubOpenAIServer(model="qwen2.5-7b-instruct") as stub:
        url = stub.base_url
        with pytest.raises(UserError) as err:
            check(config(tmp_path, served(url, model="llama-3-8b")), tmp_path / "run")
    assert str(err.value).startswith(f"models.scorer.model: {url} serves qwen2.5-7b-instruct, not llama-3-8b")


def test_only_the_roles_the_run_uses_are_checked(tmp_path):
    with StubOpenAIServer() as stub:
        dead = {"base_url": "http://127.0.0.1:9/v1"}
        models = served(stub.base_url, scorer=dead)
        check(config(tmp_path, models, variant="rewrite"), tmp_path / "run")  # no curation: no scorer
        check(config(tmp_path, models), tmp_path / "run", until="dedup_documents")  # before page_kind, the first scorer stage
        check(config(tmp_path, models, page_kind={"enabled": False}), tmp_path / "run", until="backtranslate")
        with pytest.raises(ServerUnreachable, match="models.scorer.base_url"):
            check(config(tmp_path, models), tmp_path / "run")


def test_an_api_key_variable_that_is_not_set(tmp_path, monkeypatch):
    monkeypatch.delenv("BACKFORTH_NO_SUCH_KEY", raising=False)
    with StubOpenAIServer() as stub:
        models = served(stub.base_url, backward={"api_key_env": "BACKFORTH_NO_SUCH_KEY"})
        with pytest.raises(UserError, match="models.backward.api_key_env: environment variable BACKFORTH_NO_SUCH_KEY"):
            check(config(tmp_path, models), tmp_path / "run")


def test_the_cli_stops_before_any_work_when_the_server_serves_another_model(tmp_path):
    with StubOpenAIServer(model="other-model") as stub:
        cfg = tmp_path / "run.yaml"
        cfg.write_text(json.dumps({"input": {"path": str(docs(tmp_path))}, "models": served(stub.base_url),
                                   "runner": {"progress": False}}))
        res = subprocess.run([sys.executable, "-m", "backforth.cli", "run", str(cfg), "--out", str(tmp_path / "run")],
                             capture_output=True, text=True, timeout=60)
        posts, url = stub.count["/v1/chat/completions"], stub.base_url
    out = res.stdout + res.stderr
    assert res.returncode == 2 and "Traceback" not in out, out
    assert f"models.scorer.model: {url} serves other-model, not stub-model" in out
    assert posts == 0 and not (tmp_path / "run").exists()


# ---- input ------------------------------------------------------------------------------------------

def test_the_input_must_exist(tmp_path):
    cfg = config(tmp_path, input={"path": str(tmp_path / "nowhere.jsonl")})
    with pytest.raises(UserError, match="nowhere.jsonl: no such file"):
        check(cfg, tmp_path / "run", servers=False)


def test_the_first_record_must_have_the_text_field(tmp_path):
    path = docs(tmp_path, [{"id": "a", "content": "x", "lang": "en"}, {"id": "b", "text": "y"}])
    cfg = build_config({"input": {"path": str(path)}})
    with pytest.raises(UserError) as err:
        check(cfg, tmp_path / "run", servers=False)
    assert "input.text_field 'text': the first record (docs.jsonl:1) has no such field; its fields are 'id', " \
           "'content', 'lang'" in str(err.value)
    check(build_config({"input": {"path": str(path), "text_field": "content"}}), tmp_path / "run", servers=False)


def test_a_broken_first_line_is_a_row_reject_not_a_failed_check(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text('{"id": "a", "te\n' + json.dumps({"id": "b", "text": "word " * 50}) + "\n")
    check(build_config({"input": {"path": str(path)}}), tmp_path / "run", servers=False)


def test_an_empty_input_is_a_warning(tmp_path, caplog):
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    caplog.set_level(logging.INFO, logger="backforth")
    result = check(build_config({"input": {"path": str(path)}}), tmp_path / "run", servers=False)
    said = [r.getMessage() for r in caplog.records if r.name.startswith("backforth")]
    assert result.empty_input
    assert said == [f"warning: input {path} holds no documents: the run will export nothing"]


# ---- the run dir ------------------------------------------------------------------------------------

def test_the_run_dir_check_leaves_nothing_behind(tmp_path):
    out = tmp_path / "a" / "b" / "run"
    check(config(tmp_path), out, servers=False, model_paths=False)
    assert not (tmp_path / "a").exists()
    out.mkdir(parents=True)
    (out / "keep.txt").write_text("mine")
    check(config(tmp_path), out, servers=False, model_paths=False)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]  # an existing run dir is left as it was


def test_a_file_where_the_run_dir_should_be(tmp_path):
    (tmp_path / "taken").write_text("x")
    with pytest.raises(UserError, match="a file is there, not a folder"):
        check(config(tmp_path), tmp_path / "taken", servers=False)
    with pytest.raises(UserError, match="is a file, so no folder can be made inside it"):
        check(config(tmp_path), tmp_path / "taken" / "run", servers=False)


# ---- model paths ------------------------------------------------------------------------------------

def test_local_model_paths_and_adapters_must_exist(tmp_path):
    (tmp_path / "models").mkdir()
    missing = {"backward": {"engine": "transformers", "model": str(tmp_path / "models" / "backward")}}
    with pytest.raises(UserError, match=r"models.backward.model: .*models/backward: no such file or folder"):
        check(config(tmp_path, missing), tmp_path / "run", servers=False)
    adapter = {"backward": {"engine": "transformers", "model": "embedded", "adapter": str(tmp_path / "lora")}}
    with pytest.raises(UserError, match=r"models.backward.adapter: .*lora: no such folder"):
        check(config(tmp_path, adapter), tmp_path / "run", servers=False)
    (tmp_path / "lora").mkdir()
    check(config(tmp_path, adapter), tmp_path / "run", servers=False)


def test_embedded_and_hub_names_are_left_to_the_engine(tmp_path):
    models = {"backward": {"engine": "transformers", "model": "embedded:qwen2.5-coder-0.5b"},
              "scorer": {"engine": "transformers", "model": "HuggingFaceTB/SmolLM2-135M-Instruct"},
              "rewriter": {"engine": "vllm", "model": "gpt2"}}
    check(config(tmp_path, models), tmp_path / "run", servers=False)

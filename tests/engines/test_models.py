"""Where converted GGUF weights live: one conversion per file content, not per path."""

import os
import shutil

from backforth.engines import models


def test_content_key_is_shared_by_copies_and_hashed_once(tmp_path, monkeypatch):
    monkeypatch.setenv("BACKFORTH_CACHE", str(tmp_path / "cache"))
    a = tmp_path / "venv1" / "m.gguf"
    a.parent.mkdir()
    a.write_bytes(b"GGUF" + os.urandom(4096))
    b = tmp_path / "venv2" / "m.gguf"  # a fresh virtualenv's copy of the same wheel
    b.parent.mkdir()
    shutil.copy(a, b)
    key = models.content_key(a)
    assert models.content_key(b) == key and len(key) == 16

    calls = []
    real = models.hashlib.file_digest
    monkeypatch.setattr(models.hashlib, "file_digest", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert models.content_key(a) == key and calls == []  # remembered by path, size and mtime

    b.write_bytes(b"GGUF" + os.urandom(4096))  # other weights at the same path
    assert models.content_key(b) != key and calls == [1]

    shutil.rmtree(a.parent)  # a removed virtualenv drops out of the memo at its next write
    b.write_bytes(b"GGUF" + os.urandom(4096))
    models.content_key(b)
    memo = (tmp_path / "cache" / "converted" / "digests.json").read_text()
    assert "venv1" not in memo and "venv2" in memo


def test_models_clean_removes_only_conversions_nothing_maps_to(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from backforth.cli import app

    monkeypatch.setenv("BACKFORTH_CACHE", str(tmp_path / "cache"))
    kept, gone = tmp_path / "a.gguf", tmp_path / "b.gguf"
    kept.write_bytes(b"GGUF a")
    gone.write_bytes(b"GGUF b")
    conv = tmp_path / "cache" / "converted"
    folders = {
        "kept": conv / f"a-{models.content_key(kept)}-bfloat16",
        "file removed": conv / f"b-{models.content_key(gone)}-bfloat16",
        "older scheme": conv / "a-0123456789ab-bfloat16",
        "being written": conv / f".a-{models.content_key(kept)}-float32.123.tmp",
    }
    for d in folders.values():
        d.mkdir(parents=True)
        (d / "model.safetensors").write_bytes(b"x" * 1000)
    gone.unlink()

    out = CliRunner().invoke(app, ["models", "--clean"])
    assert out.exit_code == 0, out.output
    assert {k for k, d in folders.items() if d.exists()} == {"kept", "being written"}
    assert "freed 0.00 GB" in out.output and "a-0123456789ab-bfloat16" in out.output

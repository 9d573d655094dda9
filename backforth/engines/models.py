"""Finding and loading weights for in-process engines: embedded models, folders, GGUF, LoRA.

GGUF files are de-quantised by transformers on load (15-30 s), so the result is cached once as
safetensors under `$BACKFORTH_CACHE` (default `~/.cache/backforth`), in the dtype the engine runs
in (a float32 copy of a 1.5B model is 6 GB; bfloat16 is half that), and later loads take seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

from .. import embedded
from .base import EngineError


def cache_dir() -> Path:
    return embedded.cache_dir()


def resolve_gguf(model: str, gguf_file: str | None) -> Path | None:
    """The GGUF file a model spec points at, or None for ordinary HF weights."""
    if embedded.is_embedded(model):
        try:
            return embedded.gguf_path(model)
        except embedded.EmbeddedModelError as err:
            raise EngineError(str(err)) from None
    p = Path(model).expanduser()
    if p.is_file() and p.suffix == ".gguf":
        return p
    if gguf_file:
        f = p / gguf_file
        if not f.is_file():
            raise EngineError(f"models.*.gguf_file: {f} not found")
        return f
    return None


def _dtype_name(dtype) -> str:
    return str(dtype).replace("torch.", "") if dtype is not None else "float32"


def content_key(path: Path) -> str:
    """A short sha256 of `path`'s bytes, so that every copy of the same weights (a fresh virtualenv, a
    second clone, a moved file) shares one conversion. The file is hashed once: `digests.json` beside the
    conversions remembers the digest by path, size and mtime (entries for files gone are dropped)."""
    st = path.stat()
    stamp = f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"
    memo_file = cache_dir() / "converted" / "digests.json"
    memo = _live_digests(memo_file)
    if stamp in memo:
        return memo[stamp]
    with open(path, "rb") as fh:
        digest = hashlib.file_digest(fh, "sha256").hexdigest()[:16]
    memo[stamp] = digest
    memo_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = memo_file.with_name(f".{memo_file.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(memo, indent=1))
    os.replace(tmp, memo_file)
    return digest


def _live_digests(memo_file: Path) -> dict[str, str]:
    """The memo of `content_key` ("path:size:mtime" -> digest), without the entries of files now gone."""
    try:
        memo = json.loads(memo_file.read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in memo.items() if Path(k.rsplit(":", 2)[0]).exists()}


def prune_conversions() -> list[tuple[Path, int]]:
    """Remove the converted folders no GGUF on this machine maps to any more (its file gone, or a
    conversion named by an older scheme) and half-written ones; each comes back as (folder, bytes
    freed). A GGUF not used since it was last converted is hashed again on its next use, and converted
    again if its folder went."""
    folder = cache_dir() / "converted"
    live = set(_live_digests(folder / "digests.json").values())
    removed = []
    for d in sorted(folder.iterdir()) if folder.is_dir() else []:
        if not d.is_dir():
            continue
        key = d.name.rsplit("-", 2)[-2] if d.name.count("-") >= 2 else ""
        half_written = d.name.endswith(".tmp") and time.time() - d.stat().st_mtime > 3600  # not one being written now
        if half_written or (not d.name.endswith(".tmp") and key not in live):
            size = sum(f.stat().st_size for f in d.rglob("*") if f.is_file())
            shutil.rmtree(d, ignore_errors=True)
            removed.append((d, size))
    return removed


def converted_gguf(gguf: Path, dtype=None) -> Path:
    """A safetensors folder for `gguf` in `dtype` (default: the CPU's engine dtype), converting it on first use.

    The folder is named by the file's content, not its path, so reinstalling the package that ships it
    (a fresh clone's virtualenv) finds the conversion already made instead of adding another copy."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .device import pick_dtype

    dtype = dtype or pick_dtype("auto", "cpu")
    out = cache_dir() / "converted" / f"{gguf.stem}-{content_key(gguf)}-{_dtype_name(dtype)}"
    if (out / "config.json").is_file() and any(out.glob("*.safetensors")):
        return out
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=dtype)
    # A GGUF-loaded model refuses to serialise while it still carries its quantizer.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")  # two processes converting at once each write their own
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        del model
        if not out.exists():
            tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def resolve_model_dir(model: str, gguf_file: str | None = None, dtype=None) -> tuple[str, str | None]:
    """(weights to load with from_pretrained, LoRA adapter folder or None)."""
    gguf = resolve_gguf(model, gguf_file)
    if gguf is not None:
        return str(converted_gguf(gguf, dtype)), None
    p = Path(model).expanduser()
    if (p / "adapter_config.json").is_file():
        base = json.loads((p / "adapter_config.json").read_text()).get("base_model_name_or_path")
        if not base:
            raise EngineError(f"{p}/adapter_config.json names no base_model_name_or_path")
        base_dir, _ = resolve_model_dir(base, dtype=dtype)
        return base_dir, str(p)
    if p.exists() and not (p / "config.json").is_file():
        raise EngineError(f"model folder {p} has no config.json (nor adapter_config.json)")
    return model, None

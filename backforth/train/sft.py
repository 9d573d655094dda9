"""Fine-tuning the method's models with trl's `SFTTrainer`: backward, forward (M0) and the final SFT.

The paper fine-tunes three kinds of model (Nguyen et al. 2024 §3.1, App. A.3; Li et al. 2023 §2):

* backward M_yx: seed pairs reversed, response -> instruction. It is prompted at generation time
  with the `backtranslate_trained` template, so it is trained on that very template and ships the
  template text next to its weights (`backforth_backward.jinja`, read back by the runner);
* forward M0: the seed pairs, each instruction tagged "Answer in the style of an AI Assistant.";
* final SFT: the seed pairs (tagged as above) plus a run's `sft.jsonl` pairs (tagged "Answer with
  knowledge from web search." by `export`). `tags=False` removes both tags: the paper's ablation.

This module holds those entry points and `merge`; the parts live in `config` (settings),
`examples` (data), `trainer` (model loading, the trainer, resuming, saving) and `card` (the
README). Their public names are re-exported here, so `from backforth.train.sft import ...` keeps
working for all of them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..prompts import TRAINED_TEMPLATE_FILE
from .card import model_card
from .config import Direction, TrainConfig, TrainError, load_train_config
from .examples import (
    backward_examples,
    backward_template,
    drop_too_long,
    example_length,
    forward_examples,
    load_sft_rows,
    sft_examples,
)
from .trainer import (
    CHECKPOINTS,
    FINGERPRINT_FILE,
    STATS_FILE,
    TrainResult,
    build_trainer,
    load_model,
    load_tokenizer,
    lora_config,
    resolve_base,
    run_training,
    sft_config,
    training_device,
    use_bf16,
)

__all__ = [
    "CHECKPOINTS", "FINGERPRINT_FILE", "STATS_FILE", "Direction", "TrainConfig", "TrainError", "TrainResult",
    "backward_examples", "backward_template", "build_trainer", "drop_too_long", "example_length",
    "forward_examples", "load_model", "load_sft_rows", "load_tokenizer", "load_train_config", "lora_config",
    "merge", "model_card", "resolve_base", "run_training", "sft_config", "sft_examples", "train_backward",
    "train_forward", "train_sft", "training_device", "use_bf16",
]


def _prepare_cfg(cfg: TrainConfig | None, direction: Direction, **updates: Any) -> TrainConfig:
    return (cfg or TrainConfig()).model_copy(update={"direction": direction, **updates})


def train_backward(seed_rows: Sequence[dict], out_dir: str | os.PathLike, cfg: TrainConfig | None = None) -> TrainResult:
    """The backward model M_yx: response -> instruction, on the template it will be prompted with."""
    cfg = _prepare_cfg(cfg, "backward")
    template = backward_template(cfg)
    examples = backward_examples(seed_rows, template)
    return run_training(examples, out_dir, cfg, {"seed": len(seed_rows)},
                        {TRAINED_TEMPLATE_FILE: template.source})


def train_forward(seed_rows: Sequence[dict], out_dir: str | os.PathLike, cfg: TrainConfig | None = None) -> TrainResult:
    """The forward model M0 (seed pairs only, seed tag appended); in Humpback it also scores."""
    cfg = _prepare_cfg(cfg, "forward")
    examples = forward_examples(seed_rows, cfg.seed_tag if cfg.tags else None)
    return run_training(examples, out_dir, cfg, {"seed": len(seed_rows)})


def train_sft(run: str | os.PathLike | Sequence[dict], seed_rows: Sequence[dict], out_dir: str | os.PathLike,
              cfg: TrainConfig | None = None, tags: bool | None = None) -> TrainResult:
    """The final model: seed + a run's pairs, tagged by source unless `tags=False` (paper ablation)."""
    cfg = _prepare_cfg(cfg, "sft", **({} if tags is None else {"tags": tags}))
    web = load_sft_rows(run)
    if not web:
        raise TrainError(f"{run}: no pairs in the run's sft.jsonl; nothing to add to the seed")
    examples = sft_examples(web, seed_rows, cfg.tags, cfg.seed_tag, cfg.web_tag)
    return run_training(examples, out_dir, cfg, {"seed": len(seed_rows), "web": len(web)})


def merge(adapter_dir: str | os.PathLike, out_dir: str | os.PathLike, dtype: str = "float32") -> Path:
    """Fold a LoRA adapter into its base and write full weights + tokenizer (for vLLM, llama.cpp)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter = Path(adapter_dir)
    conf = adapter / "adapter_config.json"
    if not conf.is_file():
        raise TrainError(f"{adapter}: no adapter_config.json; it is not a LoRA adapter folder (full weights need no merge)")
    base = json.loads(conf.read_text()).get("base_model_name_or_path")
    if not base:
        raise TrainError(f"{conf}: names no base_model_name_or_path")
    model = AutoModelForCausalLM.from_pretrained(resolve_base(base), dtype=dtype)
    model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    out = Path(out_dir)
    model.save_pretrained(str(out))
    AutoTokenizer.from_pretrained(str(adapter)).save_pretrained(str(out))
    for name in (TRAINED_TEMPLATE_FILE, "training_config.yaml", "README.md"):
        if (adapter / name).is_file():
            (out / name).write_text((adapter / name).read_text(encoding="utf-8"), encoding="utf-8")
    return out

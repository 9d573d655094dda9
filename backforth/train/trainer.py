"""One training run with trl's `SFTTrainer`: load the base, pick device and bf16, train, save.

The output folder is what `engines.transformers.TransformersEngine(model=<folder>)` loads: a LoRA
adapter whose `adapter_config.json` names a loadable local base folder (or full weights), the
tokenizer with its chat template, `training_config.yaml` and a model card `README.md`.
Re-running the same command resumes from the newest checkpoint under `<out>/checkpoints`, unless
those checkpoints were made from other data or settings (then it refuses).
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from ..config import digest
from .card import model_card
from .config import TrainConfig, TrainError
from .result import TrainResult
from .examples import drop_too_long

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
FINGERPRINT_FILE = "fingerprint.json"
STATS_FILE = "train_stats.json"


# ----------------------------------------------------------------------------------------- model


def resolve_base(base_model: str) -> str:
    """A folder (or cached hub name) `from_pretrained` can load; the embedded GGUF is converted once."""
    from ..engines.base import EngineError
    from ..engines.models import resolve_model_dir

    try:
        weights, adapter = resolve_model_dir(base_model)
    except EngineError as err:
        raise TrainError(f"base_model {base_model!r}: {err}") from None
    if adapter:
        raise TrainError(f"base_model {base_model!r} is a LoRA adapter; merge it first "
                         f"(`backforth train merge {base_model} --out DIR`) and train on DIR")
    local = Path(weights).expanduser()
    if not local.exists() and (base_model.startswith((".", "/", "~")) or base_model.count("/") > 1):
        raise TrainError(f"base_model {base_model!r}: no such folder; give `embedded`, a model folder, "
                         "a .gguf file or a cached hub name")
    return str(local.resolve()) if local.exists() else weights


def load_tokenizer(base_path: str) -> Any:
    """The base's tokenizer; it must have a chat template, since every example is chat turns."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(base_path)
    except OSError as err:
        raise TrainError(f"cannot load the tokenizer of {base_path}: {err}. Give `embedded`, a local folder, "
                         "a .gguf file or a hub name already in the cache (nothing is downloaded offline)") from None
    if tokenizer.chat_template is None:
        raise TrainError(f"{base_path} has no chat template; the training examples are chat turns")
    return tokenizer


def load_model(base_path: str, attention_dropout: float | None = None) -> Any:
    """The base in fp32 (bf16 comes from autocast, so the weights and optimizer states stay exact).

    `attention_dropout` is set through the config because attention layers read it when built;
    models without that config field keep their own dropout.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(base_path)
        if attention_dropout is not None and hasattr(config, "attention_dropout"):
            config.attention_dropout = attention_dropout
        return AutoModelForCausalLM.from_pretrained(base_path, config=config, dtype="float32")
    except OSError as err:
        raise TrainError(f"cannot load base model {base_path}: {err}") from None


def use_bf16(setting: bool | str, device: str = "auto") -> bool:
    """`auto` follows the engine's rule: bf16 only where the hardware does it natively."""
    if setting != "auto":
        return bool(setting)
    import torch

    from ..engines.device import pick_dtype

    return pick_dtype("auto", training_device(device)) is torch.bfloat16


def training_device(setting: str = "auto") -> str:
    """`cpu` or `cuda` for a `device` setting (the engines' rule; `cuda` without a GPU is a TrainError)."""
    from ..engines.base import EngineError
    from ..engines.device import resolve_device

    try:
        return resolve_device(setting)
    except EngineError as err:
        raise TrainError(f"device: {err}") from None


def _other_accelerator() -> bool:
    """Apple MPS or Intel XPU, which the Trainer finds on its own when not told `use_cpu`."""
    import torch

    mps = getattr(torch.backends, "mps", None)
    xpu = getattr(torch, "xpu", None)
    return not torch.cuda.is_available() and (bool(mps and mps.is_available()) or bool(xpu and xpu.is_available()))


def lora_config(cfg: TrainConfig):
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=list(cfg.target_modules), bias="none", task_type="CAUSAL_LM")


def sft_config(cfg: TrainConfig, checkpoints: Path, n_examples: int):
    """trl's SFTConfig for these settings; the batch is reached by gradient accumulation."""
    from trl import SFTConfig

    batch = cfg.effective_batch(n_examples)
    per_device = min(cfg.per_device_batch_size, batch)
    if batch % per_device:
        raise TrainError(f"batch size {batch} is not a multiple of per_device_batch_size {per_device}")
    return SFTConfig(
        output_dir=str(checkpoints), per_device_train_batch_size=per_device,
        gradient_accumulation_steps=batch // per_device, learning_rate=cfg.peak_lr(),
        lr_scheduler_type=cfg.lr_scheduler, warmup_steps=cfg.warmup_ratio, weight_decay=cfg.weight_decay,
        num_train_epochs=cfg.num_epochs, max_steps=cfg.max_steps or -1, max_length=cfg.max_length,
        seed=cfg.seed, data_seed=cfg.seed, bf16=use_bf16(cfg.bf16, cfg.device), fp16=False,
        activation_checkpointing=cfg.gradient_checkpointing,
        use_cpu=training_device(cfg.device) == "cpu" and not (cfg.device == "auto" and _other_accelerator()),
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
        logging_steps=cfg.logging_steps, logging_first_step=True, save_strategy="steps",
        save_steps=cfg.save_steps, save_total_limit=cfg.save_total_limit, disable_tqdm=not cfg.progress,
        report_to="none", completion_only_loss=True, assistant_only_loss=False, packing=False,
        dataset_num_proc=None)


def build_trainer(examples: list[dict], model: Any, tokenizer: Any, cfg: TrainConfig, checkpoints: Path,
                  callbacks: Sequence[Any] = ()):
    """An SFTTrainer over prompt-completion examples (loss on completion tokens only)."""
    from datasets import Dataset
    from trl import SFTTrainer

    if not examples:
        raise TrainError("no training example left (empty data, or every example longer than max_length)")
    return SFTTrainer(model=model, args=sft_config(cfg, checkpoints, len(examples)),
                      train_dataset=Dataset.from_list(examples), processing_class=tokenizer,
                      peft_config=lora_config(cfg) if cfg.lora else None, callbacks=list(callbacks))


# -------------------------------------------------------------------------------------- training


def _step_timer():
    """A trainer callback timing optimizer steps; the median leaves out the first, which warms up."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self._t = 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            self._t = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.times.append(time.perf_counter() - self._t)

        def per_step(self) -> float | None:
            steady = self.times[1:] or self.times
            return statistics.median(steady) if steady else None

    return StepTimer()


@contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    """Use `n` CPU threads while training, then restore the caller's setting."""
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _check_resume(checkpoints: Path, fingerprint: str) -> str | None:
    """The newest checkpoint to resume from, or None; refuses checkpoints of other data/settings."""
    from transformers.trainer_utils import get_last_checkpoint

    stamp = checkpoints / FINGERPRINT_FILE
    last = get_last_checkpoint(str(checkpoints)) if checkpoints.is_dir() else None
    if last and stamp.is_file() and json.loads(stamp.read_text())["fingerprint"] != fingerprint:
        raise TrainError(f"{checkpoints} holds checkpoints trained on other data or settings; use another --out "
                         f"or delete {checkpoints} to start over")
    checkpoints.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps({"fingerprint": fingerprint}))
    return last


def _losses(log_history: list[dict]) -> tuple[float | None, float | None]:
    """(last logged loss, mean of logged losses), over every session of a resumed run."""
    losses = [float(h["loss"]) for h in log_history if "loss" in h]
    return (losses[-1], statistics.fmean(losses)) if losses else (None, None)


def _previous_step_time(out: Path) -> float | None:
    """A resumed run that had nothing left to do keeps the step time its first session measured."""
    stats = out / STATS_FILE
    return json.loads(stats.read_text()).get("seconds_per_step") if stats.is_file() else None


def run_training(examples: list[dict], out_dir: str | os.PathLike, cfg: TrainConfig, counts: dict[str, int],
                 extra_files: dict[str, str] | None = None) -> TrainResult:
    """Load the base, drop too-long examples, train (resuming), save model + tokenizer + card."""
    out = Path(out_dir)
    base_path = resolve_base(cfg.base_model)
    tokenizer = load_tokenizer(base_path)
    kept, dropped = drop_too_long(examples, tokenizer, cfg.max_length)
    if dropped:
        log.info(f"dropped {len(dropped)} of {len(examples)} examples longer than max_length={cfg.max_length} tokens")
    checkpoints = out / CHECKPOINTS
    resume = _check_resume(checkpoints, digest({"cfg": cfg.identity(), "data": kept}))
    if resume:
        log.info(f"resuming from {resume}")
    timer = _step_timer()
    trainer = build_trainer(kept, load_model(base_path, None if cfg.lora else cfg.lora_dropout), tokenizer, cfg, checkpoints, callbacks=[timer])
    with _torch_threads(cfg.threads):
        trainer.train(resume_from_checkpoint=resume)
    final, mean = _losses(trainer.state.log_history)
    result = TrainResult(out, cfg.direction, cfg.base_model, base_path, {**counts, "trained": len(kept)}, len(dropped),
                         trainer.state.global_step, final, mean, timer.per_step() or _previous_step_time(out), resume,
                         {"batch_size": cfg.effective_batch(len(kept)), "learning_rate": cfg.peak_lr()})
    _save(trainer, tokenizer, out, cfg, result, extra_files or {})
    return result


def _save(trainer: Any, tokenizer: Any, out: Path, cfg: TrainConfig, result: TrainResult,
          extra_files: dict[str, str]) -> None:
    trainer.save_model(str(out))
    tokenizer.save_pretrained(str(out))
    if cfg.lora:
        _point_adapter_at(out, result.base_path)
    for name, text in extra_files.items():
        (out / name).write_text(text, encoding="utf-8")
    (out / "training_config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    (out / "README.md").write_text(model_card(result, cfg), encoding="utf-8")
    (out / STATS_FILE).write_text(json.dumps(result.as_dict(), indent=2))


def _point_adapter_at(out: Path, base_path: str) -> None:
    """The engine loads `base_model_name_or_path`, so it must be the folder we trained on."""
    path = out / "adapter_config.json"
    conf = json.loads(path.read_text())
    if conf.get("base_model_name_or_path") != base_path:
        conf["base_model_name_or_path"] = base_path
        path.write_text(json.dumps(conf, indent=2))

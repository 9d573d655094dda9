"""Fine-tuning settings: `TrainConfig` and its YAML loader, and `TrainError`, which every part of
`backforth.train` raises for a problem the user can fix."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import UserError
from ..config import SEED_TAG, WEB_TAG, ConfigError, explain_validation, parse_overrides, read_yaml_mapping

Direction = Literal["backward", "forward", "sft"]


class TrainError(UserError):
    """A problem the user can fix (missing base model, no data, a run dir from other settings)."""


class TrainConfig(BaseModel):
    """Fine-tuning settings. Paper values are named in each description; the rest are our choices."""

    model_config = ConfigDict(extra="forbid")

    base_model: str = Field(
        "embedded", description="Model to fine-tune: `embedded[:name]` (a model shipped in PyPI wheels; plain `embedded`: Qwen2.5-Coder-0.5B-Instruct), a local "
        "folder, a .gguf file or a cached hub name (paper: Llama-2-7B/70B base).")
    direction: Direction = Field(
        "sft", description="What is trained: `backward` (response -> instruction), `forward` (seed only, M0) or "
        "`sft` (seed + a run's pairs). Set by the command that trains.")
    lora: bool = Field(True, description="Train a LoRA adapter (our default: CPU-sized) instead of full fine-tuning (paper).")
    lora_r: int = Field(16, ge=1, description="LoRA rank.")
    lora_alpha: int = Field(32, ge=1, description="LoRA scaling alpha (2 x rank, a common choice).")
    lora_dropout: float = Field(
        0.1, ge=0, lt=1, description="Paper: dropout 0.1. Applied to the LoRA path; with `lora: false` as the "
        "model's attention dropout.")
    target_modules: list[str] = Field(
        ["q_proj", "k_proj", "v_proj", "o_proj"], description="Modules that get LoRA weights: the attention projections.")
    learning_rate: float | None = Field(
        None, gt=0, description="Peak learning rate. Default: 2e-4 with LoRA (LoRA trains few, freshly "
        "initialised weights and needs about 10x the full fine-tuning rate), 1e-5 without (paper, 7B).")
    lr_scheduler: str = Field("cosine", description="Learning-rate schedule (paper: cosine).")
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="Share of steps for linear warmup (paper: not reported).")
    weight_decay: float = Field(0.1, ge=0, description="AdamW weight decay (paper: 0.1).")
    batch_size: int = Field(32, ge=1, description="Examples per optimizer step (paper: 32), reached by gradient accumulation.")
    small_data_batch_size: int | None = Field(
        8, ge=1, description="Batch size when there are fewer than `small_data_threshold` examples (Humpback "
        "Table 18: batch 8 below 3,000 examples); null keeps `batch_size`.")
    small_data_threshold: int = Field(3000, ge=0, description="See `small_data_batch_size` (Humpback: 3,000).")
    per_device_batch_size: int = Field(
        4, ge=1, description="Examples per forward pass; `batch_size` / this many passes are accumulated.")
    num_epochs: float = Field(
        3.0, gt=0, description="Passes over the data when `max_steps` is null (paper: 1-2.4 epochs for the final "
        "SFT; Humpback trains 3,200 seed pairs for 500 steps of 32, 5 epochs; 3 is our middle ground).")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps (paper, 7B: 600-1200).")
    max_length: int = Field(
        1024, ge=16, description="Longest example in tokens (prompt + completion); longer ones are dropped and "
        "counted, not truncated (paper: not reported).")
    seed: int = Field(0, description="Seed for the adapter initialisation and data order.")
    bf16: bool | Literal["auto"] = Field(
        "auto", description="bf16 autocast. `auto`: on where the GPU or CPU supports bf16 natively.")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where training runs: `auto` takes the GPU when torch sees one, else the CPU; `cuda` fails plainly without a GPU.")
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations to save memory (slower; off: a 135M model fits easily).")
    group_by_length: bool = Field(True, description="Batch examples of similar length together: less padding, faster on CPU.")
    logging_steps: int = Field(10, ge=1, description="Log the loss every this many steps.")
    save_steps: int = Field(50, ge=1, description="Checkpoint every this many steps; re-running resumes from the newest.")
    save_total_limit: int | None = Field(2, ge=1, description="Keep at most this many checkpoints.")
    threads: int | None = Field(
        None, ge=1, description="CPU threads for torch; default torch's own (one per core). On a machine shared with "
        "other jobs use fewer: threads waiting for a busy core slow every step several-fold.")
    progress: bool = Field(True, description="Show a progress bar with ETA.")
    tags: bool = Field(True, description="Append the data-source sentences (paper: on; off is the paper's ablation).")
    seed_tag: str = Field(SEED_TAG, description="Sentence appended to seed instructions (paper: 'Answer in the style of an AI Assistant.').")
    web_tag: str = Field(WEB_TAG, description="Sentence that ends web instructions in `sft.jsonl`, removed with `tags: false`.")
    backward_template: str | None = Field(
        None, description="A .jinja prompt file for the backward model; default the bundled `backtranslate_trained`.")

    def peak_lr(self) -> float:
        return self.learning_rate or (2e-4 if self.lora else 1e-5)

    def effective_batch(self, n_examples: int) -> int:
        """Humpback's rule: batch 8 for small data, else `batch_size`."""
        small = self.small_data_batch_size is not None and n_examples < self.small_data_threshold
        return self.small_data_batch_size if small else self.batch_size  # type: ignore[return-value]

    def identity(self) -> dict:
        """Settings that change the trained weights: a checkpoint made with others is not resumed."""
        skip = {"max_steps", "num_epochs", "logging_steps", "save_steps", "save_total_limit", "progress", "threads"}
        return self.model_dump(exclude=skip)


def load_train_config(path: str | os.PathLike | None = None, overrides: Sequence[str] | None = None) -> TrainConfig:
    """A TrainConfig from a YAML file (flat keys) and `key=value` overrides; errors name the field."""
    data = read_yaml_mapping(path, "training config") if path is not None else {}
    data.update(parse_overrides(list(overrides or [])))
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(explain_validation(err, str(path or "training config"), "training configuration")) from None

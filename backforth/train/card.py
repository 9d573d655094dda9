"""The model card (`README.md`) written next to trained weights: what it is, what data, how long,
how well it fit."""

from __future__ import annotations

from .config import TrainConfig
from .result import TrainResult


_PURPOSE = {
    "backward": "the backward model M_yx: it writes the instruction a document answers "
                "(use it with `backtranslate.mode: trained`, `models.backward.model: <this folder>`)",
    "forward": "the forward model M0: fine-tuned on the seed pairs only",
    "sft": "an instruction-following model fine-tuned on seed pairs plus backtranslated web pairs",
}


def _tags_used(direction: str, cfg: TrainConfig) -> str:
    if direction == "backward" or not cfg.tags:
        return "none"
    seed = f"seed pairs end with {cfg.seed_tag!r}"
    return seed if direction == "forward" else f"{seed}; web pairs with {cfg.web_tag!r}"


def model_card(result: TrainResult, cfg: TrainConfig) -> str:
    """A short README for the output folder: what it is, what data, how long, how well it fit."""
    def fmt(x: float | None, spec: str) -> str:
        return "n/a" if x is None else format(x, spec)

    counts = ", ".join(f"{k} {v}" for k, v in result.counts.items())
    kind = f"LoRA adapter (r={cfg.lora_r}, alpha={cfg.lora_alpha})" if cfg.lora else "full fine-tune"
    lines = [
        f"# backforth {result.direction} model", "",
        f"This folder is {_PURPOSE[result.direction]}.", "",
        "| | |", "|---|---|",
        f"| base model | `{result.base_model}` (`{result.base_path}`) |",
        f"| weights | {kind} |",
        f"| direction | {result.direction} |",
        f"| examples | {counts}; dropped as longer than {cfg.max_length} tokens: {result.dropped_too_long} |",
        f"| tags | {_tags_used(result.direction, cfg)} |",
        f"| optimizer steps | {result.steps} (batch {result.extra.get('batch_size')}, lr {result.extra.get('learning_rate')}, {cfg.lr_scheduler}) |",
        f"| final logged loss | {fmt(result.final_loss, '.4f')} (mean over training {fmt(result.mean_loss, '.4f')}) |",
        f"| time per step | {fmt(result.seconds_per_step, '.2f')} s |",
        "", "Settings: `training_config.yaml`. Load it with "
        "`backforth.engines.transformers.TransformersEngine(model=\"<this folder>\")`.",
    ]
    if result.resumed_from:
        lines.insert(-1, f"Resumed from `{result.resumed_from}`.")
    return "\n".join(lines) + "\n"

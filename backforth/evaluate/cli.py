"""`backforth eval ...`: answer an eval set, judge the answers pairwise, read win rates, compare runs.

A thin typer sub-app: each command parses, builds a `ModelConfig`, calls one function of
`backforth.evaluate`. Errors go through the CLI's one error path (`console.guarded`): a user's mistake
ends with a message and exit code 2 (no traceback); a model server that is down ends with exit code
3, like `backforth run`: finished rows are saved and the same command resumes (`console.resumable`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..console import resumable
from ..errors import UserError

eval_app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                       help="AlpacaEval-style evaluation: answer an eval set, judge pairwise, win rates.")

EngineOpt = Annotated[str, typer.Option("--engine", help="transformers | openai | vllm.")]
ModelOpt = Annotated[str, typer.Option("--model", help="`embedded`, a local folder, a hub name, or the served model name (openai).")]
AdapterOpt = Annotated[Optional[str], typer.Option("--adapter", help="A LoRA adapter folder on top of --model.")]
BaseUrlOpt = Annotated[str, typer.Option("--base-url", help="OpenAI-compatible server URL (engine openai).")]
ApiKeyOpt = Annotated[Optional[str], typer.Option("--api-key-env", help="Environment variable holding the API key.")]
ChunkOpt = Annotated[int, typer.Option("--chunk-size", min=1, help="Rows per engine call; results are saved after each.")]
ProgressOpt = Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")]


def _model_cfg(engine: str, model: str, adapter: str | None, base_url: str, api_key_env: str | None):
    from ..config import make_model

    if engine == "openai":
        return make_model(engine=engine, model=model, base_url=base_url, api_key_env=api_key_env)
    return make_model(engine=engine, model=model, adapter=adapter)


@contextmanager
def _bar(ids: list[str], out: Path, desc: str, enabled: bool) -> Iterator:
    """A progress bar over the rows not yet in `out` (the functions skip those)."""
    from tqdm import tqdm

    from ..pipeline.store import RunStore
    from .generate import run_dir_for

    run = RunStore(run_dir_for(out))
    done = {i for name in run.on_disk() for i in run.stage(name).ids()} if enabled else set()
    bar = tqdm(total=sum(i not in done for i in ids), desc=desc, unit="row", disable=not enabled, dynamic_ncols=True)
    try:
        yield bar.update
    finally:
        bar.close()


def _json(obj: dict) -> str:
    """JSON for people and `jq`: NaN (a single row's standard error) becomes null."""
    return json.dumps({k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in obj.items()}, indent=2)


@eval_app.command()
def generate(
    out: Annotated[Path, typer.Option("--out", "-o", help="Answers file (jsonl, AlpacaEval's format); re-running resumes.")],
    eval_set: Annotated[str, typer.Option("--eval-set", help="`bundled` (32 questions), `alpaca_eval` (805, hub) or a .jsonl/.json file.")] = "bundled",
    suffix: Annotated[str, typer.Option("--suffix", help="assistant | assistant_web | none: the sentence appended to each question (paper §3.1).")] = "assistant",
    temperature: Annotated[float, typer.Option(min=0, help="Sampling temperature (paper: 0.7).")] = 0.7,
    top_p: Annotated[float, typer.Option("--top-p", min=0, max=1, help="Nucleus sampling (paper: 0.9).")] = 0.9,
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=1, help="Maximum answer length in tokens (our choice).")] = 512,
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="Answer only the first N questions.")] = None,
    name: Annotated[Optional[str], typer.Option("--name", help="`generator` written in each row (default: adapter folder or model).")] = None,
    engine: EngineOpt = "transformers", model: ModelOpt = "embedded", adapter: AdapterOpt = None,
    base_url: BaseUrlOpt = "http://127.0.0.1:8000/v1", api_key_env: ApiKeyOpt = None,
    chunk_size: ChunkOpt = 32, progress: ProgressOpt = True,
) -> None:
    """Answer an eval set with the model under test (T=0.7, top_p=0.9, one of the paper's suffixes)."""
    from .data import load_eval_set
    from .generate import generate_answers

    with resumable(out):
        cfg = _model_cfg(engine, model, adapter, base_url, api_key_env)
        rows = load_eval_set(eval_set, limit=limit)
        with _bar([r["id"] for r in rows], out, "generate", progress) as tick:
            stats = generate_answers(rows, cfg, out, suffix=suffix, temperature=temperature, top_p=top_p,
                                     max_tokens=max_tokens, generator=name, chunk_size=chunk_size, progress=tick)
    typer.echo(f"wrote {stats.written} answers to {out} ({stats.already_done} were already there)")
    if stats.errors:
        typer.secho(f"{len(stats.errors)} questions failed (first: {stats.errors[0]['id']}: {stats.errors[0]['error']}); "
                    "run the same command again to retry them", fg=typer.colors.YELLOW, err=True)


@eval_app.command("judge")
def judge_cmd(
    answers: Annotated[Path, typer.Argument(help="The model's answers (from `eval generate`, or any AlpacaEval outputs file).")],
    references: Annotated[str, typer.Option("--references", "-r", help="Reference answers: a file with instruction/output, or `alpaca_eval` (text-davinci-003's, the paper's baseline).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Judgements file (jsonl, AlpacaEval's annotation format); re-running resumes.")],
    method: Annotated[str, typer.Option("--method", help="generate (parse a verdict) | logprobs (soft P(A) vs P(B)).")] = "generate",
    both_orders: Annotated[bool, typer.Option("--both-orders/--one-order", help="Ask with the model's answer first and second and average (cancels position bias).")] = True,
    cache: Annotated[Optional[Path], typer.Option("--cache", help="Judge cache file (default ~/.cache/backforth/judge_cache.jsonl).")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Do not read or write the judge cache.")] = False,
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=1, help="Longest judge reply (method generate).")] = 256,
    engine: EngineOpt = "transformers", model: ModelOpt = "embedded", adapter: AdapterOpt = None,
    base_url: BaseUrlOpt = "http://127.0.0.1:8000/v1", api_key_env: ApiKeyOpt = None,
    chunk_size: ChunkOpt = 32, progress: ProgressOpt = True,
) -> None:
    """Judge each answer against its reference with an LLM judge; prints the win rate."""
    from .data import load_outputs
    from .judge import judge

    with resumable(out):
        cfg = _model_cfg(engine, model, adapter, base_url, api_key_env)
        with _bar([r["id"] for r in load_outputs(answers)], out, "judge", progress) as tick:
            stats = judge(answers, references, cfg, out, method=method, both_orders=both_orders, cache_path=cache,
                          use_cache=not no_cache, max_tokens=max_tokens, chunk_size=chunk_size, progress=tick)
        typer.echo(f"wrote {stats.written} judgements to {out} ({stats.already_done} already there; "
                   f"{stats.judge_calls} judge calls, {stats.cached_calls} from cache, {stats.unparsed} without a verdict)")
        if stats.errors:
            typer.secho(f"{len(stats.errors)} answers not judged (first: {stats.errors[0]['id']}: {stats.errors[0]['error']}); "
                        "run the same command again to retry them", fg=typer.colors.YELLOW, err=True)
    _print_win_rate(out)
    if model == "embedded":
        typer.secho("note: the judge is the embedded 135M model, a weak judge whose preferences sit near chance: "
                    "these numbers show that the loop runs, not which model is better. Use a strong judge "
                    "(e.g. --engine openai --model gpt-4o) for real win rates.", fg=typer.colors.YELLOW, err=True)


def _print_win_rate(path: Path) -> None:
    """One line for the terminal; `eval winrate` prints the whole summary."""
    from .compare import summarize_judgements
    from .data import EvalDataError

    try:
        s = summarize_judgements(path)
    except EvalDataError as err:  # nothing judged yet, or no verdict at all: say so, it is not a failure here
        typer.secho(f"no win rate: {err}", fg=typer.colors.YELLOW, err=True)
        return
    se = "" if math.isnan(s["standard_error"]) else f" ± {s['standard_error']:.2f}"
    lc = f", LC {s['lc_win_rate']:.2f}" if "lc_win_rate" in s else ""
    typer.echo(f"win rate {s['win_rate']:.2f}{se}{lc} (n={s['n_total']}, {s['n_unjudged']} without a verdict)")


@eval_app.command()
def winrate(file: Annotated[Path, typer.Argument(help="A judgements file (AlpacaEval annotation rows with `preference`).")]) -> None:
    """Print the win-rate summary of a judgements file as JSON (raw, ± SE, length-controlled)."""
    from .compare import summarize_judgements

    summary = summarize_judgements(file)
    typer.echo(_json(summary))


def _parse_run(spec: str) -> tuple[str, str, str | None]:
    """`NAME=FILE` or `NAME=FILE@SIZE` -> (name, file, size)."""
    if "=" not in spec:
        raise UserError(f"run '{spec}': write NAME=FILE or NAME=FILE@SIZE, e.g. 'Dolma + rewriting=runs/a/judgements.jsonl@12.8K'")
    name, rest = spec.split("=", 1)
    path, _, size = rest.rpartition("@") if "@" in rest else (rest, "", "")
    if not name.strip() or not path:
        raise UserError(f"run '{spec}': both NAME and FILE are needed")
    return name.strip(), path, size or None


@eval_app.command()
def compare(
    runs: Annotated[list[str], typer.Argument(help="One per dataset: NAME=FILE\\[@SIZE], FILE a judgements file.")],
    markdown: Annotated[Optional[Path], typer.Option("--markdown", help="Also write the table here (markdown).")] = None,
    csv: Annotated[Optional[Path], typer.Option("--csv", help="Also write the numbers here (csv).")] = None,
) -> None:
    """A win-rate table across runs, like the paper's Tables 1-2 (printed as markdown)."""
    from .compare import compare as compare_runs
    from .compare import to_markdown

    table = compare_runs([_parse_run(s) for s in runs], markdown_path=markdown, csv_path=csv)
    typer.echo(to_markdown(table), nl=False)

"""Answering an eval set with the model under test, in AlpacaEval's outputs format.

The paper samples answers with T=0.7, top_p=0.9 and appends one of two sentences to every question,
"Answer in the style of an AI Assistant." or "Answer in the style of an AI Assistant, with
knowledge from web search if needed.", reporting whichever suffix wins more (Nguyen et al. 2024,
§3.1 and App. A.4). The suffixes matter because fine-tuning tagged seed data and web data with
different sentences (App. A.3); at evaluation they select which of the two learned styles answers.
Each row records the suffix it was asked with, so the two runs can be judged and compared side by side.

Answering is a stage (`Answer`) run by the pipeline's generic `Runner`, with its resume, chunking,
fingerprints and executors: the run's store is the folder next to the answers file
(`answers.run/` for `answers.jsonl`), and the answers file is written from it at the end. A rerun
sends only the questions not answered yet; one with other settings (model, suffix, sampling) stops
and names them. A request the engine failed is not written, and is asked again on the next run,
since an empty answer would count as a loss.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..config import SEED_TAG, ModelConfig, RunnerConfig
from ..engines import Engine, Request, Result, build_engine
from ..pipeline import Engines, Runner
from ..pipeline.stage import DONE, Stage
from ..pipeline.store import RunStore
from .data import REFERENCE, REFERENCE_GENERATOR, EvalDataError

Suffix = Literal["assistant", "assistant_web", "none"]
SUFFIXES: dict[str, str | None] = {
    "assistant": SEED_TAG,  # "Answer in the style of an AI Assistant." (the seed data's tag)
    "assistant_web": "Answer in the style of an AI Assistant, with knowledge from web search if needed.",
    "none": None,
}
ROLE = "answerer"


@dataclass
class GenerateStats:
    out_path: Path
    written: int = 0
    already_done: int = 0
    errors: list[dict] = field(default_factory=list)  # {"id", "error"}: not written, retried on the next run


def with_suffix(instruction: str, suffix: str) -> str:
    """The question as the model sees it: the suffix after a space, as `export` joins the training tags."""
    if suffix not in SUFFIXES:
        raise EvalDataError(f"suffix '{suffix}': choose one of {', '.join(SUFFIXES)}")
    tag = SUFFIXES[suffix]
    return f"{instruction} {tag}" if tag else instruction


def model_name(cfg: ModelConfig) -> str:
    """What the engines call a model (`<stage>_model`), known before one is loaded: base, `+adapter` folder."""
    adapter = getattr(cfg, "adapter", None)
    return f"{cfg.model}+{Path(adapter).name}" if adapter else cfg.model


def generator_name(model_cfg: ModelConfig) -> str:
    """AlpacaEval's `generator`: the adapter's folder when there is one (fine-tuned variants share a base)."""
    adapter = getattr(model_cfg, "adapter", None)
    return Path(adapter).name if adapter else model_cfg.model


def run_dir_for(out_path: Path) -> Path:
    """Where a results file's run keeps its store: `answers.run/` beside `answers.jsonl`."""
    return out_path.with_name(out_path.name.split(".")[0] + ".run")


class Answer(Stage):
    """One eval question -> one answer from the model under test."""

    name = "answer"
    role = ROLE
    failed_stay_unfinished = True

    def __init__(self, suffix: str, sampling: dict, generator: str, model: str):
        with_suffix("", suffix)  # validates the suffix before anything is loaded
        self.suffix, self.sampling, self.generator, self.model = suffix, sampling, generator, model

    def settings(self) -> dict:
        """What changes an answer (the question set may grow: answers are kept by question id)."""
        return {"suffix": self.suffix, "generate_sampling": self.sampling, "generator": self.generator}

    def requests(self, row: dict) -> list[Request]:
        return [Request(messages=[{"role": "user", "content": with_suffix(row["instruction"], self.suffix)}],
                        max_tokens=self.sampling["max_tokens"], temperature=self.sampling["temperature"],
                        top_p=self.sampling["top_p"], key=row["id"])]

    def apply(self, row: dict, results: list[Result]) -> str | None:
        res = results[0]
        row.update(output=res.text.strip(), generator=self.generator, generate_model=self.model, suffix=self.suffix,
                   generate_sampling=self.sampling, suffix_text=SUFFIXES[self.suffix],
                   generate_finish_reason=res.finish_reason, generate_prompt_tokens=res.prompt_tokens,
                   generate_completion_tokens=res.completion_tokens)
        return None


def _answer_row(row: dict) -> dict:
    """The answers file's row: AlpacaEval's fields first, the passthrough ones (never the reference)."""
    keys = ("id", "instruction", "output", "generator", "generate_model", "suffix", "generate_sampling", "suffix_text",
            "generate_finish_reason", "generate_prompt_tokens", "generate_completion_tokens")
    out = {k: row.get(k) for k in keys}
    for k, v in row.items():
        if k not in out and not k.startswith("_") and k not in (REFERENCE, REFERENCE_GENERATOR, "stage", "reason"):
            out[k] = v
    return out


def generate_answers(
    eval_rows: Sequence[dict],
    model_cfg: ModelConfig,
    out_path: str | Path,
    suffix: Suffix = "assistant",
    temperature: float = 0.7,
    top_p: float = 0.9,
    max_tokens: int = 512,
    *,
    generator: str | None = None,
    chunk_size: int = 32,
    engine: Engine | None = None,
    progress: Callable[[int], None] | None = None,
    executor=None,
) -> GenerateStats:
    """Answer every eval row not answered yet and write them all to `out_path` (jsonl, input order).

    Output rows: ``id``, ``instruction`` (as asked, without the suffix), ``output``, ``generator``,
    ``suffix``, ``suffix_text``, ``generate_model``, ``generate_finish_reason``, token counts and
    ``generate_sampling``. `engine` replaces the one built from `model_cfg` (it is then not closed);
    `progress` is called with the number of rows finished after each chunk.
    """
    if chunk_size < 1:
        raise EvalDataError(f"chunk_size must be at least 1 (got {chunk_size})")
    out_path = Path(out_path)
    sampling = {"temperature": temperature, "top_p": top_p, "max_tokens": max_tokens}
    questions = [dict(r, _index=i) for i, r in enumerate(eval_rows)]
    stage = Answer(suffix, sampling, generator or generator_name(model_cfg), model_name(model_cfg))
    run_dir = run_dir_for(out_path)
    store = RunStore(run_dir)
    before = sum(1 for _ in store.stage(stage.name).ids())
    runner = Runner([stage], lambda: iter(questions), run_dir, engines=Engines({ROLE: model_cfg}, _factory(engine)),
                    settings=RunnerConfig(chunk_size=chunk_size, progress=False), executor=executor, on_chunk=progress)
    runner.run()
    rows = [_answer_row(r) for r in store.joined([stage.name], status=DONE)]
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return GenerateStats(out_path=out_path, written=len(rows) - before, already_done=before,
                         errors=runner.failed.get(stage.name, []))


def _factory(engine: Engine | None) -> Callable:
    """The given engine (kept open: its caller owns it), else the one a model config describes."""
    from ..engines.base import Borrowed

    return build_engine if engine is None else (lambda _cfg: Borrowed(engine))

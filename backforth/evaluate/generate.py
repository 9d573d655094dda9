"""Answering an eval set with the model under test, in AlpacaEval's outputs format.

The paper samples answers with T=0.7, top_p=0.9 and appends one of two sentences to every question,
"Answer in the style of an AI Assistant." or "Answer in the style of an AI Assistant, with
knowledge from web search if needed.", reporting whichever suffix wins more (Nguyen et al. 2024,
§3.1 and App. A.4). The suffixes matter because fine-tuning tagged seed data and web data with
different sentences (App. A.3); at evaluation they select which of the two learned styles answers.
Each row records the suffix it was asked with, so the two runs can be judged and compared side by side.

Rows are written one chunk at a time to an append-only file (``pipeline.store.StageFile``); a rerun
skips the ids already there, so a crash costs at most one chunk. A request the engine failed is not
written (and is retried on the next run), since an empty answer would count as a loss.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..config import SEED_TAG, ModelConfig
from ..engines import Engine, Request, build_engine
from ..pipeline.store import StageFile
from .data import REFERENCE, REFERENCE_GENERATOR, EvalDataError

Suffix = Literal["assistant", "assistant_web", "none"]
SUFFIXES: dict[str, str | None] = {
    "assistant": SEED_TAG,  # "Answer in the style of an AI Assistant." (the seed data's tag)
    "assistant_web": "Answer in the style of an AI Assistant, with knowledge from web search if needed.",
    "none": None,
}


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
    return f"{cfg.model}+{Path(cfg.adapter).name}" if cfg.adapter else cfg.model


def generator_name(model_cfg: ModelConfig) -> str:
    """AlpacaEval's `generator`: the adapter's folder when there is one (fine-tuned variants share a base)."""
    return Path(model_cfg.adapter).name if model_cfg.adapter else model_cfg.model


def _settings(generator: str, model: str, suffix: str, sampling: dict) -> dict:
    return {"generator": generator, "generate_model": model, "suffix": suffix, "generate_sampling": sampling}


def _check_resume(store: StageFile, settings: dict) -> None:
    """Refuse to append answers made another way: one file must hold one model's answers."""
    first = next(store.rows(), None)
    if first is None:
        return
    for key, value in settings.items():
        if first.get(key) != value:
            raise EvalDataError(
                f"{store.path}: holds answers with {key}={first.get(key)!r}, this run has {value!r}. "
                "Write to another --out file, or delete this one to start over.")


def _answer_row(row: dict, result, settings: dict, suffix: str) -> dict:
    out = {"id": row["id"], "instruction": row["instruction"], "output": result.text.strip(), **settings,
           "suffix_text": SUFFIXES[suffix], "generate_finish_reason": result.finish_reason,
           "generate_prompt_tokens": result.prompt_tokens, "generate_completion_tokens": result.completion_tokens}
    for k, v in row.items():  # passthrough (category, dataset...), never the reference answer
        if k not in out and k not in (REFERENCE, REFERENCE_GENERATOR):
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
) -> GenerateStats:
    """Answer every eval row not yet in `out_path` and append the answers there (jsonl).

    Output rows: ``id``, ``instruction`` (as asked, without the suffix), ``output``, ``generator``,
    ``suffix``, ``suffix_text``, ``generate_model``, ``generate_finish_reason``, token counts and
    ``generate_sampling``. `engine` replaces the one built from `model_cfg` (it is then not closed);
    `progress` is called with the number of rows finished after each chunk.
    """
    with_suffix("", suffix)  # validates the suffix before anything is loaded
    if chunk_size < 1:
        raise EvalDataError(f"chunk_size must be at least 1 (got {chunk_size})")
    store = StageFile(Path(out_path))
    store.repair()
    sampling = {"temperature": temperature, "top_p": top_p, "max_tokens": max_tokens}
    stats = GenerateStats(out_path=store.path)
    done = store.done_ids()
    todo = [r for r in eval_rows if r["id"] not in done]
    stats.already_done = len(eval_rows) - len(todo)
    if not todo:
        return stats
    settings = _settings(generator or generator_name(model_cfg), model_name(model_cfg), suffix, sampling)
    _check_resume(store, settings)  # before a model is loaded for nothing
    own = engine is None
    engine = engine or build_engine(model_cfg)
    try:
        for start in range(0, len(todo), chunk_size):
            chunk = todo[start:start + chunk_size]
            requests = [Request(messages=[{"role": "user", "content": with_suffix(r["instruction"], suffix)}],
                                max_tokens=max_tokens, temperature=temperature, top_p=top_p, key=r["id"])
                        for r in chunk]
            finished = []
            for row, result in zip(chunk, engine.generate(requests)):
                if result.ok:
                    finished.append(_answer_row(row, result, settings, suffix))
                else:
                    stats.errors.append({"id": row["id"], "error": result.error})
            stats.written += store.append(finished)
            if progress is not None:
                progress(len(chunk))
    finally:
        if own:
            engine.close()
    return stats

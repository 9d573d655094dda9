"""Model outputs and reference answers, in AlpacaEval's outputs format; eval sets come from `backforth.evalsets`.

Files follow AlpacaEval's own outputs format (``instruction``, ``output``, optional ``generator``), a
JSON array (``.json``) or JSON lines, so a file written by ``generate_answers`` can serve as the
references of another model's judgement. A bad line stops the load with its file and line.

The eval-set loaders live one layer down, in `backforth.evalsets` (the pipeline's decontamination
reads them too); the names the evaluation modules import from here are re-exported.
"""

from __future__ import annotations

from pathlib import Path

# Re-exported: the evaluation modules, tests and benchmarks import these from here.
from ..evalsets import (
    ALPACA_EVAL,
    ALPACA_EVAL_CONFIG,
    ALPACA_EVAL_FILE,
    ALPACA_EVAL_REPO,
    ALPACA_EVAL_SPLIT,
    ALPACA_EVAL_URL,
    BUNDLED,
    BUNDLED_PATH,
    REFERENCE,
    REFERENCE_GENERATOR,
    EvalDataError,
    alpaca_eval_records,
    content_id,
    instruction_key,
    load_alpaca_eval,
    load_eval_set,
    read_records,
    row_id,
    text_field,
)

# ------------------------------------------------------------------------------------------ outputs


def load_outputs(path: str | Path) -> list[dict]:
    """A model's answers in AlpacaEval's outputs format (``instruction``, ``output``, optional ``generator``, ``id``)."""
    rows: list[dict] = []
    seen: set[str] = set()
    for where, rec in read_records(path):
        instruction = text_field(rec, "instruction", where)
        output = text_field(rec, "output", where)
        row = dict(rec, id=row_id(rec, instruction, where, seen), instruction=instruction, output=output, _where=where)
        seen.add(row["id"])
        rows.append(row)
    if not rows:
        raise EvalDataError(f"{path}: no answers found")
    return rows


# --------------------------------------------------------------------------------------- references


def load_references(source: str | Path) -> dict[str, dict]:
    """Reference answers by instruction: `"alpaca_eval"` (text-davinci-003's, the paper's baseline) or a file.

    Returns ``{instruction_key: {"output", "generator", "where"}}``. The same instruction twice with
    different answers is an error: which one the model was compared to would be arbitrary.
    """
    records = alpaca_eval_records() if str(source) == ALPACA_EVAL else read_records(source)
    refs: dict[str, dict] = {}
    for where, rec in records:
        instruction = text_field(rec, "instruction", where)
        output = text_field(rec, "output", where)
        key = instruction_key(instruction)
        if key in refs and refs[key]["output"] != output:
            raise EvalDataError(f"{where}: a second, different reference for an instruction first seen at "
                                f"{refs[key]['where']}; keep one answer per instruction")
        refs.setdefault(key, {"output": output, "generator": rec.get("generator"), "where": where})
    if not refs:
        raise EvalDataError(f"{source}: no reference answers found")
    return refs

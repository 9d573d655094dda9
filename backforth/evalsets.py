"""Eval sets: the bundled questions, a local file, or AlpacaEval's 805, as rows with stable ids.

The paper's main metric is AlpacaEval v1: 805 instructions, answers judged pairwise against
text-davinci-003's reference outputs (Nguyen et al. 2024, §3.1, App. A.4). Those instructions and
references are the rows of the hub dataset ``tatsu-lab/alpaca_eval``, config ``alpaca_eval``, split
``eval``, fields ``instruction``, ``output`` (the reference), ``generator`` and ``dataset`` (the
source subset). Local files follow AlpacaEval's format: a JSON array (``.json``) or JSON lines.

Every row gets a stable ``id``: the file's own, or one made from the instruction text, so resumed
runs and caches line up across machines. A bad line stops the load with its file and line: an eval
set is small and hand-made, and a silently shorter set would change the win rate.

This module sits below both the pipeline (decontamination reads the eval sets) and
`backforth.evaluate` (answering and judging them), which re-exports it from `evaluate.data`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

from .errors import UserError
from .io import INVALID_UTF8, NOT_AN_OBJECT, Problem, UnreadableFileError, iter_records

BUNDLED = "bundled"
BUNDLED_PATH = Path(__file__).resolve().parent / "data" / "eval_set.jsonl"
ALPACA_EVAL = "alpaca_eval"
ALPACA_EVAL_REPO = "tatsu-lab/alpaca_eval"
ALPACA_EVAL_CONFIG = "alpaca_eval"
ALPACA_EVAL_SPLIT = "eval"
# The file behind that config. datasets>=4 refuses the repo's loading script ("Dataset scripts are no
# longer supported", tatsu-lab/alpaca_eval#454), so we then read the JSON file with the json builder.
ALPACA_EVAL_FILE = f"hf://datasets/{ALPACA_EVAL_REPO}/alpaca_eval.json"
ALPACA_EVAL_URL = f"https://huggingface.co/datasets/{ALPACA_EVAL_REPO}/resolve/main/alpaca_eval.json"

# Eval-row fields renamed on load, so that a model's own `output`/`generator` never clobbers the reference.
REFERENCE, REFERENCE_GENERATOR = "reference", "reference_generator"


class EvalDataError(UserError, ValueError):
    """A user-fixable problem with an eval, outputs or references file; the message says where."""


def content_id(instruction: str) -> str:
    """A stable id from the instruction text (the same question gets the same id everywhere)."""
    return "eval-" + hashlib.sha1(instruction.strip().encode("utf-8", "replace")).hexdigest()[:12]


def instruction_key(instruction: str) -> str:
    """What matches a model output to its reference: AlpacaEval merges on the instruction text."""
    return instruction.strip()


# ------------------------------------------------------------------------------------------ reading


def read_records(path: str | Path) -> Iterator[tuple[str, dict]]:
    """(where, record) for a .jsonl / .jsonl.gz (one object per line) or a .json array (AlpacaEval's files).

    Strict: the first line that is not a JSON object stops the read with an `EvalDataError` naming it.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise EvalDataError(f"{path}: no such file")
    try:
        for where, rec, problem in iter_records(path):
            if problem is not None:
                raise EvalDataError(_problem_message(where, problem))
            yield where, rec
    except UnreadableFileError as err:
        raise EvalDataError(str(err)) from None


def _problem_message(where: str, problem: Problem) -> str:
    if problem.kind == INVALID_UTF8:
        return f"{where}: not UTF-8 text ({problem.detail})"
    if problem.kind == NOT_AN_OBJECT:
        return f"{where}: expected a JSON object, got {problem.detail}"
    return f"{where}: not valid JSON ({problem.detail}); each line must be one JSON object"


def text_field(rec: dict, field: str, where: str, required: bool = True) -> str | None:
    """`rec[field]` as text; missing or not text is an error naming `where` (missing is None when not required)."""
    value = rec.get(field)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        what = "missing" if value is None else f"{type(value).__name__}, not text"
        raise EvalDataError(f"{where}: field '{field}' is {what}")
    if required and field == "instruction" and not value.strip():
        raise EvalDataError(f"{where}: field 'instruction' is empty")
    return value


def row_id(rec: dict, instruction: str, where: str, seen: set[str]) -> str:
    """The file's `id`, else a content id; a repeated content id gets `-2`, `-3`... (stable in file order)."""
    raw = rec.get("id")
    if raw not in (None, ""):
        if not isinstance(raw, (str, int)) or isinstance(raw, bool):
            raise EvalDataError(f"{where}: field 'id' must be text or an integer")
        rid = str(raw)
        if rid in seen:
            raise EvalDataError(f"{where}: id '{rid}' appears twice; ids must be unique")
        return rid
    base, n = content_id(instruction), 1
    rid = base
    while rid in seen:
        n += 1
        rid = f"{base}-{n}"
    return rid


# ---------------------------------------------------------------------------------------- eval sets


def eval_row(rec: dict, where: str, seen: set[str]) -> dict:
    """One question: ``id``, ``instruction``, passthrough fields, and ``reference``/``reference_generator`` if answered."""
    instruction = text_field(rec, "instruction", where)
    reference = text_field(rec, "output", where, required=False)
    row = {"id": row_id(rec, instruction, where, seen), "instruction": instruction}
    for k, v in rec.items():
        if k not in ("id", "instruction", "output", "generator") and not k.startswith("_"):
            row[k] = v
    if reference is not None:
        row[REFERENCE] = reference
        row[REFERENCE_GENERATOR] = rec.get("generator")
    seen.add(row["id"])
    return row


def load_eval_set(source: str = BUNDLED, limit: int | None = None) -> list[dict]:
    """The questions to answer: `"bundled"`, `"alpaca_eval"` (the hub's 805) or a local .jsonl/.json path.

    Rows: ``id``, ``instruction``, passthrough fields (``category``, ``dataset``...), and, when the
    source has answers, ``reference`` / ``reference_generator``.
    """
    if limit is not None and limit < 1:
        raise EvalDataError(f"limit must be at least 1 (got {limit})")
    records = alpaca_eval_records() if source == ALPACA_EVAL else read_records(BUNDLED_PATH if source == BUNDLED else source)
    rows: list[dict] = []
    seen: set[str] = set()
    for where, rec in records:
        if limit is not None and len(rows) >= limit:
            break
        rows.append(eval_row(rec, where, seen))
    if not rows:
        raise EvalDataError(f"{source}: no questions found")
    return rows


# ----------------------------------------------------------------------------------------------- hub


def alpaca_eval_records() -> Iterator[tuple[str, dict]]:
    """(where, record) for AlpacaEval's rows, `where` being `tatsu-lab/alpaca_eval[eval]#i`."""
    for i, rec in enumerate(load_alpaca_eval()):
        yield f"{ALPACA_EVAL_REPO}[{ALPACA_EVAL_SPLIT}]#{i}", rec


def load_alpaca_eval() -> list[dict]:
    """AlpacaEval's 805 rows (``instruction``, ``output``, ``generator``, ``dataset``) from the hub.

    First the dataset as AlpacaEval documents it; when the installed `datasets` refuses its loading
    script (datasets>=4), the same rows from the JSON file the script reads.
    """
    import datasets

    try:
        try:
            ds = datasets.load_dataset(ALPACA_EVAL_REPO, ALPACA_EVAL_CONFIG, split=ALPACA_EVAL_SPLIT)
        except RuntimeError as err:
            if "scripts are no longer supported" not in str(err):
                raise
            ds = datasets.load_dataset("json", data_files=ALPACA_EVAL_FILE, split="train")
    except Exception as err:  # network, auth, hub layout: all end the same way for the user
        raise EvalDataError(
            f"could not load AlpacaEval from the Hugging Face hub ({type(err).__name__}: {err}). Without network, "
            f"download {ALPACA_EVAL_URL} elsewhere and pass its path instead of 'alpaca_eval'.") from None
    return [dict(rec) for rec in ds]

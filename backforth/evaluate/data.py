"""Eval sets and reference answers: the bundled questions, a local file, or AlpacaEval's 805.

The paper's main metric is AlpacaEval v1: 805 instructions, answers judged pairwise against
text-davinci-003's reference outputs (Nguyen et al. 2024, §3.1, App. A.4). Those instructions and
references are the rows of the hub dataset ``tatsu-lab/alpaca_eval``, config ``alpaca_eval``, split
``eval``, fields ``instruction``, ``output`` (the reference), ``generator`` and ``dataset`` (the
source subset). Files follow AlpacaEval's own outputs format, so a file written by
``generate_answers`` can serve as the references of another model's judgement.

Every row gets a stable ``id``: the file's own, or one made from the instruction text, so resumed
runs and caches line up across machines. A bad line stops the load with its file and line: an eval
set is small and hand-made, and a silently shorter set would change the win rate.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

from ..errors import UserError

BUNDLED = "bundled"
BUNDLED_PATH = Path(__file__).resolve().parent.parent / "data" / "eval_set.jsonl"
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
    """(where, record) for a .jsonl / .jsonl.gz (one object per line) or a .json array (AlpacaEval's files)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise EvalDataError(f"{path}: no such file")
    if path.suffix == ".json":
        yield from _json_array(path)
        return
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            if raw.strip():
                yield f"{path}:{lineno}", _parse_line(raw, f"{path}:{lineno}")


def _parse_line(raw: bytes, where: str) -> dict:
    try:
        rec = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise EvalDataError(f"{where}: not UTF-8 text") from None
    except json.JSONDecodeError as err:
        raise EvalDataError(f"{where}: not valid JSON ({err.msg}); each line must be one JSON object") from None
    if not isinstance(rec, dict):
        raise EvalDataError(f"{where}: expected a JSON object, got {type(rec).__name__}")
    return rec


def _json_array(path: Path) -> Iterator[tuple[str, dict]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise EvalDataError(f"{path}: not a valid JSON file ({err}); use a JSON array of objects or a .jsonl file") from None
    if not isinstance(data, list):
        raise EvalDataError(f"{path}: a .json file must hold a list of objects (AlpacaEval's format)")
    for i, rec in enumerate(data):
        if not isinstance(rec, dict):
            raise EvalDataError(f"{path}[{i}]: expected a JSON object, got {type(rec).__name__}")
        yield f"{path}[{i}]", rec


def _text_field(rec: dict, field: str, where: str, required: bool = True) -> str | None:
    value = rec.get(field)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        what = "missing" if value is None else f"{type(value).__name__}, not text"
        raise EvalDataError(f"{where}: field '{field}' is {what}")
    if required and field == "instruction" and not value.strip():
        raise EvalDataError(f"{where}: field 'instruction' is empty")
    return value


def _row_id(rec: dict, instruction: str, where: str, seen: set[str]) -> str:
    """The file's `id`, else a content id; a repeated content id gets `-2`, `-3`... (stable in file order)."""
    raw = rec.get("id")
    if raw not in (None, ""):
        if not isinstance(raw, (str, int)) or isinstance(raw, bool):
            raise EvalDataError(f"{where}: field 'id' must be text or an integer")
        row_id = str(raw)
        if row_id in seen:
            raise EvalDataError(f"{where}: id '{row_id}' appears twice; ids must be unique")
        return row_id
    base, n = content_id(instruction), 1
    row_id = base
    while row_id in seen:
        n += 1
        row_id = f"{base}-{n}"
    return row_id


# ---------------------------------------------------------------------------------------- eval sets


def _eval_row(rec: dict, where: str, seen: set[str]) -> dict:
    instruction = _text_field(rec, "instruction", where)
    reference = _text_field(rec, "output", where, required=False)
    row = {"id": _row_id(rec, instruction, where, seen), "instruction": instruction}
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
    records = _alpaca_eval_records() if source == ALPACA_EVAL else read_records(BUNDLED_PATH if source == BUNDLED else source)
    rows: list[dict] = []
    seen: set[str] = set()
    for where, rec in records:
        if limit is not None and len(rows) >= limit:
            break
        rows.append(_eval_row(rec, where, seen))
    if not rows:
        raise EvalDataError(f"{source}: no questions found")
    return rows


def load_outputs(path: str | Path) -> list[dict]:
    """A model's answers in AlpacaEval's outputs format (``instruction``, ``output``, optional ``generator``, ``id``)."""
    rows: list[dict] = []
    seen: set[str] = set()
    for where, rec in read_records(path):
        instruction = _text_field(rec, "instruction", where)
        output = _text_field(rec, "output", where)
        row = dict(rec, id=_row_id(rec, instruction, where, seen), instruction=instruction, output=output, _where=where)
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
    records = _alpaca_eval_records() if str(source) == ALPACA_EVAL else read_records(source)
    refs: dict[str, dict] = {}
    for where, rec in records:
        instruction = _text_field(rec, "instruction", where)
        output = _text_field(rec, "output", where)
        key = instruction_key(instruction)
        if key in refs and refs[key]["output"] != output:
            raise EvalDataError(f"{where}: a second, different reference for an instruction first seen at "
                                f"{refs[key]['where']}; keep one answer per instruction")
        refs.setdefault(key, {"output": output, "generator": rec.get("generator"), "where": where})
    if not refs:
        raise EvalDataError(f"{source}: no reference answers found")
    return refs


# ----------------------------------------------------------------------------------------------- hub


def _alpaca_eval_records() -> Iterator[tuple[str, dict]]:
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

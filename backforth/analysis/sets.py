"""A run dir read as sets of texts for the analyses: documents, rewritten, distilled, instructions.

Three sets of responses answer the same backtranslated instructions: the web `documents` (the text of
the rows that reached the stage that rewrites), their `rewritten` versions and the `distilled` answers
written without the document; `instructions` holds every backtranslated instruction, before curation.
Which stage and column hold each kind of text is what the stages declare (`Stage.texts`, read through
`registry.text_source`). They are read
from the stage shards (`pipeline.store`), streamed so a big run is never held whole; a run whose
shards are gone falls back to its exports (`sft.jsonl`, `distilled.parquet`). `--against` sets come
from another run's `sft.jsonl` or any jsonl dataset of instruction/response pairs or chat messages.
"""

from __future__ import annotations

import json
import random
from collections.abc import Container, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..io import INVALID_UTF8, NOT_AN_OBJECT, UnreadableFileError, iter_records

RUN_SETS = ("documents", "rewritten", "distilled", "instructions")
MIN_ITEMS = 4  # below this, MAUVE, the classifier and trigram counts say nothing about a set


class RunDirError(UserError, ValueError):
    """A run dir or dataset the user named cannot be read; the message says what to do."""


@dataclass
class TextSet:
    """Instruction/response pairs of one set; `responses` may be empty (an instruction-only set)."""

    name: str
    source: str
    instructions: list[str] = field(default_factory=list)
    responses: list[str] = field(default_factory=list)

    @property
    def n(self) -> int:
        return max(len(self.instructions), len(self.responses))


def iter_jsonl(path: Path) -> Iterator[dict]:
    """Rows of a jsonl file, streamed; a partial last line (a run killed mid-write) is skipped, as
    resume does."""
    try:
        for where, row, problem in iter_records(path, json_array=False, drop_partial_last_line=True):
            if problem is None:
                yield row
                continue
            what = {INVALID_UTF8: f"not UTF-8 text ({problem.detail})",
                    NOT_AN_OBJECT: f"expected a JSON object, got {problem.detail}"}.get(
                        problem.kind, f"not valid JSON ({problem.detail})")
            raise RunDirError(f"{where}: {what}; fix or remove that line")
    except UnreadableFileError as err:
        raise RunDirError(str(err)) from None


def stage_rows(run_dir: Path, stage: str, columns: Sequence[str] | None = None,
               ids: Container[str] | None = None) -> dict[str, dict]:
    """One stage's rows as it saw and left them: its own columns joined with those the earlier stages
    gave each row (`pipeline.store.RunStore.joined`), by id.

    `columns` keeps only those fields and `ids` only those rows, so a big run's shards are streamed
    through instead of held whole in memory.
    """
    from ..pipeline.store import RunStore

    order = stage_order(run_dir)
    if stage not in order:
        return {}
    out: dict[str, dict] = {}
    for row in RunStore(run_dir).joined(order[: order.index(stage) + 1]):
        if ids is not None and row.get("id") not in ids:
            continue
        out[row["id"]] = row if columns is None else {k: row.get(k) for k in ("id", "_status", *columns)}
    return out


def stage_order(run_dir: Path, stats: dict | None = None) -> list[str]:
    """The run's stages with results, in the registry's order (any unknown one last, so a stage added
    later is never skipped)."""
    from ..pipeline import registry
    from ..pipeline.store import RunStore

    on_disk = RunStore(run_dir).on_disk()
    order = [n for n in registry.NAMES if n in on_disk]
    return order + sorted(on_disk - set(order))


def load_stats(run_dir: Path) -> dict:
    """stats.json, with errors that say what to do."""
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: no such run directory (make one with `backforth run` or `backforth demo`)")
    path = run_dir / "stats.json"
    if not path.is_file() and not (run_dir / "stages").is_dir() and not (run_dir / "config.yaml").is_file():
        raise RunDirError(f"{run_dir}: not a run dir (it has no stats.json, config.yaml or stages/); name a folder made "
                          "by `backforth run` or `backforth demo` (their --out)")
    if not path.is_file():
        raise RunDirError(f"{path} is missing: the run has not finished exporting; run the same "
                          "`backforth run`/`backforth demo` command again to complete it")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise RunDirError(f"{path}: not valid JSON ({err.msg})") from None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def _pairs(rows: Iterable[dict], response_key: str, instruction_key: str = "instruction") -> tuple[list[str], list[str]]:
    """(instructions, responses) of rows that have both as non-empty strings."""
    kept = [(r[instruction_key], r[response_key]) for r in rows
            if _text(r.get(instruction_key)) and _text(r.get(response_key))]
    return [i for i, _ in kept], [t for _, t in kept]


def run_sets(run_dir: Path) -> dict[str, TextSet]:
    """The run's documents, rewritten, distilled and instruction sets (see the module docstring)."""
    from ..pipeline.registry import text_source

    doc = text_source("documents")[1]
    ins_stage, ins = text_source("instructions")
    rw_stage, rw = text_source("rewritten")
    dis_stage, dis = text_source("distilled")
    rewrite = stage_rows(run_dir, rw_stage, (ins, doc, rw))
    distill = stage_rows(run_dir, dis_stage, (ins, dis))
    sets = {name: TextSet(name, "") for name in RUN_SETS}
    if rewrite:
        sets["documents"] = TextSet("documents", f"{doc} of the rows that reached {rw_stage}",
                                    *_pairs(rewrite.values(), doc, ins))
        done = [r for r in rewrite.values() if r.get("_status") == "done"]
        sets["rewritten"] = TextSet("rewritten", f"{rw} of every rewritten row (later checks such as grounding "
                                    "may reject some)", *_pairs(done, rw, ins))
    elif (run_dir / "sft.jsonl").is_file():
        sft = {r["id"]: r for r in iter_jsonl(run_dir / "sft.jsonl")}
        texts = _latest_texts(run_dir, set(sft))
        docs = [dict(r, **{doc: texts.get(i)}) for i, r in sft.items()]
        sets["documents"] = TextSet("documents", f"{doc} of the exported rows", *_pairs(docs, doc))
    if distill:
        sets["distilled"] = TextSet("distilled", "distilled answers to the same instructions",
                                    *_pairs(distill.values(), dis, ins))
    elif (run_dir / "distilled.parquet").is_file():
        sets["distilled"] = TextSet("distilled", "distilled.parquet",
                                    *_pairs(iter_jsonl(run_dir / "distilled.parquet"), "response"))
    bt = stage_rows(run_dir, ins_stage, (ins,)).values()
    sets["instructions"] = TextSet("instructions", "every backtranslated instruction (before curation)",
                                   [r[ins] for r in bt if r["_status"] == "done" and _text(r[ins])])
    return sets


def _latest_texts(run_dir: Path, ids: set[str]) -> dict[str, str]:
    """The cleaned document text of `ids`, from the furthest stage each reached."""
    from ..pipeline.registry import text_source

    doc = text_source("documents")[1]
    texts: dict[str, str] = {}
    for stage in stage_order(run_dir):
        texts.update({i: r[doc] for i, r in stage_rows(run_dir, stage, (doc,), ids).items() if r[doc]})
    return texts


def _pair_of(row: dict) -> tuple[str | None, str | None]:
    """(instruction, response) of a dataset row: `instruction`/`response` or chat `messages`."""
    if _text(row.get("instruction")) and _text(row.get("response")):
        return row["instruction"], row["response"]
    messages = row.get("messages")
    if isinstance(messages, list):
        users = [m.get("content") for m in messages if isinstance(m, dict) and m.get("role") == "user"]
        bots = [m.get("content") for m in messages if isinstance(m, dict) and m.get("role") == "assistant"]
        if users and bots:
            return _text(users[0]), _text(bots[-1])
    return None, None


def load_against(spec: str, taken: set[str]) -> TextSet:
    """Another run (its sft.jsonl) or a jsonl dataset, named after the folder or file."""
    path = Path(spec)
    file = path / "sft.jsonl" if path.is_dir() else path
    if not file.is_file():
        raise RunDirError(f"--against {spec}: expected a run dir with sft.jsonl or a .jsonl file, found neither")
    pairs = [p for p in map(_pair_of, iter_jsonl(file)) if p[0] and p[1]]
    if not pairs:
        raise RunDirError(f"--against {file}: no row has `instruction` and `response` strings, nor `messages` "
                          "with a user and an assistant turn")
    name = path.name if path.is_dir() else path.stem
    while name in taken or name in RUN_SETS:
        name += "'"
    return TextSet(name, str(file), [p[0] for p in pairs], [p[1] for p in pairs])


def subsample(ts: TextSet, n: int, seed: int) -> TextSet:
    """At most `n` pairs, the same random rows for instructions and responses."""
    size = ts.n
    if size <= n:
        return ts
    idx = sorted(random.Random(seed).sample(range(size), n))
    pick = lambda xs: [xs[i] for i in idx] if xs else []  # noqa: E731
    return TextSet(ts.name, ts.source, pick(ts.instructions), pick(ts.responses))

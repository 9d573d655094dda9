"""Seed data for Humpback: first-turn (instruction, response) pairs from Open Assistant (oasst1).

The paper seeds both the backward model and the first forward model with 3,200 examples: the FIRST
TURN of each oasst1 conversation tree (the root prompter message and its direct assistant reply),
English only, using the reply that human rankers put first (`rank == 0`).

oasst1 is a flat table of messages; a conversation is a tree linked by `parent_id`. A root has
`parent_id` null, role "prompter", and its `message_id` equals its `message_tree_id`. This module

* reads such messages from the hub or from local files in the same schema (`oasst.py`);
* selects at most one (root, rank-0 reply) pair per tree, recording why every other tree was
  rejected so a surprising count can be explained;
* writes / reads the seed as jsonl.

Decisions (see `select_seed_pairs`):

* Unranked replies: in oasst1 `rank` is only set when a message has two or more ranked siblings,
  so a root with a single reply has `rank` null. The paper says rank 0, so by default such replies
  are rejected (`no_rank0_reply`). `accept_unranked_single=True` accepts a null-rank reply when it
  is the root's only usable assistant reply (nobody ranked it worse than anything).
* More candidates than `n`: a deterministic hash sample, not the first n. oasst1's row order
  follows creation time, so "first n" would skew the seed towards the earliest (and most
  duplicated) prompts; a sample keyed on `sha256(seed:tree_id)` is spread over the whole
  collection, is identical whatever the source format or file order, does not depend on Python's
  `random` implementation, and is nested: the n=1000 seed is a subset of the n=3200 one.
* Output order: sorted by `message_tree_id`, so the file is byte-identical between runs.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# SeedError and load_oasst_messages are imported from here too: loading lives in `oasst.py`.
from .oasst import DEFAULT_HUB_DATASET, USED_COLUMNS, SeedError, load_oasst_messages, strict_records

DEFAULT_N = 3200
SEED_FIELDS: tuple[str, ...] = ("id", "instruction", "response", "prompt_message_id", "response_message_id",
                                "message_tree_id", "lang")


# ------------------------------------------------------------------------------------- selection


@dataclass
class _Message:
    """The few fields selection needs; keeps memory small on the 85k-message release."""

    message_id: str
    parent_id: str | None
    tree_id: str
    role: str
    text: str
    lang: str | None
    rank: int | None
    deleted: bool
    review_failed: bool
    created: str

    @classmethod
    def from_row(cls, row: dict) -> _Message:
        return cls(
            message_id=str(row["message_id"]),
            parent_id=_null_id(row.get("parent_id")),
            tree_id=str(row["message_tree_id"]),
            role=str(row.get("role") or ""),
            text=row.get("text") if isinstance(row.get("text"), str) else "",
            lang=row.get("lang"),
            rank=_rank(row.get("rank")),
            deleted=bool(row.get("deleted") or False),
            review_failed=row.get("review_result") is False,
            created=str(row.get("created_date") or ""),
        )


def _null_id(value: Any) -> str | None:
    """Null parent as None; jsonl written by pandas may carry NaN or "" instead of null."""
    if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
        return None
    return str(value)


def _rank(value: Any) -> int | None:
    """Rank as int or None; pandas-written files turn null ranks into NaN and ints into floats."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return int(value)


@dataclass
class SelectionStats:
    """Counts explaining a selection: how many trees were seen and why each was rejected."""

    messages: int = 0
    trees: int = 0
    candidates: int = 0
    selected: int = 0
    rejected: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict:
        return {
            "messages": self.messages,
            "trees": self.trees,
            "candidates": self.candidates,
            "rejected": dict(sorted(self.rejected.items())),
            "not_sampled": self.candidates - self.selected,
            "selected": self.selected,
        }


def select_seed_pairs(
    messages: Iterable[dict],
    n: int | None = DEFAULT_N,
    lang: str = "en",
    seed: int = 0,
    accept_unranked_single: bool = False,
) -> list[dict]:
    """First-turn (root prompt, rank-0 reply) pairs, at most one per tree, at most `n`.

    A tree qualifies when its root (parent null, role "prompter") and the reply (role
    "assistant", parent = root, same tree, rank 0) are both in `lang`, not deleted, not rejected
    by review (`review_result` False) and non-empty after stripping. Rejection reasons are
    counted by `select_seed_pairs_with_stats`. See the module docstring for the null-rank and
    sampling decisions.
    """
    rows, _ = select_seed_pairs_with_stats(messages, n, lang, seed, accept_unranked_single)
    return rows


def select_seed_pairs_with_stats(
    messages: Iterable[dict],
    n: int | None = DEFAULT_N,
    lang: str = "en",
    seed: int = 0,
    accept_unranked_single: bool = False,
) -> tuple[list[dict], SelectionStats]:
    """`select_seed_pairs` plus the counts `build_seed` reports."""
    if n is not None and n < 0:
        raise ValueError(f"n must be >= 0 or None, got {n}")
    stats = SelectionStats()
    roots, replies = _index(messages, stats)
    candidates: list[dict] = []
    for root in _unique_roots(roots, stats):
        reason, reply = _judge_tree(root, replies.get(root.message_id, []), lang,
                                    accept_unranked_single)
        if reason:
            stats.rejected[reason] += 1
        else:
            candidates.append(_pair(root, reply))
    stats.candidates = len(candidates)
    chosen = _sample(candidates, n, seed)
    stats.selected = len(chosen)
    return chosen, stats


def _index(messages: Iterable[dict], stats: SelectionStats
           ) -> tuple[list[_Message], dict[str, list[_Message]]]:
    """Roots (parent null) in input order, and assistant messages grouped by parent id."""
    roots: list[_Message] = []
    replies: dict[str, list[_Message]] = defaultdict(list)
    for row in messages:
        stats.messages += 1
        msg = _Message.from_row(row)
        if msg.parent_id is None:
            roots.append(msg)
        elif msg.role == "assistant":
            replies[msg.parent_id].append(msg)
    return roots, replies


def _unique_roots(roots: list[_Message], stats: SelectionStats) -> Iterator[_Message]:
    """Prompter roots, one per tree; other parentless messages are counted, never selected."""
    seen: set[str] = set()
    for root in roots:
        stats.trees += 1
        if root.role != "prompter":
            stats.rejected["root_not_prompter"] += 1
        elif root.tree_id in seen:
            stats.rejected["duplicate_tree"] += 1
        else:
            seen.add(root.tree_id)
            yield root


def _message_problem(msg: _Message, lang: str) -> str | None:
    """Why a root or reply is unusable, or None. Order: deleted beats everything else."""
    if msg.deleted:
        return "deleted"
    if msg.review_failed:
        return "review_failed"
    if msg.lang != lang:
        return "non_english"  # named for the default lang; means "not in `lang`"
    if not msg.text.strip():
        return "empty"
    return None


def _judge_tree(root: _Message, children: list[_Message], lang: str, accept_unranked: bool
                ) -> tuple[str | None, _Message | None]:
    """(rejection reason, None) or (None, the chosen reply) for one tree."""
    problem = _message_problem(root, lang)
    if problem:
        return problem, None
    children = sorted((c for c in children if c.tree_id == root.tree_id),
                      key=lambda c: (c.created, c.message_id))
    if not children:
        return "no_reply", None
    ranked = [c for c in children if c.rank == 0]
    if not ranked and accept_unranked:
        usable = [c for c in children if _message_problem(c, lang) is None]
        ranked = usable if len(usable) == 1 and usable[0].rank is None else []
    if not ranked:
        return "no_rank0_reply", None
    problems = [_message_problem(c, lang) for c in ranked]
    for reply, reply_problem in zip(ranked, problems):
        if reply_problem is None:
            return None, reply
    return problems[0], None


def _pair(root: _Message, reply: _Message) -> dict:
    return {
        "id": root.tree_id,
        "instruction": root.text.strip(),
        "response": reply.text.strip(),
        "prompt_message_id": root.message_id,
        "response_message_id": reply.message_id,
        "message_tree_id": root.tree_id,
        "lang": root.lang,
    }


def _sample_key(seed: int, tree_id: str) -> str:
    return hashlib.sha256(f"{seed}:{tree_id}".encode()).hexdigest()


def _sample(candidates: list[dict], n: int | None, seed: int) -> list[dict]:
    """Up to `n` candidates by hash order (see module docstring), returned sorted by tree id."""
    if n is not None and len(candidates) > n:
        candidates = sorted(candidates, key=lambda r: _sample_key(seed, r["id"]))[:n]
    return sorted(candidates, key=lambda r: r["id"])


# ---------------------------------------------------------------------------------- seed files


def write_seed(rows: Iterable[dict], out_path: str | os.PathLike) -> int:
    """Write seed rows as UTF-8 jsonl (atomically, so a crash never leaves half a seed)."""
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    count = 0
    with tmp.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    tmp.replace(out)
    return count


def build_seed(
    source: str = DEFAULT_HUB_DATASET,
    out: str | os.PathLike = "data/seed.jsonl",
    n: int | None = DEFAULT_N,
    split: str = "train",
    lang: str = "en",
    seed: int = 0,
    accept_unranked_single: bool = False,
) -> dict:
    """Load oasst messages, select the seed, write it to `out`; return the counts.

    Raises SeedError (and writes nothing) when no pair qualifies: an empty seed always means a
    wrong source, split or language, and training on it would fail much later.
    """
    messages = load_oasst_messages(source, split=split, columns=USED_COLUMNS)
    rows, stats = select_seed_pairs_with_stats(messages, n, lang, seed, accept_unranked_single)
    if not rows:
        raise SeedError(
            f"no seed pair qualified in {source!r} (split {split!r}, lang {lang!r}); "
            f"counts: {stats.as_dict()}. Check the source, split and lang"
        )
    write_seed(rows, out)
    return {"source": source, "split": split, "lang": lang, "out": str(out), **stats.as_dict()}


def load_seed(path: str | os.PathLike) -> list[dict]:
    """Read a seed jsonl; every row needs non-empty string `instruction` and `response`."""
    file = Path(path)
    if not file.is_file():
        raise SeedError(f"seed file {file} does not exist; create it with build_seed()")
    rows = [_seed_row(row, place) for place, row in strict_records(file)]
    if not rows:
        raise SeedError(f"seed file {file} has no rows; rebuild it with build_seed()")
    return rows


def _seed_row(row: dict, place: str) -> dict:
    for key in ("instruction", "response"):
        value = row.get(key)
        if not isinstance(value, str) or not value.strip():
            state = "missing" if key not in row else "empty or not a string"
            raise SeedError(f"{place}: field {key!r} is {state}; "
                            "each seed row needs non-empty 'instruction' and 'response'")
    return row

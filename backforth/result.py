"""What a run made (`Result`), read from its run dir when first asked for, as `datasets.Dataset`s.

The exported pairs and the distilled baseline are parquet files; the rejects and a stage's rows are
JSON rows whose columns vary from row to row (a reason's own columns, a raw output that is text for
one scorer and probabilities for another): a column of one plain type keeps it, any other holds each
value as JSON text. The Arrow files `datasets` makes from them are cached by the files' identity.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Iterable
from functools import cached_property
from pathlib import Path
from typing import Any

from .config import RunConfig
from .config import load_config as _load_file
from .errors import UserError

__all__ = ["Result", "jsonl_dataset"]


class Result:
    """What a run made, read from its run dir (`path`) when first asked for; `Result(path)` reads any
    finished run dir."""

    def __init__(self, path: str | os.PathLike, stats: dict | None = None, *, stopped_after: str | None = None):
        self.path = Path(path)
        self.stopped_after = stopped_after
        if stats is not None:
            self.__dict__["stats"] = stats

    def __repr__(self) -> str:
        if self.stopped_after is not None:
            return f"Result({str(self.path)!r}, stopped after stage {self.stopped_after})"
        try:
            o = self.stats["outputs"]
        except UserError:
            return f"Result({str(self.path)!r}, not finished)"
        return f"Result({str(self.path)!r}: {o['sft']} pairs, {o['rejects']} rejects, {o['distilled']} distilled)"

    def _file(self, name: str) -> Path:
        path = self.path / name
        if not path.is_file():
            why = (f"the run stopped after stage {self.stopped_after} (until); run again without `until` to go on"
                   if self.stopped_after else "the run has not finished; run it again (same out) to complete it")
            raise UserError(f"{path}: not there: {why}")
        return path

    @cached_property
    def stats(self) -> dict:
        """stats.json: the funnel, per-stage figures (rows in, kept, rejected by reason, tokens, seconds) and outputs."""
        return json.loads(self._file("stats.json").read_text(encoding="utf-8"))

    @property
    def funnel(self) -> list[tuple[str, int]]:
        """(label, rows) after each step, documents in to exported pairs."""
        return list(self.stats["funnel"].items())

    @cached_property
    def dataset(self):
        """The exported pairs as a `datasets.Dataset`: `messages`, `instruction`, `response`, `score`, ... (sft.parquet)."""
        return _parquet_dataset(self._file("sft.parquet"))

    @cached_property
    def distilled(self):
        """The distillation baseline (the same instructions answered without the document) as a
        `datasets.Dataset`, or None when the run has no distill stage."""
        path = self.path / "distilled.parquet"
        if not path.is_file():
            self._file("stats.json")
            return None
        return _parquet_dataset(path)

    @cached_property
    def rejects(self):
        """Every rejected row as a `datasets.Dataset`, with `stage`, `reason` and what the stage saw
        (columns whose values are not all of one plain type hold JSON text)."""
        return jsonl_dataset(self._file("rejects.jsonl"))

    @cached_property
    def config(self) -> RunConfig:
        """The run's resolved config (config.yaml)."""
        return _load_file(self._file("config.yaml"))

    @property
    def card(self) -> Path:
        """The dataset card (README.md in the run dir)."""
        return self._file("README.md")

    def stage(self, name: str):
        """The rows one stage finished, as it left them (its columns and every earlier stage's), kept or
        rejected (`status`, and `reason` when rejected), as a `datasets.Dataset`; works on a run stopped by `until`."""
        from .pipeline.store import RunStore

        store = RunStore(self.path)
        on_disk = store.on_disk()
        if name not in on_disk:
            have = ", ".join(sorted(on_disk)) or "none"
            raise UserError(f"stage {name}: no results in {self.path} (stages with results: {have})")
        chain = _chain(self.path, name)

        def rows() -> Iterable[dict]:
            for r in store.joined(chain):
                first = {"id": r["id"], "status": r["_status"], "stage": r.get("stage"), "reason": r.get("reason")}
                yield {**first, **{k: v for k, v in r.items() if k not in first and not k.startswith("_")}}

        return _dataset(rows, f"{self.path.resolve()}:{name}:{_stamp(store.stage(name).shards())}")


def _chain(run_dir: Path, name: str) -> list[str]:
    """The stages of the run dir up to `name`, in run order (fingerprints.json keeps that order)."""
    from .pipeline import fingerprints

    path = run_dir / fingerprints.FILE
    order = list(json.loads(path.read_text())) if path.is_file() else [name]
    return order[: order.index(name) + 1] if name in order else [name]


def _stamp(paths: Iterable[Path]) -> str:
    return hashlib.sha1(json.dumps([(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in paths]).encode()).hexdigest()


def jsonl_dataset(path: Path):
    """A JSON-lines file as a `datasets.Dataset`, whatever its rows hold: a column of one plain type
    (text, integers, floats, booleans) keeps it; any other column holds each value as JSON text."""
    def rows() -> Iterable[dict]:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    yield json.loads(line)

    return _dataset(rows, _stamp([path]))


@contextlib.contextmanager
def _quiet_datasets():
    """No "Generating train split" bars from `datasets` while a Result loads a file: a library call prints nothing."""
    from datasets.utils import logging as ds_logging

    was = ds_logging.is_progress_bar_enabled()
    ds_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            ds_logging.enable_progress_bar()


def _parquet_dataset(path: Path):
    import datasets
    import pyarrow.parquet as pq

    if pq.read_metadata(path).num_rows == 0:  # the parquet reader of `datasets` cannot read an empty file
        from datasets.table import InMemoryTable

        return datasets.Dataset(InMemoryTable(pq.read_table(path)))
    with _quiet_datasets():
        return datasets.Dataset.from_parquet(str(path))


def _dataset(rows: Callable[[], Iterable[dict]], fingerprint: str):
    """Two passes over `rows`: the columns and their types, then the rows, streamed into an Arrow file."""
    import datasets

    kinds: dict[str, set[str]] = {}
    for r in rows():
        for k, v in r.items():
            kinds.setdefault(k, set()).add(_kind(v))
    types = {k: _column_type(v - {"null"}) for k, v in kinds.items()}
    if not types:  # no rows: the columns every rejected row has
        columns = ("id", "stage", "reason")
        return datasets.Dataset.from_dict({k: [] for k in columns},
                                          features=datasets.Features({k: datasets.Value("string") for k in columns}))
    features = datasets.Features({k: datasets.Value(t if t != "json" else "string") for k, t in types.items()})

    def generate():
        for r in rows():
            yield {k: _cell(r.get(k), types[k]) for k in types}

    key = hashlib.sha1(f"{fingerprint}:{sorted(types.items())}".encode()).hexdigest()
    with _quiet_datasets():
        return datasets.Dataset.from_generator(generate, features=features, fingerprint=key)


def _kind(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float"
    return "str" if isinstance(v, str) else "json"


def _column_type(kinds: set[str]) -> str:
    if not kinds or kinds == {"str"}:
        return "string"
    if kinds == {"bool"}:
        return "bool"
    if kinds == {"int"}:
        return "int64"
    if kinds <= {"int", "float"}:
        return "float64"
    return "json"


def _cell(v: Any, kind: str) -> Any:
    if v is None or kind != "json":
        return v
    return json.dumps(v, ensure_ascii=False, default=str)

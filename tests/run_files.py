"""Reading a run dir's exports in tests: sft.parquet holds every column of each pair (sft.jsonl the
chat-format subset), distilled.parquet the baseline."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq


def read_sft(out: Path) -> list[dict]:
    return pq.read_table(Path(out) / "sft.parquet").to_pylist()


def read_distilled(out: Path) -> list[dict]:
    return pq.read_table(Path(out) / "distilled.parquet").to_pylist()

"""Append-only stage files: one JSON line per finished row (kept or rejected), flushed per chunk.

Resume reads the ids a file already holds and sends only the rest; nothing is ever rewritten. A
crash in the middle of a write leaves at most one partial last line, which `repair()` cuts off
before the next append (the rows of that chunk are then simply done again).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

DONE, REJECTED = "done", "rejected"


class StageFile:
    def __init__(self, path: Path):
        self.path = path
        self.time_path = path.with_suffix(".time.jsonl")

    def exists(self) -> bool:
        return self.path.exists()

    def repair(self) -> None:
        """Cut a partial last line left by a crash mid-write."""
        if not self.path.exists():
            return
        with open(self.path, "rb+") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            if size == 0:
                return
            fh.seek(max(0, size - 1))
            if fh.read(1) == b"\n":
                return
            # walk back to the previous newline
            pos = size - 1
            while pos > 0:
                step = min(65536, pos)
                fh.seek(pos - step)
                chunk = fh.read(step)
                nl = chunk.rfind(b"\n")
                if nl >= 0:
                    fh.truncate(pos - step + nl + 1)
                    return
                pos -= step
            fh.truncate(0)

    def rows(self, status: str | None = None) -> Iterator[dict]:
        if not self.path.exists():
            return
        with open(self.path, "rb") as fh:
            for line in fh:
                if not line.endswith(b"\n"):
                    return  # a partial line from a crash: not finished
                row = json.loads(line)
                if status is None or row.get("_status") == status:
                    yield row

    def done_ids(self) -> set[str]:
        return {row["id"] for row in self.rows()}

    def append(self, rows: Iterable[dict], seconds: float | None = None) -> int:
        lines = [json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows]
        if not lines:
            return 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write("".join(lines))
            fh.flush()
            os.fsync(fh.fileno())
        if seconds is not None:
            with open(self.time_path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"rows": len(lines), "seconds": round(seconds, 4)}) + "\n")
        return len(lines)

    def seconds(self) -> float:
        if not self.time_path.exists():
            return 0.0
        total = 0.0
        with open(self.time_path, encoding="utf-8") as fh:
            for line in fh:
                try:
                    total += json.loads(line)["seconds"]
                except (json.JSONDecodeError, KeyError):
                    continue  # a partial line from a crash
        return total

    def remove(self) -> None:
        for p in (self.path, self.time_path):
            if p.exists():
                p.unlink()

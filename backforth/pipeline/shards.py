"""Stage results as a folder of parquet shards (`executor: ray`), with the interface of `StageFile`.

`stages/<stage>/part-<hash>.parquet`: each shard holds the rows of one batch, sorted by `_index`, in
four columns: `id`, `_status`, `_index` and `row`, the whole row as a JSON string. Rows of one stage
have different columns (a reject carries `reason` and whatever the stage saw, a row of a bad input
line has no `text`), so a JSON payload avoids schema fights between shards while the columns that
resume, filtering and ordering need stay plain parquet columns, readable without decoding a row.

A shard is written under a temporary name and renamed when complete, so it is either whole or
absent: a crash mid-write leaves only a `.tmp-*` file, which `repair()` removes (those rows are then
simply done again). A shard's name is a hash of its ids, so a batch written twice (a Ray task
retried after its actor died) replaces itself instead of duplicating rows. Nothing is rewritten.

`rows()` yields rows in input order (`_index`), like a jsonl stage file written in order: shards are
merged by their first `_index`, opening one only when the merge reaches it, so memory holds the
shards that overlap at the merge point (one or two: a shard is a contiguous run of its input).
`_time.jsonl` in the folder records the stage's wall time, written by the driver.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from .store import StageFile

TIME_FILE = "_time.jsonl"
TMP_PREFIX = ".tmp-"
ROW_GROUP_ROWS = 256  # a Ray batch reads the row groups holding its rows, not a whole driver shard


def _schema():
    import pyarrow as pa

    return pa.schema([("id", pa.string()), ("_status", pa.string()), ("_index", pa.int64()), ("row", pa.string())])


def _order_key(row: dict) -> int:
    index = row.get("_index")
    return index if isinstance(index, int) else -1


def write_shard(folder: Path, rows: list[dict]) -> Path | None:
    """Write `rows` as one new shard, atomically; returns its path (None for no rows)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not rows:
        return None
    rows = sorted(rows, key=_order_key)
    ids = [str(r["id"]) for r in rows]
    name = hashlib.sha1("\n".join(ids).encode("utf-8", "surrogatepass")).hexdigest()[:20]
    table = pa.table({
        "id": ids,
        "_status": [r.get("_status") for r in rows],
        "_index": [r.get("_index") if isinstance(r.get("_index"), int) else None for r in rows],
        "row": [json.dumps(r, ensure_ascii=False, default=str) for r in rows],
    }, schema=_schema())
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"part-{name}.parquet"
    tmp = folder / f"{TMP_PREFIX}{name}-{os.getpid()}.parquet"
    pq.write_table(table, tmp, row_group_size=ROW_GROUP_ROWS)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, final)
    return final


class ShardStore:
    """A stage's parquet shards: `exists`, `repair`, `rows`, `append`, `seconds`, `remove` as `StageFile`."""

    def __init__(self, folder: Path):
        self.path = folder
        self.time_path = folder / TIME_FILE

    def shards(self) -> list[Path]:
        return sorted(self.path.glob("part-*.parquet")) if self.path.is_dir() else []

    def exists(self) -> bool:
        return self.path.is_dir()

    def repair(self) -> None:
        """Remove shards a crash left half-written (temporary names: never read)."""
        if self.path.is_dir():
            for p in self.path.glob(f"{TMP_PREFIX}*"):
                p.unlink(missing_ok=True)

    def ids(self, status: str | None = None) -> Iterator[str]:
        """Ids of the finished rows (of one status), from the plain columns, in no particular order."""
        import pyarrow.parquet as pq

        for p in self.shards():
            t = pq.read_table(p, columns=["id", "_status"])
            for i, s in zip(t.column("id").to_pylist(), t.column("_status").to_pylist()):
                if status is None or s == status:
                    yield i

    def shards_in_order(self) -> list[Path]:
        """Shards sorted by their first `_index` (a shard's rows are sorted when written)."""
        return [p for _first, _n, p in sorted((self._first_index(p), n, p) for n, p in enumerate(self.shards()))]

    def rows(self, status: str | None = None) -> Iterator[dict]:
        """Rows (of one status) in input order: the shards merged by `_index`."""
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        def shard_rows(path: Path) -> Iterator[tuple[int, str]]:
            t = pq.read_table(path, columns=["_status", "_index", "row"])
            if status is not None:
                t = t.filter(pc.equal(t.column("_status"), status))
            for index, payload in zip(t.column("_index").to_pylist(), t.column("row").to_pylist()):
                yield (-1 if index is None else index), payload

        # (first _index, shard number, path) of the shards not opened yet, in merge order
        pending = [(self._first_index(p), n, p) for n, p in enumerate(self.shards())]
        pending.sort(reverse=True)
        heap: list[tuple[int, int, str, Iterator]] = []

        def push(n: int, it: Iterator) -> None:
            for index, payload in it:
                heapq.heappush(heap, (index, n, payload, it))
                return

        while pending or heap:
            while pending and (not heap or pending[-1][0] <= heap[0][0]):
                _first, n, p = pending.pop()
                push(n, shard_rows(p))
            if heap:
                _index, n, payload, it = heapq.heappop(heap)
                yield json.loads(payload)
                push(n, it)

    @staticmethod
    def _first_index(path: Path) -> int:
        import pyarrow.parquet as pq

        meta = pq.ParquetFile(path).metadata
        col = meta.schema.names.index("_index")
        if meta.num_row_groups and meta.row_group(0).column(col).statistics is not None \
                and meta.row_group(0).column(col).statistics.has_min_max:
            return meta.row_group(0).column(col).statistics.min  # sorted rows: the first is the min
        idx = pq.read_table(path, columns=["_index"]).column("_index")
        return idx[0].as_py() if len(idx) and idx[0].as_py() is not None else -1

    def done_ids(self) -> set[str]:
        return set(self.ids())

    def append(self, rows: Iterable[dict], seconds: float | None = None) -> int:
        """Write `rows` as one new shard (the driver's stages; the Ray workers call `write_shard`)."""
        rows = list(rows)
        if not rows:
            return 0
        write_shard(self.path, rows)
        if seconds is not None:
            self.record_time(len(rows), seconds)
        return len(rows)

    def record_time(self, rows: int, seconds: float) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.time_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"rows": rows, "seconds": round(seconds, 4)}) + "\n")

    def seconds(self) -> float:
        return StageFile.seconds(self)  # the same time file format

    def remove(self) -> None:
        if self.path.is_dir():
            for p in self.path.iterdir():
                p.unlink()
            self.path.rmdir()


def open_stage(out: Path, name: str, executor: str = "local") -> StageFile | ShardStore:
    """The results of stage `name` in run dir `out`: a jsonl file (executor local) or a folder of
    parquet shards (executor ray), whichever the run wrote; `executor` decides for a stage not run yet."""
    jsonl, folder = out / "stages" / f"{name}.jsonl", out / "stages" / name
    if jsonl.exists():
        return StageFile(jsonl)
    if folder.is_dir() or executor == "ray":
        return ShardStore(folder)
    return StageFile(jsonl)


def stages_on_disk(out: Path) -> set[str]:
    """Names of the stages with results in `out/stages`, in either layout."""
    root = out / "stages"
    if not root.is_dir():
        return set()
    names = {p.name[: -len(".jsonl")] for p in root.glob("*.jsonl") if not p.name.endswith(".time.jsonl")}
    return names | {p.name for p in root.iterdir() if p.is_dir() and any(p.glob("part-*.parquet"))}


def layout_conflict(out: Path, executor: str) -> str | None:
    """Why `out` cannot be resumed with `executor` (its stages were written in the other layout), or None."""
    root = out / "stages"
    if not root.is_dir():
        return None
    if executor == "ray":
        other = sorted(p.name for p in root.glob("*.jsonl") if not p.name.endswith(".time.jsonl"))
        made_by = "local"
    else:
        other = sorted(p.name for p in root.iterdir() if p.is_dir() and any(p.glob("part-*.parquet")))
        made_by = "ray"
    if not other:
        return None
    return (f"{out}: this run dir was made with runner.executor {made_by} ({root / other[0]}); resume it with "
            f"--set runner.executor={made_by}, or use a new --out for executor {executor}")

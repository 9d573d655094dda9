"""The one layout of a run's results: per stage, parquet shards of the columns that stage added.

    stages/<stage>/part-<first _index>-<hash of ids>.parquet

Each shard holds the rows of one chunk, sorted by `_index` (input order), in the plain columns that
resume, filtering and ordering read without decoding anything (`id`, `_index`, `_status`, `stage`,
`reason`) and one `cols` column: the JSON of the columns the stage added or changed (orjson). Text is
stored once: the first stage stores the whole input row (its cleaned text), later stages only what
they add (an instruction, a score, a response), and reading a stage joins its rows with the columns
the earlier stages gave them, by `_index` (`RunStore.joined`). The chunk's counters (`Stage.count`,
tokens) and its wall time go into the shard's file metadata, so stats.json is a sum over shards.

A shard is written under a temporary name and renamed when complete: it is whole or absent. A
crash mid-write leaves a `.tmp-*` file, which `repair()` removes (those rows are simply done again).
The name's hash of the shard's ids makes a chunk written twice (a Ray task retried after its actor
died) replace itself instead of duplicating rows. Nothing is ever rewritten. The local runner and
the Ray executor write the same shards; export, analysis and report read only this layout.
"""

from __future__ import annotations

import errno
import hashlib
import heapq
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from ..errors import UserError

try:
    import orjson

    def dumps(obj) -> bytes:
        return orjson.dumps(obj, default=str, option=orjson.OPT_SERIALIZE_NUMPY)

    loads = orjson.loads
except ImportError:  # pragma: no cover - orjson is a dependency; json keeps a bare install working
    import json

    def dumps(obj) -> bytes:
        return json.dumps(obj, ensure_ascii=False, default=str).encode()

    loads = json.loads

DONE, REJECTED = "done", "rejected"
BOOKKEEPING = ("id", "_index", "_status", "stage", "reason")
TMP_PREFIX = ".tmp-"
ROW_GROUP_ROWS = 256  # a Ray batch reads the row groups holding its rows, not a whole shard
META_KEY = b"backforth"


DISK_ERRNOS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
               errno.EIO: "input/output error", errno.EROFS: "read-only file system"}


def disk_errno(err: OSError) -> int | None:
    """The errno of a failed write when it is the disk's fault (full, over quota, failing, read-only).
    pyarrow's errors carry it in their text ("[errno 28] ..."), not in `errno`."""
    if err.errno in DISK_ERRNOS:
        return err.errno
    found = re.search(r"\[errno (\d+)\]", str(err), re.IGNORECASE)
    if found and int(found.group(1)) in DISK_ERRNOS:
        return int(found.group(1))
    text = str(err).lower()
    return next((n for n, what in DISK_ERRNOS.items() if what in text), None)


class DiskFull(UserError):
    """A shard could not be written because of the disk; what was written before is whole and kept."""

    def __init__(self, path: Path, err: OSError):
        code = disk_errno(err)
        run_dir = path.parent.parent.parent  # <run dir>/stages/<stage>/<shard>
        todo = {errno.EIO: f"Check that disk, or move the run dir {run_dir} to another one",
                errno.EROFS: f"Make that disk writable, or move the run dir {run_dir} to a writable one"}.get(
                    code, f"Free space on that disk, or move the run dir {run_dir} to a bigger one")
        super().__init__(f"cannot write {path}: {DISK_ERRNOS[code]}. Nothing finished is lost (every saved shard is "
                         f"whole). {todo}, then run the same command again to resume.")
        self.path = path


def _schema():
    import pyarrow as pa

    s = pa.string()
    return pa.schema([("id", s), ("_index", pa.int64()), ("_status", s), ("stage", s), ("reason", s),
                      ("cols", pa.binary())])


def added_columns(row: dict, base: dict | None) -> dict:
    """The columns of `row` that `base` (the row as the stage received it) lacks or holds otherwise."""
    return {k: v for k, v in row.items()
            if k not in BOOKKEEPING and (base is None or k not in base or base[k] != v)}


def own(row: dict) -> dict:
    """A stored row without its bookkeeping columns."""
    return {k: v for k, v in row.items() if k not in BOOKKEEPING}


class StageStore:
    """One stage's shards."""

    def __init__(self, folder: Path):
        self.path = Path(folder)
        self.name = self.path.name
        self._ranges: list[tuple[int, int, Path]] | None = None

    def exists(self) -> bool:
        return self.path.is_dir() and any(self.path.glob("part-*.parquet"))

    def shards(self) -> list[Path]:
        return sorted(self.path.glob("part-*.parquet")) if self.path.is_dir() else []

    def repair(self) -> None:
        """Remove shards a crash left half-written (temporary names: never read)."""
        if self.path.is_dir():
            for p in self.path.glob(f"{TMP_PREFIX}*"):
                p.unlink(missing_ok=True)

    def remove(self) -> None:
        if self.path.is_dir():
            for p in self.path.iterdir():
                p.unlink()
            self.path.rmdir()

    # ---- writing -------------------------------------------------------------------------------

    def write(self, rows: Sequence[dict], bases: Sequence[dict | None] | None = None,
              counters: dict | None = None, seconds: float = 0.0) -> Path | None:
        """One shard for `rows` (finished: `_status` set), atomically. `bases[i]` is row i as the stage
        received it: only the columns that differ from it are stored."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not rows:
            return None
        order = sorted(range(len(rows)), key=lambda i: rows[i].get("_index", -1))
        bases = bases or [None] * len(rows)
        ids = [str(rows[i]["id"]) for i in order]
        name = hashlib.sha1("\n".join(ids).encode("utf-8", "surrogatepass")).hexdigest()[:16]
        first = rows[order[0]].get("_index", 0)
        table = pa.table({
            "id": ids,
            "_index": [rows[i].get("_index") for i in order],
            "_status": [rows[i]["_status"] for i in order],
            "stage": [rows[i].get("stage") for i in order],
            "reason": [rows[i].get("reason") for i in order],
            "cols": [dumps(added_columns(rows[i], bases[i])) for i in order],
        }, schema=_schema())
        meta = {"rows": len(rows), "seconds": round(seconds, 4), "counters": dict(counters or {})}
        table = table.replace_schema_metadata({META_KEY: dumps(meta)})
        final = self.path / f"part-{first:012d}-{name}.parquet"
        tmp = self.path / f"{TMP_PREFIX}{final.stem}-{os.getpid()}.parquet"
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, tmp, row_group_size=ROW_GROUP_ROWS, compression="zstd")
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, final)
        except OSError as err:
            if disk_errno(err) is None:
                raise
            raise DiskFull(final, err) from None
        finally:
            tmp.unlink(missing_ok=True)
        self._ranges = None
        return final

    # ---- reading -------------------------------------------------------------------------------

    def keys(self) -> Iterator[tuple[str, int, str, str | None]]:
        """(id, _index, _status, reason) of every row, from the plain columns, shard by shard."""
        import pyarrow.parquet as pq

        for p in self.shards():
            t = pq.read_table(p, columns=["id", "_index", "_status", "reason"])
            yield from zip(*(t.column(c).to_pylist() for c in ("id", "_index", "_status", "reason")))

    def ids(self, status: str | None = None) -> Iterator[str]:
        return (i for i, _x, s, _r in self.keys() if status is None or s == status)

    def rows(self, status: str | None = None) -> Iterator[dict]:
        """This stage's rows (of one status) in input order: its own columns and the bookkeeping ones."""
        return (row for _i, row in self._merged(lambda p: _shard_rows(p, status)))

    def added(self) -> Iterator[tuple[int, dict]]:
        """(_index, the columns this stage added) of every row in input order, rows that added none
        left out: what a join needs of an earlier stage, without its bookkeeping."""
        return self._merged(_shard_added)

    def _merged(self, read) -> Iterator[tuple[int, object]]:
        """(_index, item) over the shards, merged by `_index`; a shard is opened only when the merge
        reaches its first row, so memory holds the shards that overlap (one or two)."""
        pending = sorted(((self._first(p), n, p) for n, p in enumerate(self.shards())), reverse=True)
        heap: list = []

        def push(n: int, it: Iterator) -> None:
            item = next(it, None)
            if item is not None:
                heapq.heappush(heap, (item[0], n, item[1], it))

        while pending or heap:
            while pending and (not heap or pending[-1][0] <= heap[0][0]):
                _first, n, p = pending.pop()
                push(n, read(p))
            if heap:
                index, n, item, it = heapq.heappop(heap)
                yield index, item
                push(n, it)

    def rows_at(self, indices: Iterable[int]) -> dict[int, dict]:
        """The rows with these `_index` values, read from the shards and row groups that hold them."""
        import pyarrow.parquet as pq

        wanted = sorted(set(indices))
        if not wanted:
            return {}
        lo, hi = wanted[0], wanted[-1]
        out: dict[int, dict] = {}
        for first, last, p in self._index_ranges():
            if last < lo or first > hi:
                continue
            t = pq.read_table(p, filters=[("_index", "in", wanted)])
            for row in _table_rows(t):
                out[row["_index"]] = row
        return out

    def totals(self) -> tuple[Counter, float, int]:
        """(summed counters, summed seconds, rows) over the shards, from their metadata."""
        import pyarrow.parquet as pq

        counters, seconds, n = Counter(), 0.0, 0
        for p in self.shards():
            meta = loads((pq.read_schema(p).metadata or {}).get(META_KEY, b"{}"))
            counters.update(meta.get("counters", {}))
            seconds += meta.get("seconds", 0.0)
            n += meta.get("rows", 0)
        return counters, seconds, n

    def _first(self, path: Path) -> int:
        return int(path.name.split("-")[1])

    def _index_ranges(self) -> list[tuple[int, int, Path]]:
        import pyarrow.parquet as pq

        if self._ranges is None:
            ranges = []
            for p in self.shards():
                md = pq.read_metadata(p)
                col = md.schema.names.index("_index")
                stats = [md.row_group(g).column(col).statistics for g in range(md.num_row_groups)]
                ranges.append((min(s.min for s in stats), max(s.max for s in stats), p))
            self._ranges = ranges
        return self._ranges


def _shard_rows(path: Path, status: str | None) -> Iterator[tuple[int, dict]]:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    t = pq.read_table(path)
    if status is not None:
        t = t.filter(pc.equal(t.column("_status"), status))
    return ((row["_index"], row) for row in _table_rows(t))


_EMPTY = dumps({})


def _shard_added(path: Path) -> Iterator[tuple[int, dict]]:
    import pyarrow.parquet as pq

    t = pq.read_table(path, columns=["_index", "cols"])
    for index, cols in zip(t.column("_index").to_pylist(), t.column("cols").to_pylist()):
        if cols != _EMPTY:
            yield index, loads(cols)


def _table_rows(t) -> Iterator[dict]:
    cols = {c: t.column(c).to_pylist() for c in ("id", "_index", "_status", "stage", "reason", "cols")}
    for i in range(t.num_rows):
        row = loads(cols["cols"][i])
        row.update(id=cols["id"][i], _index=cols["_index"][i], _status=cols["_status"][i])
        if cols["stage"][i] is not None:
            row["stage"], row["reason"] = cols["stage"][i], cols["reason"][i]
        yield row


class RunStore:
    """The stages of one run dir, and the joined view of a row as a stage sees it."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.root = self.out / "stages"

    def stage(self, name: str) -> StageStore:
        return StageStore(self.root / name)

    def on_disk(self) -> set[str]:
        return {p.name for p in self.root.iterdir() if StageStore(p).exists()} if self.root.is_dir() else set()

    def joined(self, chain: Sequence[str], status: str | None = None) -> Iterator[dict]:
        """Rows of `chain[-1]` (of `status`), each with the columns the earlier stages of `chain`
        gave it (a later stage's value of a column wins) and the last stage's bookkeeping."""
        earlier = [self.stage(n).added() for n in chain[:-1]]
        heads = [next(it, None) for it in earlier]
        for row in self.stage(chain[-1]).rows(status):
            index, merged = row["_index"], {}
            for k, it in enumerate(earlier):
                while heads[k] is not None and heads[k][0] < index:
                    heads[k] = next(it, None)
                if heads[k] is not None and heads[k][0] == index:
                    merged.update(heads[k][1])
            merged.update(row)
            yield merged

    def joined_at(self, chain: Sequence[str], indices: Iterable[int]) -> list[dict]:
        """The rows of `chain[-1]` with these `_index` values, joined as `joined` does, in input order."""
        indices = sorted(set(indices))
        parts = [self.stage(n).rows_at(indices) for n in chain]
        out = []
        for i in indices:
            if i not in parts[-1]:
                continue
            merged: dict = {}
            for part in parts[:-1]:
                if i in part:
                    merged.update(own(part[i]))
            merged.update(parts[-1][i])
            out.append(merged)
        return out

    def final(self, chain: Sequence[str]) -> Iterator[tuple[dict, str]]:
        """Every row of the run once, in input order, with the columns every stage of `chain` gave it
        and the bookkeeping of the last stage that has it (its final verdict): (row, that stage).
        One pass over all the stages at once."""
        streams = [self.stage(n).rows() for n in chain]
        heads = [next(it, None) for it in streams]
        while any(h is not None for h in heads):
            index = min(h["_index"] for h in heads if h is not None)
            merged, last = {}, None
            for k, it in enumerate(streams):
                h = heads[k]
                if h is not None and h["_index"] == index:
                    merged.update(own(h))
                    last = (k, h)
                    heads[k] = next(it, None)
            k, h = last
            merged.update({c: h[c] for c in BOOKKEEPING if c in h})
            yield merged, chain[k]

"""The one reader of record files: JSON lines (plain or gzipped), a JSON array, parquet.

`iter_records` yields `(place, record, problem)` for every record of a file, in file order, with
exactly one of `record` (a dict) and `problem` (a `Problem`) set. The place names the record the
way a user finds it again: `file:line` (1-based, counting blank lines) for JSON lines, `file[i]`
(0-based) for a JSON array, `file:rowN` (1-based) for parquet.

A record that cannot be one (not UTF-8, malformed JSON, not an object) is a `Problem`, never an
exception: the records after it still come, so a tolerant caller (the corpus reader) turns it into
a rejected row and a strict one (eval sets, seed files) raises its own error naming the place. A
file that cannot be read as a whole (not parquet, a broken gzip stream, a JSON array that is not
one) raises `UnreadableFileError`.

JSON lines and parquet are streamed (a line or a batch at a time); a JSON array is parsed whole, as
AlpacaEval's files (805 rows) are small.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError

DATA_SUFFIXES: tuple[str, ...] = (".jsonl", ".jsonl.gz", ".json.gz", ".json", ".parquet")  # .json.gz: Dolma's JSON lines
INVALID_UTF8, MALFORMED_JSON, NOT_AN_OBJECT = "invalid_utf8", "malformed_json", "not_an_object"
PARQUET_BATCH = 1024


class UnreadableFileError(UserError):
    """A whole file cannot be read as records; the message names it."""


@dataclass(frozen=True)
class Problem:
    """Why a line or array item is not a record.

    `kind` is `invalid_utf8`, `malformed_json` or `not_an_object`; `detail` says what exactly:
    `byte N` (the first bad byte, counted from the line's start), the JSON error message (`too
    deeply nested` for a nesting Python's parser refuses), or the JSON type found (`list`, `str`...).
    `column` is the JSON error's column (1-based) when there is one.
    """

    kind: str
    detail: str
    column: int | None = None

    def __str__(self) -> str:
        """The corpus's reject form: `invalid_utf8 (byte 24)`, `malformed_json (Expecting value)`, `not_an_object`."""
        return self.kind if self.kind == NOT_AN_OBJECT else f"{self.kind} ({self.detail})"


Record = tuple[str, dict | None, Problem | None]


def iter_records(path: str | Path, *, name: str | None = None, json_array: bool = True,
                 columns: Sequence[str] | None = None, drop_partial_last_line: bool = False) -> Iterator[Record]:
    """`(place, record, problem)` per record of `path`; the format comes from the file name.

    `.parquet` is parquet, `.json` a JSON array (AlpacaEval's format) unless `json_array=False`,
    anything else JSON lines, gunzipped when the name ends in `.gz`. Blank lines are skipped.

    `name`: the file as places show it (default: `path` as given). `columns`: for parquet, read only
    those of them the file has (a JSON record always comes whole). `drop_partial_last_line`: stop
    before a last line with no newline, the half-written line of a writer that was killed.
    """
    path = Path(path)
    name = str(path) if name is None else name
    if path.name.endswith(".parquet"):
        return _parquet(path, name, columns)
    if path.name.endswith(".json") and json_array:
        return _json_array(path, name)
    return _json_lines(path, name, drop_partial_last_line)


def probe_write(folder: str | Path) -> None:
    """Create and remove a file in `folder`: raises the OSError a real write there would meet."""
    import os
    import tempfile

    fd, tmp = tempfile.mkstemp(prefix=".backforth-write-check-", dir=folder)
    os.close(fd)
    os.unlink(tmp)


def data_files(folder: str | Path, suffixes: Sequence[str] = DATA_SUFFIXES) -> list[Path]:
    """The files under `folder` (recursively) whose name ends in one of `suffixes`, sorted by path."""
    ends = tuple(suffixes)
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.name.endswith(ends))


def parquet_columns(path: str | Path) -> list[str]:
    """The column names of a parquet file, read from its footer only."""
    import pyarrow.parquet as pq

    try:
        return list(pq.read_schema(path).names)
    except Exception as err:  # pyarrow raises ArrowInvalid, OSError... for a file that is not parquet
        raise UnreadableFileError(f"{path}: not a readable parquet file ({err})") from None


def parse_record(text: str | bytes) -> tuple[dict | None, Problem | None]:
    """`(record, None)` for the JSON text of one object, else `(None, problem)`."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as err:
            return None, Problem(INVALID_UTF8, f"byte {err.start}")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        return None, Problem(MALFORMED_JSON, err.msg, err.colno)
    except RecursionError:
        return None, Problem(MALFORMED_JSON, "too deeply nested")
    return _object(value)


def _object(value: object) -> tuple[dict | None, Problem | None]:
    if isinstance(value, dict):
        return value, None
    return None, Problem(NOT_AN_OBJECT, type(value).__name__)


def _json_lines(path: Path, name: str, drop_partial_last_line: bool) -> Iterator[Record]:
    try:
        with (gzip.open if path.name.endswith(".gz") else open)(path, "rb") as fh:
            for lineno, raw in enumerate(fh, 1):
                if not raw.strip():
                    continue
                if drop_partial_last_line and not raw.endswith(b"\n"):
                    return
                record, problem = parse_record(raw)
                yield f"{name}:{lineno}", record, problem
    except (OSError, EOFError, zlib.error) as err:  # missing, unreadable, a broken or truncated gzip stream
        raise UnreadableFileError(f"{path}: cannot read ({err}); is it a valid (gzipped) UTF-8 file?") from None


def _json_array(path: Path, name: str) -> Iterator[Record]:
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as err:
        raise UnreadableFileError(f"{path}: cannot read ({err})") from None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        reason = str(err) if not isinstance(err, RecursionError) else "too deeply nested"
        raise UnreadableFileError(
            f"{path}: not a valid JSON file ({reason}); use a JSON array of objects or a .jsonl file") from None
    if not isinstance(data, list):
        raise UnreadableFileError(f"{path}: a .json file must hold a list of objects (AlpacaEval's format)")
    for i, value in enumerate(data):
        record, problem = _object(value)
        yield f"{name}[{i}]", record, problem


def _parquet(path: Path, name: str, columns: Sequence[str] | None) -> Iterator[Record]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as err:  # pyarrow raises several types for a bad file
        raise UnreadableFileError(f"{path}: not a readable parquet file ({err})") from None
    present = pf.schema_arrow.names
    wanted = None if columns is None else [c for c in columns if c in present]
    n = 0
    for batch in pf.iter_batches(batch_size=PARQUET_BATCH, columns=wanted):
        for record in batch.to_pylist():
            n += 1
            yield f"{name}:row{n}", record, None

"""Reading oasst1 messages (the Humpback seed's source) from the hub or from local files.

Users normally read `OpenAssistant/oasst1` from the hub (`datasets.load_dataset`); offline runs and
tests read local `.jsonl` / `.jsonl.gz` / `.parquet` files in the same schema, through
`backforth.io`. Required columns are checked before any message is yielded, so a wrong file fails
with a clear message instead of a KeyError deep in the selection.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from ..errors import UserError
from ..io import INVALID_UTF8, NOT_AN_OBJECT, Problem, UnreadableFileError, data_files, iter_records, parquet_columns

DEFAULT_HUB_DATASET = "OpenAssistant/oasst1"

# Columns selection cannot work without; `rank`, `deleted`, `review_result` are optional (absent
# means "unranked", "not deleted", "not reviewed as bad").
REQUIRED_COLUMNS: tuple[str, ...] = (
    "message_id",
    "parent_id",
    "message_tree_id",
    "role",
    "text",
    "lang",
)
OPTIONAL_COLUMNS: tuple[str, ...] = ("rank", "deleted", "review_result", "created_date")
USED_COLUMNS: tuple[str, ...] = REQUIRED_COLUMNS + OPTIONAL_COLUMNS

LOCAL_SUFFIXES: tuple[str, ...] = (".jsonl", ".jsonl.gz", ".parquet")
KNOWN_SPLITS: tuple[str, ...] = ("train", "validation", "test")


class SeedError(UserError):
    """A problem the user can fix (bad path, malformed file, missing column, empty selection)."""


def load_oasst_messages(
    source: str = DEFAULT_HUB_DATASET,
    split: str = "train",
    columns: Sequence[str] | None = None,
) -> Iterator[dict]:
    """Yield oasst1 messages from a local file/folder or from the hub.

    `source` is a local path when it exists (or looks like one: a known suffix, or starts with
    `.`, `/`, `~`), otherwise a hub dataset name. `split` selects the hub split; for a folder it
    picks files whose name starts with the split (hub snapshots name them `train-0000...parquet`,
    `validation-...`) and is ignored when no file is named after a split. `columns` limits what is
    read (parquet and hub skip the bulky `detoxify`/`labels` columns this way); None yields every
    column. Required columns are checked up front so a wrong file fails with a clear message.
    """
    path = Path(source).expanduser()
    if path.exists():
        return _iter_local(path, split, columns)
    if _looks_like_path(source):
        raise SeedError(
            f"seed source {source!r} does not exist; pass an existing .jsonl/.jsonl.gz/.parquet "
            f"file or folder, or a hub dataset name such as {DEFAULT_HUB_DATASET!r}"
        )
    return _iter_hub(source, split, columns)


def _looks_like_path(source: str) -> bool:
    """A missing local path must not be sent to the hub, where it fails with a confusing error."""
    return source.endswith(LOCAL_SUFFIXES + (".gz", ".json")) or source.startswith((".", "/", "~"))


def _iter_local(path: Path, split: str, columns: Sequence[str] | None) -> Iterator[dict]:
    files = _local_files(path, split)
    # Check every file's header before yielding, so a bad shard fails before any work is done.
    for file in files:
        if file.name.endswith(".parquet"):
            try:
                _check_columns(parquet_columns(file), str(file))
            except UnreadableFileError as err:
                raise SeedError(str(err)) from None
    return _chain_files(files, columns)


def _chain_files(files: list[Path], columns: Sequence[str] | None) -> Iterator[dict]:
    for file in files:
        if file.name.endswith(".parquet"):  # columns checked up front; only `columns` are read
            yield from (row for _, row in strict_records(file, columns))
            continue
        for place, row in strict_records(file):
            _check_columns(row.keys(), place)
            yield row if columns is None else {c: row[c] for c in columns if c in row}


def _local_files(path: Path, split: str) -> list[Path]:
    """The data files for `path`: itself, or the (split's) data files under a folder, sorted."""
    if path.is_file():
        if not path.name.endswith(LOCAL_SUFFIXES):
            raise SeedError(f"{path}: unsupported file type; use .jsonl, .jsonl.gz or .parquet")
        return [path]
    files = data_files(path, LOCAL_SUFFIXES)
    if not files:
        raise SeedError(f"{path}: folder has no .jsonl, .jsonl.gz or .parquet files")
    if any(p.name.startswith(KNOWN_SPLITS) for p in files):
        files = [p for p in files if p.name.startswith(split)]
        if not files:
            raise SeedError(
                f"{path}: no file for split {split!r} (files are named after splits; "
                f"expected names starting with {split!r})"
            )
    return files


def _check_columns(present: Iterable[str], where: str) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in set(present)]
    if missing:
        raise SeedError(
            f"{where}: missing required column(s) {', '.join(missing)}; the seed needs oasst1 "
            f"message rows with {', '.join(REQUIRED_COLUMNS)}"
        )


def strict_records(path: Path, columns: Sequence[str] | None = None) -> Iterator[tuple[str, dict]]:
    """(place, record) of a messages or seed file (JSON lines, whatever the name, or parquet).

    The first bad line is a SeedError naming it; `columns` limits what parquet reads.
    """
    try:
        for place, row, problem in iter_records(path, json_array=False, columns=columns):
            if problem is not None:
                raise SeedError(_problem_message(place, problem))
            yield place, row
    except UnreadableFileError as err:
        raise SeedError(str(err)) from None


def _problem_message(place: str, problem: Problem) -> str:
    if problem.kind == INVALID_UTF8:
        return f"{place}: not UTF-8 text ({problem.detail}); is it a valid (gzipped) UTF-8 file?"
    if problem.kind == NOT_AN_OBJECT:
        return f"{place}: expected a JSON object, got {problem.detail}"
    at = f" at column {problem.column}" if problem.column is not None else ""
    return (f"{place}: malformed JSON ({problem.detail}{at}); "
            "each line must be one JSON object; fix or delete this line")


def _iter_hub(name: str, split: str, columns: Sequence[str] | None) -> Iterator[dict]:
    """Load from the Hugging Face hub; network/split failures become a SeedError with advice.

    When the hub cannot be reached at all, the libraries are switched to their local cache first
    (HF_HUB_OFFLINE), so an offline machine gets the answer at once instead of minutes of retries."""
    from ..preflight import go_offline, hub_endpoint, hub_offline, hub_reachable

    unreachable = not hub_offline() and not hub_reachable()
    if unreachable:
        go_offline()
    import datasets

    try:
        dataset = datasets.load_dataset(name, split=split)
    except Exception as exc:  # offline, unknown repo, unknown split, ...
        if unreachable:
            raise SeedError(
                f"cannot load hub dataset {name!r} split {split!r}: the Hugging Face hub ({hub_endpoint()}) cannot "
                "be reached from here and the dataset is not in the local cache. Check your network, or pass a "
                "local .jsonl/.parquet file of oasst1 messages with --from") from None
        raise SeedError(
            f"cannot load hub dataset {name!r} split {split!r}: {exc}. Check the name and split, "
            "your network / HF_HUB_OFFLINE setting, or pass a local .jsonl/.parquet file instead"
        ) from exc
    _check_columns(dataset.column_names, f"hub dataset {name!r} ({split})")
    if columns is not None:
        dataset = dataset.select_columns([c for c in columns if c in dataset.column_names])
    return iter(dataset)

"""Reading the documents of a run: jsonl, parquet, HTML pages, WARC files or a Hugging Face dataset, as a stream.

Each document becomes a row `{"id", "text", "_index", ...passthrough}`. A line that cannot be a
document (broken JSON, not UTF-8, no text field, an id seen before) becomes a row with `_reject` set
instead of stopping the run, so it lands in `rejects.jsonl` with its file and line, and no good row
after it is lost.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

from .config import ConfigError, InputConfig
from .hashset import CompactSet
from .io import DATA_SUFFIXES, INVALID_UTF8, MALFORMED_JSON, NOT_AN_OBJECT, UnreadableFileError, data_files, iter_records
from .web import HTML_SUFFIXES, WARC_SUFFIXES, WEB_REJECTS, html_records, warc_records

# The reasons of the rows rejected as they are read (stage `input`), for docs/rejects.md: each reason
# -> what it means, then "Try: ..." (the reject's `id` is the file and line, its `detail` the exact problem).
INPUT_REJECTS: dict[str, str] = {
    MALFORMED_JSON: "The line is not valid JSON (`detail` has the parser's message; a line cut short by a killed "
                    "writer looks like this). Try: fix or remove the line the reject's `id` names (file:line).",
    INVALID_UTF8: "The line is not UTF-8 (`detail` gives the first bad byte). Try: convert the file to UTF-8, e.g. "
                  "`iconv -f latin1 -t utf-8`.",
    NOT_AN_OBJECT: "The line is JSON but not an object (a list, a string, a number). Try: write one object per line, "
                   "with the text in the `input.text_field` column.",
    "missing_text_field": "The record has no `input.text_field` column (default `text`), or it is null. Try: set "
                          "`input.text_field` to the column that holds the document.",
    "text_not_a_string": "The `input.text_field` column holds something else than a string (`detail` names its type). "
                         "Try: point `input.text_field` at the text column, or fix the records.",
    "duplicate_id": "The record's `input.id_field` value came on an earlier record; the first one is kept. Try: make "
                    "the ids unique, or drop the id column so that ids are made from a hash of each text.",
    **WEB_REJECTS,
}
# The files each input.format reads in a folder (`auto`: all of them, each by its name).
SUFFIXES: dict[str, tuple[str, ...]] = {"jsonl": (".jsonl", ".jsonl.gz", ".json.gz", ".json"), "parquet": (".parquet",),
                                        "html": HTML_SUFFIXES, "warc": WARC_SUFFIXES}
SUFFIXES["auto"] = tuple(dict.fromkeys(DATA_SUFFIXES + HTML_SUFFIXES + WARC_SUFFIXES))


def content_id(text: str) -> str:
    return "doc-" + hashlib.sha1(text.encode("utf-8", "replace")).hexdigest()[:16]


def _format_of(path: Path, given: str) -> str:
    if given != "auto":
        return given
    name = path.name.lower()
    for fmt in ("warc", "html", "parquet"):
        if name.endswith(SUFFIXES[fmt]):
            return fmt
    return "jsonl"


def _files(path: Path, given: str) -> list[tuple[Path, str]]:
    if path.is_file():
        return [(path, _format_of(path, given))]
    found = data_files(path, SUFFIXES[given])
    if not found:
        kinds = "/".join(SUFFIXES[given])
        raise ConfigError(f"input.path {path}: a folder with no {kinds} files" +
                          ("" if given == "auto" else f" (input.format is {given})"))
    return [(f, _format_of(f, given)) for f in found]


def _file_records(path: Path, name: str) -> Iterator[tuple[str, dict | None, str | None]]:
    """(where, record or None, reject reason) per record; `name` is the file as `where` shows it.

    A `.json` file is JSON lines here, as it always was for documents; a bad line is a reason, not an error.
    """
    try:
        for where, rec, problem in iter_records(path, name=name, json_array=False):
            yield where, rec, None if problem is None else str(problem)
    except UnreadableFileError as err:
        raise ConfigError(str(err)) from None


def _hub_records(cfg: InputConfig) -> Iterator[tuple[str, dict | None, str | None]]:
    import datasets

    try:
        ds = datasets.load_dataset(cfg.path, split=cfg.split, streaming=True)
    except Exception as err:
        raise ConfigError(
            f"input.path '{cfg.path}': not a local file or folder, and loading it as a Hugging Face dataset "
            f"failed ({type(err).__name__}: {err}). Check the path, or the dataset name and input.split.") from None
    for n, rec in enumerate(ds, 1):
        yield f"{cfg.path}[{cfg.split}]#{n}", rec, None


def _records(cfg: InputConfig) -> Iterator[tuple[str, dict | None, str | None]]:
    if not cfg.path:
        raise ConfigError("input.path is empty: name a .jsonl or .parquet file, HTML pages or a WARC file, a folder, or a dataset")
    path = Path(cfg.path).expanduser()
    if cfg.format == "hub" or not path.exists():
        if cfg.format != "hub" and (cfg.path.endswith(SUFFIXES["auto"]) or cfg.path.startswith((".", "/", "~"))):
            raise ConfigError(f"input.path {cfg.path}: no such file")
        yield from _hub_records(cfg)
        return
    for f, fmt in _files(path, cfg.format):
        # Relative to the input folder: train/part-0.jsonl and test/part-0.jsonl must not share reject ids.
        name = f.name if f == path else f.relative_to(path).as_posix()
        if fmt in ("html", "warc"):
            read = html_records if fmt == "html" else warc_records
            yield from read(f, name, text_field=cfg.text_field, id_field=cfg.id_field)
        else:
            yield from _file_records(f, name)


def read_documents(cfg: InputConfig) -> Iterator[dict]:
    """Rows in input order, each with a unique `id` and its `_index`; bad lines carry `_reject`."""
    seen = CompactSet()
    index = 0
    for where, rec, problem in _records(cfg):
        if cfg.limit is not None and index >= cfg.limit:
            return
        row: dict = {"_index": index, "_where": where}
        index += 1
        if problem is None:
            text = rec.get(cfg.text_field)
            if text is None:
                problem = f"missing_text_field ('{cfg.text_field}')"
            elif not isinstance(text, str):
                problem = f"text_not_a_string ({type(text).__name__})"
        if problem is not None:
            row.update(id=f"{where}", _reject=problem.split(" ")[0], _detail=problem)
            yield row
            continue
        raw_id = rec.get(cfg.id_field)
        doc_id = str(raw_id) if raw_id not in (None, "") else content_id(text)
        if not seen.add(doc_id):
            row.update(id=f"{doc_id}@{where}", text=text, _reject="duplicate_id", _detail=f"id '{doc_id}' seen before")
            yield row
            continue
        for k, v in rec.items():
            if k not in (cfg.text_field, cfg.id_field, cfg.instruction_field) and not k.startswith("_"):
                row[k] = v
        row.update(id=doc_id, text=text)
        given = rec.get(cfg.instruction_field) if cfg.instruction_field else None
        if isinstance(given, str) and given.strip():
            row["instruction_given"] = given.strip()
        yield row


def run_documents(cfg) -> Iterator[dict]:
    """The documents of a run (`cfg`: a RunConfig): the input, long pages cut into sections when
    `prepare.split` asks for it (backforth/split.py)."""
    from .split import SplitSettings, split_rows

    sp = cfg.prepare.split
    rows = read_documents(cfg.input)
    return split_rows(rows, SplitSettings(sp.min_chars, sp.max_chars)) if sp.enabled else rows

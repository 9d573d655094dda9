"""The one record reader (backforth.io): each format, places, problems that never lose later records."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from backforth.errors import UserError
from backforth.io import (INVALID_UTF8, MALFORMED_JSON, NOT_AN_OBJECT, Problem, UnreadableFileError, data_files,
                          iter_records, parquet_columns, parse_record)

MIXED = [
    b'{"id": 1}',
    b'{"id": 2, "text": "broken',      # 2: malformed JSON
    b'',                               # 3: blank, skipped
    b'{"text": "caf\xe9"}',            # 4: not UTF-8
    b'["a", "list"]',                  # 5: not an object
    b"[" * 100_000 + b"]" * 100_000,   # 6: nested deeper than Python's parser goes
    b'{"id": 7}',
]


def kinds(records) -> list[tuple[str, object]]:
    return [(place, rec if problem is None else problem.kind) for place, rec, problem in records]


def test_jsonl_places_and_problems_keep_the_lines_after_them(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_bytes(b"\n".join(MIXED) + b"\n")
    got = list(iter_records(p, name="m.jsonl"))
    assert kinds(got) == [("m.jsonl:1", {"id": 1}), ("m.jsonl:2", MALFORMED_JSON), ("m.jsonl:4", INVALID_UTF8),
                          ("m.jsonl:5", NOT_AN_OBJECT), ("m.jsonl:6", MALFORMED_JSON), ("m.jsonl:7", {"id": 7})]
    problems = [problem for _, _, problem in got if problem is not None]
    assert problems[0].detail and isinstance(problems[0].column, int)  # the JSON error, and where on the line
    assert problems[1] == Problem(INVALID_UTF8, "byte 13")
    assert problems[2].detail == "list" and str(problems[2]) == "not_an_object"
    assert str(problems[3]) == "malformed_json (too deeply nested)" and problems[3].column is None
    assert str(problems[1]) == "invalid_utf8 (byte 13)"
    # the place names the file as given when no name is passed
    assert next(iter_records(p))[0] == f"{p}:1"


def test_jsonl_gz(tmp_path):
    p = tmp_path / "d.jsonl.gz"
    with gzip.open(p, "wb") as fh:
        fh.write(b'{"a": 1}\n\n{"a": oops}\n{"a": 3}\n')
    assert kinds(iter_records(p, name="d.jsonl.gz")) == [("d.jsonl.gz:1", {"a": 1}), ("d.jsonl.gz:3", MALFORMED_JSON),
                                                         ("d.jsonl.gz:4", {"a": 3})]
    bad = tmp_path / "bad.jsonl.gz"
    bad.write_bytes(b"not gzip at all\n")
    with pytest.raises(UnreadableFileError, match=r"bad\.jsonl\.gz: cannot read"):
        list(iter_records(bad))
    truncated = tmp_path / "cut.jsonl.gz"
    truncated.write_bytes(gzip.compress(b'{"a": 1}\n' * 1000)[:-20])
    with pytest.raises(UnreadableFileError, match="cannot read"):
        list(iter_records(truncated))


def test_json_array(tmp_path):
    p = tmp_path / "a.json"
    p.write_text(json.dumps([{"instruction": "x"}, "a string", {"instruction": "y"}]))
    assert kinds(iter_records(p, name="a.json")) == [("a.json[0]", {"instruction": "x"}), ("a.json[1]", NOT_AN_OBJECT),
                                                     ("a.json[2]", {"instruction": "y"})]
    p.write_text(json.dumps({"instruction": "x"}))
    with pytest.raises(UnreadableFileError, match="must hold a list of objects"):
        list(iter_records(p))
    p.write_text("[{broken")
    with pytest.raises(UnreadableFileError, match=r"a\.json: not a valid JSON file"):
        list(iter_records(p))
    # the same name read as JSON lines, as the corpus reads its documents
    p.write_text('{"id": 1}\n{"id": 2}\n')
    assert kinds(iter_records(p, name="a.json", json_array=False)) == [("a.json:1", {"id": 1}), ("a.json:2", {"id": 2})]


def test_parquet_rows_columns_and_a_bad_file(tmp_path):
    p = tmp_path / "d.parquet"
    pq.write_table(pa.table({"id": [1, 2, 3], "text": ["a", "b", "c"], "big": ["x", "y", "z"]}), p, row_group_size=2)
    assert kinds(iter_records(p, name="d.parquet")) == [
        ("d.parquet:row1", {"id": 1, "text": "a", "big": "x"}), ("d.parquet:row2", {"id": 2, "text": "b", "big": "y"}),
        ("d.parquet:row3", {"id": 3, "text": "c", "big": "z"})]
    assert [rec for _, rec, _ in iter_records(p, columns=["text", "absent"])] == [{"text": "a"}, {"text": "b"}, {"text": "c"}]
    assert parquet_columns(p) == ["id", "text", "big"]
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet")
    with pytest.raises(UnreadableFileError, match=r"bad\.parquet: not a readable parquet file"):
        list(iter_records(bad))
    with pytest.raises(UnreadableFileError, match="not a readable parquet file"):
        parquet_columns(bad)
    assert issubclass(UnreadableFileError, UserError)


def test_streamed_line_by_line(tmp_path):
    p = tmp_path / "s.jsonl"
    p.write_text('{"n": 1}\n{"n": 2}\n')
    it = iter_records(p)
    assert next(it)[1] == {"n": 1}
    with open(p, "a") as fh:
        fh.write('{"n": 3}\n')
    assert [rec["n"] for _, rec, _ in it] == [2, 3]


def test_partial_last_line_is_dropped_on_request(tmp_path):
    p = tmp_path / "run.jsonl"
    p.write_text('{"n": 1}\n{"n": 2}\n{"n": 3, "half wri')
    assert [place for place, _, _ in iter_records(p, name="run.jsonl", drop_partial_last_line=True)] == [
        "run.jsonl:1", "run.jsonl:2"]
    assert kinds(iter_records(p, name="run.jsonl"))[-1] == ("run.jsonl:3", MALFORMED_JSON)


def test_missing_file_is_unreadable(tmp_path):
    with pytest.raises(UnreadableFileError, match=r"nope\.jsonl: cannot read"):
        list(iter_records(tmp_path / "nope.jsonl"))


def test_parse_record():
    assert parse_record(b'{"a": 1}') == ({"a": 1}, None)
    assert parse_record('"text"') == (None, Problem(NOT_AN_OBJECT, "str"))
    assert parse_record(b"\xff{}")[1].kind == INVALID_UTF8


def test_data_files(tmp_path: Path):
    (tmp_path / "sub").mkdir()
    for name in ("b.jsonl", "a.parquet", "sub/c.jsonl.gz", "sub/d.json", "notes.txt", "e.gz"):
        (tmp_path / name).write_text("")
    assert [p.relative_to(tmp_path).as_posix() for p in data_files(tmp_path)] == [
        "a.parquet", "b.jsonl", "sub/c.jsonl.gz", "sub/d.json"]
    assert [p.name for p in data_files(tmp_path, (".jsonl",))] == ["b.jsonl"]
    assert data_files(tmp_path / "sub", (".csv",)) == []

"""Reading documents: every line becomes a row (or a reject with its file and line), in order, streamed."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from backforth.config import ConfigError, InputConfig
from backforth.corpus import content_id, read_documents


def read(path, **kw) -> list[dict]:
    return list(read_documents(InputConfig(path=str(path), **kw)))


def jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_good_rows_keep_their_metadata(tmp_path):
    p = jsonl(tmp_path / "docs.jsonl", [{"id": "a", "text": "alpha", "url": "https://a", "source": "web", "meta": {"k": 1}, "_secret": 1},
                                        {"id": 7, "text": "beta"}])
    rows = read(p)
    assert rows == [
        {"_index": 0, "_where": "docs.jsonl:1", "id": "a", "text": "alpha", "url": "https://a", "source": "web", "meta": {"k": 1}},
        {"_index": 1, "_where": "docs.jsonl:2", "id": "7", "text": "beta"},
    ]


def test_bad_lines_become_rejects_and_good_lines_after_them_survive(tmp_path):
    p = tmp_path / "mixed.jsonl"
    lines = [
        b'{"id": "a", "text": "first"}',
        b'{"id": "b", "text": "broken',                 # 2: malformed JSON
        b'{"id": "c", "text": "caf\xe9 latin-1"}',       # 3: invalid UTF-8
        b'["a", "list"]',                                # 4: not an object
        b'{"id": "d", "body": "no text field"}',         # 5
        b'{"id": "e", "text": 42}',                      # 6: text not a string
        b'{"id": "f", "text": null}',                    # 7: null text
        b'{"id": "a", "text": "same id again"}',         # 8: duplicate id
        b'',                                             # 9: blank
        b'   \t',                                        # 10: blank
        b'{"id": "g", "text": "last"}',                  # 11
    ]
    p.write_bytes(b"\n".join(lines) + b"\n")
    rows = read(p)
    assert [r["_index"] for r in rows] == list(range(9))  # blank lines are not documents
    got = [(r["id"], r.get("_reject")) for r in rows]
    assert got == [
        ("a", None),
        ("mixed.jsonl:2", "malformed_json"),
        ("mixed.jsonl:3", "invalid_utf8"),
        ("mixed.jsonl:4", "not_an_object"),
        ("mixed.jsonl:5", "missing_text_field"),
        ("mixed.jsonl:6", "text_not_a_string"),
        ("mixed.jsonl:7", "missing_text_field"),
        ("a@mixed.jsonl:8", "duplicate_id"),
        ("g", None),
    ]
    by_id = {r["id"]: r for r in rows}
    assert "byte 24" in by_id["mixed.jsonl:3"]["_detail"]
    assert "'text'" in by_id["mixed.jsonl:5"]["_detail"] and "int" in by_id["mixed.jsonl:6"]["_detail"]
    assert by_id["a@mixed.jsonl:8"]["text"] == "same id again" and "seen before" in by_id["a@mixed.jsonl:8"]["_detail"]
    assert by_id["g"]["_where"] == "mixed.jsonl:11"
    assert len({r["id"] for r in rows}) == len(rows)


def test_ids_from_content_are_stable(tmp_path):
    p = jsonl(tmp_path / "noid.jsonl", [{"text": "some text"}, {"id": "", "text": "other text"}, {"id": None, "text": "third"}])
    first, second = read(p), read(p)
    assert [r["id"] for r in first] == [r["id"] for r in second]
    assert [r["id"] for r in first] == [content_id("some text"), content_id("other text"), content_id("third")]
    assert content_id("some text").startswith("doc-") and content_id("some text") != content_id("some text ")
    # the same text twice without ids is one document and a duplicate id
    p2 = jsonl(tmp_path / "twice.jsonl", [{"text": "x y"}, {"text": "x y"}])
    assert [r.get("_reject") for r in read(p2)] == [None, "duplicate_id"]


def test_limit_counts_every_line_that_is_a_row(tmp_path):
    p = jsonl(tmp_path / "d.jsonl", [{"id": str(i), "text": f"t{i}"} for i in range(10)])
    assert [r["id"] for r in read(p, limit=3)] == ["0", "1", "2"]
    assert len(read(p, limit=100)) == 10


def test_jsonl_gz_and_json(tmp_path):
    p = tmp_path / "d.jsonl.gz"
    with gzip.open(p, "wt", encoding="utf-8") as fh:
        fh.write('{"id": "z1", "text": "zipped"}\n\n{"id": "z2", "text": "zipped two"}\n')
    assert [(r["id"], r["text"], r["_where"]) for r in read(p)] == [("z1", "zipped", "d.jsonl.gz:1"), ("z2", "zipped two", "d.jsonl.gz:3")]
    q = jsonl(tmp_path / "d.json", [{"id": "j", "text": "json lines"}])
    assert read(q)[0]["id"] == "j"


def test_parquet(tmp_path):
    table = pa.table({"doc_id": ["p1", "p2", None], "body": ["one", "two", "three"], "lang": ["en", "fr", "de"]})
    p = tmp_path / "d.parquet"
    pq.write_table(table, p, row_group_size=2)
    rows = read(p, text_field="body", id_field="doc_id")
    assert [(r["id"], r["text"], r["lang"], r["_where"]) for r in rows] == [
        ("p1", "one", "en", "d.parquet:row1"), ("p2", "two", "fr", "d.parquet:row2"),
        (content_id("three"), "three", "de", "d.parquet:row3")]
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(ConfigError, match=r"bad\.parquet: not a readable parquet file"):
        read(bad)


def test_a_folder_is_read_in_name_order(tmp_path):
    folder = tmp_path / "corpus"
    (folder / "sub").mkdir(parents=True)
    jsonl(folder / "b.jsonl", [{"id": "b1", "text": "b"}])
    jsonl(folder / "a.jsonl", [{"id": "a1", "text": "a"}, {"id": "a2", "text": "a2"}])
    pq.write_table(pa.table({"id": ["c1"], "text": ["c"]}), folder / "sub" / "c.parquet")
    (folder / "notes.txt").write_text("ignored")
    rows = read(folder)
    assert [r["id"] for r in rows] == ["a1", "a2", "b1", "c1"]
    assert [r["_index"] for r in rows] == [0, 1, 2, 3]
    assert rows[3]["_where"] == "sub/c.parquet:row1"
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.md").write_text("no documents")
    with pytest.raises(ConfigError, match="a folder with no .jsonl"):
        read(tmp_path / "empty")


def test_same_file_names_in_subfolders_give_distinct_reject_ids(tmp_path):
    folder = tmp_path / "corpus"
    for split in ("train", "test"):
        (folder / split).mkdir(parents=True)
        (folder / split / "part-0.jsonl").write_text('{"id": "' + split + '", "text": "t"}\n{broken\n')
    rows = read(folder)
    assert len(rows) == 4 and len({r["id"] for r in rows}) == 4
    assert [r.get("_reject") for r in rows] == [None, "malformed_json", None, "malformed_json"]
    assert rows[1]["id"] == "test/part-0.jsonl:2" and rows[3]["id"] == "train/part-0.jsonl:2"


def test_text_and_id_fields(tmp_path):
    p = jsonl(tmp_path / "d.jsonl", [{"uid": "u1", "content": "hello", "id": "ignored", "text": "also kept"}])
    [row] = read(p, text_field="content", id_field="uid")
    assert row["id"] == "u1" and row["text"] == "hello"
    assert "content" not in row and "uid" not in row
    [row] = read(p, text_field="missing")
    assert row["_reject"] == "missing_text_field" and "'missing'" in row["_detail"]


@pytest.mark.parametrize("name", ["nope.jsonl", "nope.parquet", "nope.jsonl.gz", "./nope"])
def test_nonexistent_local_path_is_a_config_error(tmp_path, name, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        read(name)
    assert name in str(info.value) and "no such file" in str(info.value)


def test_empty_path():
    with pytest.raises(ConfigError, match="input.path is empty"):
        read("")


def test_hub_dataset_is_streamed(monkeypatch):
    import datasets

    calls = []

    def fake_load(path, split=None, streaming=False, **kw):
        calls.append({"path": path, "split": split, "streaming": streaming, **kw})
        ds = datasets.Dataset.from_list([{"id": "h1", "text": "from the hub"}, {"id": "h2", "text": "second"}])
        return ds.to_iterable_dataset()

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    rows = read("someone/web-docs", split="validation")
    assert calls == [{"path": "someone/web-docs", "split": "validation", "streaming": True}]
    assert [(r["id"], r["text"], r["_where"]) for r in rows] == [
        ("h1", "from the hub", "someone/web-docs[validation]#1"), ("h2", "second", "someone/web-docs[validation]#2")]


def test_hub_failure_is_a_config_error(monkeypatch):
    import datasets

    def boom(*a, **kw):
        raise FileNotFoundError("Dataset 'someone/missing' doesn't exist on the Hub")

    monkeypatch.setattr(datasets, "load_dataset", boom)
    with pytest.raises(ConfigError) as info:
        read("someone/missing")
    msg = str(info.value)
    assert "someone/missing" in msg and "FileNotFoundError" in msg and "input.split" in msg


def test_rows_are_streamed_not_read_all_at_once(tmp_path):
    p = jsonl(tmp_path / "d.jsonl", [{"id": str(i), "text": "t"} for i in range(3)])
    it = read_documents(InputConfig(path=str(p)))
    assert next(it)["id"] == "0"
    with open(p, "a") as fh:  # a generator: lines are read as they are asked for
        fh.write('{"id": "late", "text": "t"}\n')
    assert [r["id"] for r in it] == ["1", "2", "late"]


def test_a_dolma_folder_of_json_gz_lines_is_read(tmp_path):
    """Dolma ships its documents as gzipped JSON lines named .json.gz (id, text, source, ...)."""
    folder = tmp_path / "dolma" / "v1_6-sample"
    folder.mkdir(parents=True)
    for part, ids in (("part-0001.json.gz", ["d1", "d2"]), ("part-0000.json.gz", ["d0"])):
        with gzip.open(folder / part, "wt", encoding="utf-8") as f:
            for i in ids:
                f.write(json.dumps({"id": i, "text": f"text of {i}", "source": "common-crawl"}) + "\n")
    rows = read(tmp_path / "dolma")
    assert [r["id"] for r in rows] == ["d0", "d1", "d2"]
    assert rows[1]["_where"].endswith("part-0001.json.gz:1")

"""The one store layout: parquet shards of the columns a stage added, joined back by input order."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from backforth.pipeline.store import RunStore, StageStore, loads


def row(i: int, status: str = "done", **extra) -> dict:
    return {"id": f"r{i:03d}", "_index": i, "_status": status, **extra}


def test_rows_come_in_input_order_across_interleaved_shards(tmp_path):
    store = StageStore(tmp_path / "stages" / "curate")
    # batches finished out of order, as a pool of actors writes them; one shard spans the others
    for batch in ([row(5), row(9)], [row(0), row(1, "rejected", stage="curate", reason="low_score")],
                  [row(8), row(2), row(3)], [row(4), row(7), row(6)]):
        store.write(batch, counters={"score:5": len(batch)}, seconds=0.5)
    assert [r["_index"] for r in store.rows()] == list(range(10))
    assert [r["id"] for r in store.rows("rejected")] == ["r001"]
    assert [r["id"] for r in store.rows("done")] == [f"r{i:03d}" for i in range(10) if i != 1]
    assert sorted(store.ids()) == [f"r{i:03d}" for i in range(10)]
    counters, seconds, n = store.totals()
    assert counters["score:5"] == 10 and seconds == 2.0 and n == 10
    assert next(r for r in store.rows() if r["id"] == "r001")["reason"] == "low_score"


def test_shards_are_atomic_and_a_rewritten_batch_replaces_itself(tmp_path):
    store = StageStore(tmp_path / "rewrite")
    rows = [row(2, text="b", n=[1, 2]), row(1, text="a")]
    first = store.write(rows)
    assert store.write([dict(r, text="again") for r in rows]) == first  # a retried task
    assert len(store.shards()) == 1 and not list(store.path.glob(".tmp-*"))
    table = pq.read_table(first)
    assert table.column_names == ["id", "_index", "_status", "stage", "reason", "cols"]
    assert table.column("_index").to_pylist() == [1, 2]  # sorted within the shard
    assert [loads(c)["text"] for c in table.column("cols").to_pylist()] == ["again", "again"]
    assert store.write([]) is None


def test_repair_removes_half_written_shards(tmp_path):
    store = StageStore(tmp_path / "distill")
    store.write([row(0)])
    (store.path / ".tmp-part-000000000000-77.parquet").write_bytes(b"PAR1 half a file")
    assert [r["id"] for r in store.rows()] == ["r000"]  # never read
    store.repair()
    assert [p.name for p in store.path.iterdir() if p.name.startswith(".tmp")] == []
    store.remove()
    assert not store.exists() and list(store.rows()) == []


def test_text_is_stored_once_and_joined_back(tmp_path):
    run = RunStore(tmp_path)
    docs = [row(i, text=f"document {i} " * 50, url=f"u{i}") for i in range(4)]
    run.stage("prepare").write(docs)
    # backtranslate received the prepared rows and added an instruction; row 2 it rejected
    out, bases = [], []
    for d in docs:
        base = {k: v for k, v in d.items() if k != "_status"}
        r = dict(base, instruction=f"q{d['_index']}", _status="done" if d["_index"] != 2 else "rejected")
        if d["_index"] == 2:
            r.update(stage="backtranslate", reason="empty_instruction")
        out.append(r)
        bases.append(base)
    shard = run.stage("backtranslate").write(out, bases)
    stored = [loads(c) for c in pq.read_table(shard).column("cols").to_pylist()]
    assert stored == [{"instruction": f"q{i}"} for i in range(4)]  # only what the stage added
    joined = list(run.joined(["prepare", "backtranslate"], status="done"))
    assert [r["id"] for r in joined] == ["r000", "r001", "r003"]
    assert joined[1]["text"] == docs[1]["text"] and joined[1]["instruction"] == "q1" and joined[1]["url"] == "u1"
    rejected = list(run.joined(["prepare", "backtranslate"], status="rejected"))
    assert rejected[0]["reason"] == "empty_instruction" and rejected[0]["text"] == docs[2]["text"]
    # the same rows by index, as a Ray actor reads its batch
    assert run.joined_at(["prepare", "backtranslate"], [3, 0]) == [joined[0], joined[2]]


@pytest.mark.parametrize("later", ["score", "text"])
def test_a_later_stage_updates_a_column(tmp_path, later):
    run = RunStore(tmp_path)
    run.stage("a").write([row(0, text="raw", score=1)])
    run.stage("b").write([row(0, **{later: 5})], [{"id": "r000", "_index": 0, "text": "raw", "score": 1}])
    assert next(run.joined(["a", "b"]))[later] == 5

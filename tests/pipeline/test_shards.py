"""The parquet shard store of `executor: ray` (no Ray needed): atomic shards, input order, repair."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from backforth.pipeline.export import _in_input_order
from backforth.pipeline.shards import ShardStore, layout_conflict, open_stage, stages_on_disk, write_shard
from backforth.pipeline.store import StageFile


def row(i: int, status: str = "done", **extra) -> dict:
    return {"id": f"r{i:03d}", "_index": i, "_status": status, **extra}


def test_rows_come_in_input_order_across_interleaved_shards(tmp_path):
    store = ShardStore(tmp_path / "stages" / "curate")
    # batches finished out of order, as a pool of actors writes them; one shard spans the others
    for batch in ([row(5), row(9)], [row(0), row(1, "rejected", reason="low_score")], [row(8), row(2), row(3)],
                  [row(4), row(7), row(6)]):
        store.append(batch, seconds=0.5)
    assert [r["_index"] for r in store.rows()] == list(range(10))
    assert [r["id"] for r in store.rows("rejected")] == ["r001"]
    assert [r["id"] for r in _in_input_order(store, "done")] == [f"r{i:03d}" for i in range(10) if i != 1]
    assert sorted(store.ids()) == [f"r{i:03d}" for i in range(10)] and store.done_ids() == set(store.ids())
    assert store.seconds() == 2.0
    # heterogeneous rows survive as they were
    assert next(r for r in store.rows() if r["id"] == "r001")["reason"] == "low_score"


def test_shards_are_atomic_and_a_rewritten_batch_replaces_itself(tmp_path):
    folder = tmp_path / "rewrite"
    rows = [row(2, text="b", n=[1, 2]), row(1, text="a")]
    first = write_shard(folder, rows)
    assert write_shard(folder, [dict(r, text="again") for r in rows]) == first  # a retried task
    assert len(list(folder.glob("part-*.parquet"))) == 1 and not list(folder.glob(".tmp-*"))
    table = pq.read_table(first)
    assert table.column_names == ["id", "_status", "_index", "row"]
    assert table.column("_index").to_pylist() == [1, 2]  # sorted within the shard
    assert [json.loads(p)["text"] for p in table.column("row").to_pylist()] == ["again", "again"]
    assert write_shard(folder, []) is None


def test_repair_removes_half_written_shards(tmp_path):
    store = ShardStore(tmp_path / "distill")
    store.append([row(0)])
    (store.path / ".tmp-0123-77.parquet").write_bytes(b"PAR1 half a file")
    assert [r["id"] for r in store.rows()] == ["r000"]  # never read
    store.repair()
    assert [p.name for p in store.path.iterdir() if p.name.startswith(".tmp")] == []
    store.remove()
    assert not store.exists() and list(store.rows()) == []


def test_open_stage_finds_either_layout(tmp_path):
    out = tmp_path
    StageFile(out / "stages" / "prepare.jsonl").append([row(0)], seconds=0.1)
    ShardStore(out / "stages" / "backtranslate").append([row(0)], seconds=0.1)
    assert isinstance(open_stage(out, "prepare"), StageFile)
    assert isinstance(open_stage(out, "backtranslate"), ShardStore)
    assert isinstance(open_stage(out, "curate"), StageFile)  # not run yet: the executor decides
    assert isinstance(open_stage(out, "curate", "ray"), ShardStore)
    assert stages_on_disk(out) == {"prepare", "backtranslate"}


def test_a_run_dir_of_one_layout_is_refused_by_the_other_executor(tmp_path: Path):
    assert layout_conflict(tmp_path, "ray") is None
    StageFile(tmp_path / "stages" / "prepare.jsonl").append([row(0)])
    assert "runner.executor=local" in layout_conflict(tmp_path, "ray")
    assert layout_conflict(tmp_path, "local") is None
    other = tmp_path / "other"
    ShardStore(other / "stages" / "prepare").append([row(0)])
    assert "runner.executor=ray" in layout_conflict(other, "local")
    assert layout_conflict(other, "ray") is None

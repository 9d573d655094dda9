"""A worker node lost mid-stage on a real multi-node Ray cluster: the run finishes, every row done once.

Ray's own test cluster (`ray.cluster_utils.Cluster`): a head node with no CPUs for work and two
one-CPU worker nodes, each its own raylet (its own processes) on this machine. The backward model's
pool has two one-CPU actors, so each worker node holds one. The embedded SmolLM2 backtranslates the
first demo documents one row a batch; once a few shards are written, the second worker node is
removed without a graceful shutdown (its raylet and actor are killed, as when a machine goes away).
The run goes on with the surviving actor, through backtranslation and scoring, and exports.

The run goes through `backforth.workflows.run`, so the driver holds the run dir's lock the whole
time while the actors write their shards there: a worker that took the lock would be refused.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import ray
from ray_engines import NodeLoggedFactory

from run_files import read_sft
from backforth.cli import DATA_DIR
from backforth.config import load_config
from backforth.pipeline.store import StageStore
from backforth.workflows import run

pytestmark = pytest.mark.slow  # a real model on a three-raylet cluster: about two minutes on 2 cores

TESTS = Path(__file__).resolve().parent.parent
WORKER_PATH = [str(TESTS / "executors"), str(TESTS / "pipeline"), str(TESTS)]
SMOL = "embedded:smollm2-135m"
N_DOCS = 16
LOSE_AFTER = 4  # backtranslated rows (shards) before the node goes


@pytest.fixture
def cluster():
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(WORKER_PATH + ([saved] if saved else []))
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    try:
        workers = [c.add_node(num_cpus=1) for _ in range(2)]
        ray.init(address=c.address, logging_level="WARNING")
        yield c, workers
    finally:
        ray.shutdown()
        c.shutdown()
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved


def test_a_worker_node_lost_mid_stage(cluster, tmp_path):
    c, workers = cluster
    out, log = tmp_path / "run", tmp_path / "requests.log"
    cfg = load_config(DATA_DIR / "demo.yaml", [
        "variant=filter", "distill.enabled=false", "curate.threshold=1", "backtranslate.max_tokens=24",
        "page_kind.enabled=false",  # every page to backtranslation: the 135M would read most as other kinds
        "runner.progress=false", "runner.executor=ray", f"models.backward.model={SMOL}", f"models.scorer.model={SMOL}",
        *(f"runner.ray.{role}.{k}={v}" for role in ("backward", "scorer")
          for k, v in (("concurrency", 2), ("num_cpus", 1), ("batch_size", 1)))])
    cfg.input.path = str(DATA_DIR / "demo_corpus.jsonl")
    cfg.input.limit = N_DOCS
    shards = out / "stages" / "backtranslate"
    events: dict[str, float] = {}
    t0 = time.time()

    def lose_a_node() -> None:
        while len(list(shards.glob("part-*.parquet"))) < LOSE_AFTER:
            if "done" in events:
                return
            time.sleep(0.2)
        events["lock_pid"] = json.loads((out / "run.lock").read_text())["pid"]
        events["lost"] = time.time() - t0
        events["shards_at_loss"] = len(list(shards.glob("part-*.parquet")))
        c.remove_node(workers[1], allow_graceful=False)
        while any(n["NodeID"] == workers[1].node_id and n["Alive"] for n in ray.nodes()):
            time.sleep(0.5)
        events["marked_dead"] = time.time() - t0

    watcher = threading.Thread(target=lose_a_node, daemon=True)
    watcher.start()
    try:
        stats = run(cfg, out, engine_factory=NodeLoggedFactory(log))
    finally:
        events["done"] = time.time() - t0
        watcher.join(timeout=5)
    assert "lost" in events, "the node was not removed mid-stage"
    assert events["lock_pid"] == os.getpid()  # the driver held the run dir while the actors wrote their shards

    ids = [f"doc-{i:03d}" for i in range(1, N_DOCS + 1)]
    rejects = [json.loads(line) for line in open(out / "rejects.jsonl")]
    assert sorted(r["id"] for r in read_sft(out) + rejects) == ids  # every document ends once
    assert stats["funnel"]["documents_in"] == N_DOCS
    written = Counter(i for i, *_ in StageStore(shards).keys())
    assert len(written) == stats["stages"]["backtranslate"]["in"] and set(written.values()) == {1}  # each row once
    scored = Counter(i for i, *_ in StageStore(out / "stages" / "curate").keys())
    assert set(scored.values()) == {1} and len(scored) == stats["stages"]["curate"]["in"]
    lines = [line.split("\t") for line in log.read_text().splitlines()]  # event, stage, row, node, time
    lost = workers[1].node_id
    bt = [(e, k, n, float(t) - t0) for e, s_, k, n, t in lines if s_ == "backtranslate"]
    asked = Counter(k for e, k, _n, _t in bt if e == "asked")
    answered = Counter(k for e, k, _n, _t in bt if e == "answered")
    assert set(answered) == set(written)
    # Every row answered once, except a row the lost node answered but did not live to write: its
    # answer died with the node, so a surviving node answered it once more (seen in 1 of 2 runs).
    answered_lost = {k for e, k, n, _t in bt if e == "answered" and n == lost}
    answered_alive = Counter(k for e, k, n, _t in bt if e == "answered" and n != lost)
    assert all(n == 1 or (n == 2 and k in answered_lost and answered_alive[k] == 1) for k, n in answered.items())
    cut_off = sorted(k for e, k, n, _t in bt if e == "asked" and n == lost and not any(
        e2 == "answered" and k2 == k and n2 == lost for e2, k2, n2, _t2 in bt))
    assert all(asked[k] == 2 for k in cut_off)  # what the lost node was computing was asked again, once
    redo = [t for e, k, n, t in bt if e == "asked" and k in cut_off and n != lost]
    before = [t for e, _k, _n, t in bt if e == "answered" and t < events["lost"]]
    after = [t for e, _k, _n, t in bt if e == "answered" and t > events["lost"]]
    print(f"\nworker node {lost[:8]} removed (not gracefully) at {events['lost']:.1f} s, after {events['shards_at_loss']} "
          f"of {len(written)} rows were backtranslated; Ray marked it dead at {events.get('marked_dead', float('nan')):.1f} s; "
          f"run finished at {events['done']:.1f} s")
    print(f"  backtranslate: first answer at {before[0]:.1f} s; {len(before)} rows answered before the loss, "
          f"{len(after)} after, the last at {after[-1]:.1f} s")
    print(f"  rows cut off on the lost node and asked again on the other: {cut_off}, again at "
          f"{', '.join(f'{t:.1f} s' for t in redo)}")
    print(f"  answers per node: {dict(Counter(n[:8] for e, _s, _k, n, _t in lines if e == 'answered'))}")
    print(f"  stage seconds: " + ", ".join(f"{k} {v['seconds']:.1f}" for k, v in stats['stages'].items()))
    assert not (out / "run.lock").exists()

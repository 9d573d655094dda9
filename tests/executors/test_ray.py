"""`runner.executor: ray` on a real local Ray instance (2 CPUs): the same outputs as the local runner,
resume per shard and row, crashed shard writes, and the embedded model on an actor pool.

The fake-engine runs use the runner tests' corpus and responder (tests/pipeline/test_runner.py), with
every hygiene stage on, so that the driver's order-dependent stages (exact and near dedup: first
seen wins, in input order) read Ray's shards back in input order. Engines log each request to a file
(tests/executors/ray_engines.py) because every actor has its own engine.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import ray
from ray_engines import RecordingFactory, requests_logged
from test_runner import HYGIENE_STAGES, fake, outputs, write_docs
from test_user_stage import Headline
from test_user_stage import responder as headline_responder

from run_files import read_distilled, read_sft
from backforth.analysis.analyze import analyze, stage_order, stage_rows
from backforth.analysis.report import examples
from backforth.cli import DATA_DIR
from backforth.config import ConfigError, build_config, load_config
from backforth.engines.base import EngineUnavailable
from backforth.errors import UserError
from backforth.pipeline.method import executor_for, run_method
from backforth.pipeline.store import StageStore

TESTS = Path(__file__).resolve().parent.parent
WORKER_PATH = [str(TESTS / "executors"), str(TESTS / "pipeline"), str(TESTS)]  # as conftest.py puts on sys.path
MODEL_STAGES = ["page_kind", "backtranslate", "curate", "rewrite", "rewrite_redraw", "distill"]  # d08 is drawn twice
ROLES = ["backward", "scorer", "rewriter", "distiller"]


@pytest.fixture(scope="module")
def ray_local():
    """One local Ray instance for the module; its workers (started by it, with its environment) import
    the test helpers through PYTHONPATH."""
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(WORKER_PATH + ([saved] if saved else []))
    try:
        ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH")
        else:
            os.environ["PYTHONPATH"] = saved
    yield
    ray.shutdown()


def config(docs: Path, executor: str = "ray", **runner):
    pools = {role: {"concurrency": 2, "num_cpus": 1, "batch_size": 2} for role in ROLES}
    return build_config({"input": {"path": str(docs)}, "runner": {
        "progress": False, "chunk_size": 3, "executor": executor, "light_chunk_size": 4, "ray": pools, **runner}})


def run_ray(cfg, out: Path, factory: RecordingFactory, **kw):
    return run_method(cfg, out, engine_factory=factory, **kw)


def shard_ids(out: Path, stage: str) -> set[str]:
    return set(StageStore(out / "stages" / stage).ids())


@pytest.fixture(scope="module")
def reference(ray_local, tmp_path_factory):
    """The same corpus through the local runner and through Ray (2 actors per role, 2 rows a batch)."""
    base = tmp_path_factory.mktemp("ray")
    docs = write_docs(base / "docs.jsonl")
    local_stats = run_method(config(docs, "local"), base / "local", engine_factory=lambda m: fake())
    log = base / "ray_requests.log"
    ray_stats = run_ray(config(docs), base / "ray", RecordingFactory(log))
    return {"base": base, "docs": docs, "local": base / "local", "ray": base / "ray", "log": log,
            "local_stats": local_stats, "ray_stats": ray_stats, "outputs": outputs(base / "local")}


def test_ray_run_equals_the_local_run(reference):
    ray_out = reference["ray"]
    assert outputs(ray_out) == reference["outputs"]  # sft.jsonl and rejects.jsonl byte for byte, the parquet rows
    assert (ray_out / "sft.parquet").is_file()
    local_stats, ray_stats = reference["local_stats"], reference["ray_stats"]
    assert ray_stats["funnel"] == local_stats["funnel"] and ray_stats["outputs"] == local_stats["outputs"]
    for name, st in local_stats["stages"].items():
        assert ray_stats["stages"][name]["rejected_by_reason"] == st["rejected_by_reason"], name
    assert all(ray_stats["stages"][name]["seconds"] > 0 for name in MODEL_STAGES)  # the driver's wall time
    assert ray_stats["funnel"]["exported"] > 0  # rows reached every model stage
    # every model request was made once, by the actor pools
    asked = requests_logged(reference["log"])
    assert asked and max(asked.values()) == 1
    assert {s for s, _ in asked} == set(MODEL_STAGES)
    # the layout: the local run's, shards with the plain columns and the added ones as JSON
    assert not list((ray_out / "stages").glob("*.jsonl"))
    for stage in MODEL_STAGES:
        shards = list((ray_out / "stages" / stage).glob("part-*.parquet"))
        assert shards and pq.read_schema(shards[0]).names == ["id", "_index", "_status", "stage", "reason", "cols"]
        assert all(pq.read_metadata(p).num_rows <= 2 for p in shards)  # one shard per batch


def test_analysis_reads_ray_runs_like_local_ones(reference):
    ray_out, local_out = reference["ray"], reference["local"]
    assert stage_order(ray_out, reference["ray_stats"]) == stage_order(local_out, reference["local_stats"])
    for stage in stage_order(local_out):
        assert stage_rows(ray_out, stage) == stage_rows(local_out, stage), stage
    assert examples(ray_out, stage_order(ray_out)) == examples(local_out, stage_order(local_out))


def test_a_finished_ray_run_rerun_requests_nothing(reference, tmp_path):
    log = tmp_path / "again.log"
    out = tmp_path / "run"
    shutil.copytree(reference["ray"], out)
    run_ray(config(reference["docs"]), out, RecordingFactory(log))
    assert not log.exists() and outputs(out) == reference["outputs"]


def test_resume_after_the_server_went_away(reference, tmp_path):
    """A run stops in backtranslate when the server goes away; the next (`--until backtranslate`, to
    keep the test short) sends only the unfinished rows, and the stage's rows are the local run's."""
    out, first, second = tmp_path / "run", tmp_path / "first.log", tmp_path / "second.log"
    cfg = config(reference["docs"])
    with pytest.raises(EngineUnavailable, match="stage backtranslate"):
        run_ray(cfg, out, RecordingFactory(first, fail_after=2, fail_stage="backtranslate"))
    before = shard_ids(out, "backtranslate")
    assert before and not (out / "stages" / "dedup_instructions").exists() and not (out / "sft.jsonl").exists()

    assert run_ray(cfg, out, RecordingFactory(second), until="backtranslate") is None
    again = requests_logged(second)
    assert again and {s for s, _ in again} == {"backtranslate"} and max(again.values()) == 1
    assert not [k for _, k in again if k in before], "a finished row was requested again"
    assert stage_rows(out, "backtranslate") == stage_rows(reference["local"], "backtranslate")
    ids = [i for p in (out / "stages" / "backtranslate").glob("part-*.parquet")
           for i in pq.read_table(p, columns=["id"]).column("id").to_pylist()]
    assert len(ids) == len(set(ids))  # every row once


def test_a_crashed_shard_write_is_cleaned_and_redone(reference, tmp_path):
    out, log = tmp_path / "run", tmp_path / "redo.log"
    shutil.copytree(reference["ray"], out)
    rewrite = out / "stages" / "rewrite"
    lost = max(rewrite.glob("part-*.parquet"), key=lambda p: pq.read_metadata(p).num_rows)
    lost_ids = set(pq.read_table(lost, columns=["id"]).column("id").to_pylist())
    # killed while writing: the rows of that batch never got their shard, only half a temporary file
    tmp = rewrite / f".tmp-{lost.stem}-123.parquet"
    tmp.write_bytes(lost.read_bytes()[:100])
    lost.unlink()
    for f in ("sft.jsonl", "sft.parquet", "rejects.jsonl", "distilled.parquet", "stats.json"):
        (out / f).unlink()
    run_ray(config(reference["docs"]), out, RecordingFactory(log))
    assert not tmp.exists()
    assert set(requests_logged(log)) == {("rewrite", k) for k in lost_ids}
    assert outputs(out) == reference["outputs"]


def test_one_layout_for_both_executors_and_unsupported_settings_refused(reference, tmp_path):
    # a run made locally goes on with Ray (and back): the same store, nothing to convert
    out, log = tmp_path / "run", tmp_path / "mixed.log"
    shutil.copytree(reference["local"], out)
    run_ray(config(reference["docs"]), out, RecordingFactory(log))
    assert not log.exists() and outputs(out) == reference["outputs"]
    with pytest.raises(ConfigError, match="iterations 2"):
        executor_for(build_config({"curate": {"iterations": 2}, "runner": {"executor": "ray"}}))


# ---- a user's own stage --------------------------------------------------------------------------

def test_a_users_stage_runs_on_ray_actors(ray_local, tmp_path):
    """The user's stage of tests/pipeline/test_user_stage.py (a class from a test file, not the
    registry's) goes to the rewriter's actor pool as the object it is, pickled: the Ray run equals the
    local run with the same stage, each of its requests made once by the actors."""
    docs = write_docs(tmp_path / "docs.jsonl")
    local_log, ray_log = tmp_path / "local.log", tmp_path / "ray.log"

    def without_hygiene(cfg):  # as in test_user_stage.py: the instructions differ by one word (near-duplicates)
        for name in HYGIENE_STAGES:
            getattr(cfg, name).enabled = False
        return cfg

    local = run_method(without_hygiene(config(docs, "local")), tmp_path / "local",
                       engine_factory=RecordingFactory(local_log, answer=headline_responder), after={"curate": Headline()})
    stats = run_ray(without_hygiene(config(docs)), tmp_path / "ray", RecordingFactory(ray_log, answer=headline_responder),
                    after={"curate": Headline()})
    assert outputs(tmp_path / "ray") == outputs(tmp_path / "local")
    assert stats["funnel"] == local["funnel"] and stats["funnel"]["headlined"] == stats["stages"]["headline"]["kept"] > 0
    assert stats["stages"]["headline"] == {**local["stages"]["headline"], "seconds": stats["stages"]["headline"]["seconds"],
                                           "rows_per_s": stats["stages"]["headline"]["rows_per_s"]}
    assert stats["stages"]["headline"]["rejected_by_reason"] == {"short_headline": 1}  # d09's
    def headlines(log):
        return sorted(k for (_s, k), n in requests_logged(log).items() if k.startswith("headline:") for _ in range(n))
    assert headlines(ray_log) == headlines(local_log) and len(set(headlines(ray_log))) == len(headlines(ray_log))
    shards = list((tmp_path / "ray" / "stages" / "headline").glob("part-*.parquet"))
    assert shards and all(pq.read_metadata(p).num_rows <= 2 for p in shards)  # the pool's batches


def test_a_stage_that_does_not_pickle_is_named(ray_local, tmp_path):
    docs = write_docs(tmp_path / "docs.jsonl")
    stage = Headline()
    stage.lock = __import__("threading").Lock()  # live state made in __init__ instead of setup
    with pytest.raises(UserError, match="stage headline \\(Headline\\) cannot be sent to Ray workers"):
        run_ray(config(docs), tmp_path / "run", RecordingFactory(tmp_path / "log"), after={"curate": stage})


# ---- the real embedded model on an actor pool ---------------------------------------------------

SMOL = "embedded:smollm2-135m"  # the smallest embedded model: this test checks the cluster path, not quality

def test_embedded_model_on_a_ray_actor_pool(ray_local, tmp_path):
    out = tmp_path / "demo"
    cfg = load_config(DATA_DIR / "demo.yaml", [
        "variant=filter", "distill.enabled=false", "curate.threshold=1", "backtranslate.max_tokens=24",
        "runner.progress=false", "runner.executor=ray", "runner.ray.backward.concurrency=2",
        "runner.ray.backward.batch_size=1", f"models.backward.model={SMOL}", f"models.scorer.model={SMOL}"])
    cfg.input.path = str(DATA_DIR / "demo_corpus.jsonl")
    cfg.input.limit = 3
    stats = run_method(cfg, out)
    sft = read_sft(out)
    rejects = [json.loads(line) for line in open(out / "rejects.jsonl")]
    assert sorted(r["id"] for r in sft + rejects) == ["doc-001", "doc-002", "doc-003"]
    assert stats["funnel"]["documents_in"] == 3 and stats["outputs"]["sft"] == len(sft)
    bt = stage_rows(out, "backtranslate").values()
    assert len(bt) == stats["stages"]["backtranslate"]["in"]
    assert all(r["backtranslate_model"] == SMOL and r["backtranslate_prompt_tokens"] > 100 for r in bt)
    assert len(list((out / "stages" / "backtranslate").glob("part-*.parquet"))) == len(bt)  # batch_size 1
    curated = stage_rows(out, "curate").values()
    assert all(r["score_method"] == "logprobs" and r["score"] in {1, 2, 3, 4, 5} for r in curated)
    result = analyze(out, tokenizer=None)
    assert result["sets"]["instructions"]["n"] == stats["stages"]["backtranslate"]["kept"]
    assert (out / "analysis.md").is_file()


def test_without_ray_the_error_names_the_extra(monkeypatch):
    from backforth.pipeline.executors.ray import import_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # what an environment without the extra looks like
    with pytest.raises(ConfigError, match=r"pip install 'backforth\[ray\]'"):
        import_ray()


def test_the_prefilter_runs_with_the_model_stages_on_ray(ray_local, tmp_path, monkeypatch):
    """The pre-filter's three parts (the sample through curation, the classifier, the rest filtered) with
    the model stages on Ray actor pools: the same exported pairs, rejects and classifier as the local run;
    the documents it skips are never sent to an actor, and none worth keeping is lost."""
    from test_prefilter import KeywordEmbedder, good
    from test_prefilter import config as prefilter_config
    from test_prefilter import responder as prefilter_responder
    from test_prefilter import write_docs as prefilter_docs

    from backforth import embedding
    from backforth.workflows import run as run_workflow

    monkeypatch.setitem(embedding._LOADED, "keywords", KeywordEmbedder())  # the stub embedder (the driver embeds)
    docs = prefilter_docs(tmp_path / "docs.jsonl", 100)
    runs = {}
    for executor in ("local", "ray"):
        cfg = prefilter_config(docs, sample=50)
        cfg.runner.executor = executor
        if executor == "ray":
            for role in ROLES:
                setattr(cfg.runner.ray, role, type(getattr(cfg.runner.ray, role))(concurrency=2, num_cpus=1, batch_size=4))
        log = tmp_path / f"{executor}.log"
        stats = run_workflow(cfg, tmp_path / executor, engine_factory=RecordingFactory(log, answer=prefilter_responder),
                             check=False)
        runs[executor] = (stats, requests_logged(log), json.loads((tmp_path / executor / "prefilter" / "metrics.json").read_text()))
    (local, local_log, local_metrics), (ray_stats, ray_log, ray_metrics) = runs["local"], runs["ray"]
    for name in ("sft.jsonl", "rejects.jsonl"):
        assert (tmp_path / "ray" / name).read_text() == (tmp_path / "local" / name).read_text()
    assert local_metrics["status"] == "trained"
    assert ray_stats["funnel"] == local["funnel"] and ray_metrics["threshold"] == local_metrics["threshold"]
    assert ray_stats["stages"]["prefilter"]["audit"] == local["stages"]["prefilter"]["audit"]
    rejects = [json.loads(x) for x in (tmp_path / "ray" / "rejects.jsonl").read_text().splitlines()]
    skipped = {r["id"] for r in rejects if r["reason"] == "prefilter_unlikely"}
    asked = {key for (stage, key) in ray_log if stage == "backtranslate"}
    assert skipped and not skipped & asked and all(n == 1 for n in ray_log.values())
    assert ray_log == local_log
    sft = {json.loads(x)["id"] for x in (tmp_path / "ray" / "sft.jsonl").read_text().splitlines()}
    assert sft == {f"p{i:03d}" for i in range(100) if good(i)}

"""The vllm engine on the real embedded model (SmolLM2-135M-Instruct), on vLLM's CPU backend.

Needs vLLM, which lives in its own venv (`make vllm-env`, then `make test-vllm`); skipped elsewhere.
Each `LLM` takes tens of seconds to start, so the engines are module-scoped; `enforce_eager` and an
explicit KV cache size skip vLLM's torch.compile warm-up, which would cost a minute per engine.
"""

import json
import math

import pytest

pytest.importorskip("vllm", reason="vLLM is not installed here: `make vllm-env` then `make test-vllm`")

from run_files import read_distilled, read_sft
from backforth.analysis.analyze import stage_rows
from backforth.cli import DATA_DIR  # noqa: E402
from backforth.config import make_model, load_config  # noqa: E402
from backforth.engines import EngineError, Request, build_engine  # noqa: E402
from backforth.engines.models import resolve_model_dir  # noqa: E402
from backforth.pipeline.method import run_method  # noqa: E402

pytestmark = pytest.mark.vllm

FAST = {"enforce_eager": True, "kv_cache_memory_bytes": 1 << 30}
CONTEXT = 1024
SCORE_PROMPT = [{"role": "user", "content": "Rate how well this answers the question, from 1 (bad) to 5 (perfect).\n"
                 "Question: What is the capital of France?\nAnswer: Paris is the capital of France.\n"
                 "Reply with 'Score: N'."}]


def chat(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


@pytest.fixture(scope="module")
def engine():
    eng = build_engine(make_model(engine="vllm", model="embedded:smollm2-135m", engine_kwargs=dict(FAST, max_model_len=CONTEXT)))
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory):
    """A random LoRA (r=8 on q_proj/v_proj) for the embedded model, saved the way peft saves one."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    weights, _ = resolve_model_dir("embedded:smollm2-135m")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(weights, dtype=torch.float32)
    # init_lora_weights=False: B is random too, so the adapter really changes the model.
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                                  init_lora_weights=False, task_type="CAUSAL_LM"))
    out = tmp_path_factory.mktemp("lora") / "random-lora"
    peft_model.save_pretrained(out)
    AutoTokenizer.from_pretrained(weights).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def lora_engine(lora_dir):
    eng = build_engine(make_model(engine="vllm", model="embedded:smollm2-135m", adapter=str(lora_dir),
                                   engine_kwargs=dict(FAST, max_model_len=CONTEXT)))
    yield eng
    eng.close()


def test_engine_kwargs_reach_vllm(engine):
    assert engine.context_length == CONTEXT  # max_model_len went through to LLM(...)
    assert engine.llm.llm_engine.model_config.enforce_eager is True
    assert engine.name == "embedded:smollm2-135m"


def test_unknown_engine_kwarg_is_a_clear_error():
    with pytest.raises(EngineError, match="no_such_option"):
        build_engine(make_model(engine="vllm", model="embedded:smollm2-135m", engine_kwargs={"no_such_option": 1}))


def test_greedy_messages_and_prompt(engine):
    reqs = [Request(messages=chat("Name three colours."), temperature=0, max_tokens=16, key="m"),
            Request(prompt="The capital of France is", temperature=0, max_tokens=8, key="p")]
    engine.llm.reset_prefix_cache()  # a cached prefix changes the computation, and bf16 rounding with it
    first = engine.generate(reqs)
    engine.llm.reset_prefix_cache()
    again = engine.generate(reqs)
    for req, res, res2 in zip(reqs, first, again):
        assert res.ok and res.key == req.key
        assert res.text.strip() and res.finish_reason in {"stop", "length"}
        assert 0 < res.completion_tokens <= req.max_tokens
        assert res.prompt_tokens == engine.count_tokens(engine.render(req))
        assert res2.text == res.text  # greedy: the same batch gives the same tokens
    assert "<|im_start|>assistant" in engine.render(reqs[0])  # the tokenizer's chat template was applied


def test_stop_strings(engine):
    res = engine.generate([Request(prompt="1, 2, 3, 4,", temperature=0, max_tokens=16, stop=[","])])[0]
    assert res.ok and res.finish_reason == "stop"
    assert "," not in res.text and res.text.strip() == "5"


def test_assistant_prefix_is_appended_after_the_generation_prompt(engine):
    plain = Request(messages=SCORE_PROMPT, temperature=0, max_tokens=4)
    forced = Request(messages=SCORE_PROMPT, temperature=0, max_tokens=4, assistant_prefix="Score:")
    assert engine.render(forced) == engine.render(plain) + "Score:"
    a, b = engine.generate([plain, forced])
    assert b.ok and b.prompt_tokens == a.prompt_tokens + engine.count_tokens("Score:")


def test_choice_scoring(engine):
    req = Request(messages=SCORE_PROMPT, assistant_prefix="Score:", choices=list("12345"), key="s")
    res = engine.generate([req])[0]
    assert res.ok and res.key == "s" and res.completion_tokens == 0
    assert set(res.choice_logprobs) == set("12345")
    assert all(math.isfinite(v) and v < 0 for v in res.choice_logprobs.values())
    assert res.text == max(res.choice_logprobs, key=res.choice_logprobs.get)


def test_choice_scoring_top_k_fallback_agrees(engine):
    """Older vLLM (no logprob_token_ids): the top-20 tokens only; a choice outside them is -inf."""
    req = Request(prompt="Count with me: 1, 2, 3,", choices=list("12345"))
    exact = engine.generate([req])[0].choice_logprobs
    engine._exact_choices = False
    try:
        top_k = engine.generate([req])[0].choice_logprobs
    finally:
        engine._exact_choices = True
    assert any(math.isfinite(v) for v in top_k.values())
    for c, v in top_k.items():
        assert v == float("-inf") or v == pytest.approx(exact[c], abs=1e-3)


def test_mixed_batch_keeps_order_and_settings(engine):
    reqs = [Request(messages=chat("Tell me about cats."), temperature=0, max_tokens=12, key="greedy"),
            Request(messages=SCORE_PROMPT, assistant_prefix="Score:", choices=list("12345"), key="choice"),
            Request(prompt="Once upon a time", temperature=1.0, top_p=0.9, max_tokens=5, key="sampled"),
            Request(prompt="1, 2, 3, 4,", temperature=0, max_tokens=16, stop=[","], key="stopped"),
            Request(messages=chat("Say hello."), temperature=0.7, top_p=0.5, max_tokens=3, key="short")]
    results = engine.generate(reqs)
    assert [r.key for r in results] == [q.key for q in reqs]
    assert all(r.ok for r in results)
    by_key = {r.key: r for r in results}
    assert by_key["choice"].choice_logprobs and by_key["choice"].text in "12345"
    assert all(by_key[k].choice_logprobs is None for k in ("greedy", "sampled", "stopped", "short"))
    assert by_key["sampled"].completion_tokens <= 5 and by_key["short"].completion_tokens <= 3
    assert by_key["stopped"].text.strip() == "5"
    for req, res in zip(reqs, results):
        assert res.prompt_tokens == engine.count_tokens(engine.render(req))


def test_bad_requests_fail_alone(engine):
    long = "word " * (CONTEXT + 50)
    reqs = [Request(prompt="The capital of France is", temperature=0, max_tokens=4, key="ok1"),
            Request(prompt=long, max_tokens=4, key="too-long"),
            Request(prompt="x", choices=["two words"], key="bad-choice"),
            Request(messages=chat("Hi"), temperature=0, max_tokens=4, key="ok2")]
    results = engine.generate(reqs)
    assert [r.key for r in results] == [q.key for q in reqs]
    assert results[0].ok and results[3].ok
    assert results[1].error.startswith("prompt_too_long") and results[1].finish_reason == "error"
    assert "not a single token" in results[2].error


def test_a_request_vllm_itself_refuses_fails_alone(engine):
    """Past our own length check (context unknown), vLLM refuses the whole call: the call is split
    until the bad request is alone, so only it fails."""
    reqs = [Request(prompt=f"{n}, {n + 1}, {n + 2},", temperature=0, max_tokens=4, key=f"ok{n}") for n in range(5)]
    reqs.insert(3, Request(prompt="word " * (CONTEXT + 50), max_tokens=4, key="bad"))
    saved, engine._context = engine._context, None
    try:
        results = engine.generate(reqs)
    finally:
        engine._context = saved
    assert [r.key for r in results] == [q.key for q in reqs]
    assert results[3].error and "vllm refused" in results[3].error
    assert all(r.ok and r.text for i, r in enumerate(results) if i != 3)


def test_lora_adapter_changes_the_model(engine, lora_engine, lora_dir):
    assert lora_engine.name == f"embedded:smollm2-135m+{lora_dir.name}"
    assert lora_engine.llm.llm_engine.vllm_config.lora_config.max_lora_rank == 8
    reqs = [Request(messages=chat("Name three colours."), temperature=0, max_tokens=12),
            Request(messages=SCORE_PROMPT, assistant_prefix="Score:", choices=list("12345"))]
    base = engine.generate(reqs)
    tuned = lora_engine.generate(reqs)
    assert all(r.ok for r in tuned) and tuned[0].completion_tokens > 0
    differs = tuned[0].text != base[0].text or any(
        abs(tuned[1].choice_logprobs[c] - base[1].choice_logprobs[c]) > 1e-2 for c in "12345")
    assert differs, "a random LoRA left greedy output and choice logprobs unchanged: was it applied?"


def test_pipeline_end_to_end_on_vllm(tmp_path):
    """`backforth run` on three demo documents with every role on the vllm engine (one shared LLM)."""
    cfg = load_config(DATA_DIR / "demo.yaml", [
        "curate.threshold=1", "rewrite.max_tokens=64", "distill.max_tokens=32", "backtranslate.max_tokens=32",
        "runner.progress=false", "page_kind.min_p=0.001"])  # page_kind runs on vLLM but keeps every page, as
    cfg.input.path = str(DATA_DIR / "demo_corpus.jsonl")     # curate's threshold 1 keeps every pair
    cfg.input.limit = 3
    for role in ("backward", "scorer", "rewriter", "distiller"):  # a role's section is per engine: replace it whole
        setattr(cfg.models, role, make_model(engine="vllm", model="embedded:smollm2-135m",
                                             engine_kwargs=dict(FAST, max_model_len=2048)))
    stats = run_method(cfg, tmp_path)

    for name in ("sft.jsonl", "rejects.jsonl", "stats.json", "README.md"):
        assert (tmp_path / name).is_file(), name
    sft = read_sft(tmp_path)
    rejects = [json.loads(line) for line in open(tmp_path / "rejects.jsonl")]
    assert sorted([r["id"] for r in sft] + [r["id"] for r in rejects]) == ["doc-001", "doc-002", "doc-003"]
    assert stats["funnel"]["documents_in"] == 3
    kinds = list(stage_rows(tmp_path, "page_kind").values())
    assert len(kinds) == 3 and all(r["page_kind_model"] == "embedded:smollm2-135m" and r["page_kind"] for r in kinds)
    curate = list(stage_rows(tmp_path, "curate").values())
    assert curate, "backtranslate kept no instruction from three real documents"
    for row in curate:
        assert row["backtranslate_model"] == "embedded:smollm2-135m" and row["curate_model"] == "embedded:smollm2-135m"
        assert row["backtranslate_prompt_tokens"] > 100
        assert row["score_method"] == "logprobs" and row["score"] in {1, 2, 3, 4, 5}
    assert "engine: vllm" in (tmp_path / "config.yaml").read_text()


def test_vllm_engine_on_a_ray_actor_pool(tmp_path):
    """The cluster path in miniature: `executor: ray` with the backward role on `engine: vllm`, one
    actor holding a vLLM engine (on a GPU node: `num_gpus`, `tensor_parallel_size` in engine_kwargs)."""
    ray = pytest.importorskip("ray", reason="ray is not installed in this venv (make vllm-env installs it)")
    from backforth.pipeline.store import StageStore

    cfg = load_config(DATA_DIR / "demo.yaml", [
        "backtranslate.max_tokens=32", "runner.progress=false", "runner.executor=ray", "runner.ray.num_cpus=2",
        "runner.ray.backward.num_cpus=2", "runner.ray.backward.batch_size=2",
        "page_kind.enabled=false"])  # only the backward role is on vLLM here (the scorer's 1.5B is not in this venv)
    cfg.input.path = str(DATA_DIR / "demo_corpus.jsonl")
    cfg.input.limit = 4
    cfg.models.backward = make_model(engine="vllm", model="embedded:smollm2-135m", engine_kwargs=dict(FAST, max_model_len=2048))
    try:
        run_method(cfg, tmp_path, until="backtranslate")
    finally:
        ray.shutdown()
    rows = list(StageStore(tmp_path / "stages" / "backtranslate").rows())
    assert sorted(r["id"] for r in rows) == ["doc-001", "doc-002", "doc-003", "doc-004"]
    assert all(r["backtranslate_prompt_tokens"] > 100 for r in rows)
    assert len(list((tmp_path / "stages" / "backtranslate").glob("part-*.parquet"))) == 2  # 2 rows a batch
    assert "engine: vllm" in (tmp_path / "config.yaml").read_text()


NGRAM = {"method": "ngram", "num_speculative_tokens": 5, "prompt_lookup_min": 2, "prompt_lookup_max": 4}
COPY_TEXTS = ["The kettle boils water by passing a current through a coiled element at its base. " * 3,
              "Seasons are caused by the tilt of Earth's rotation axis, not by its distance from the Sun. " * 3]


def _spec_counts(llm) -> tuple[float, float]:
    found = {m.name: getattr(m, "value", None) for m in llm.get_metrics()}
    return found["vllm:spec_decode_num_draft_tokens"], found["vllm:spec_decode_num_accepted_tokens"]


def test_ngram_speculation_through_engine_kwargs_keeps_greedy_output(engine):
    """`engine_kwargs: {speculative_config: {method: ngram, ...}}` reaches vLLM, drafts from the prompt,
    and changes no greedy token (the rewriter's setting in docs/performance.md)."""
    spec = build_engine(make_model(engine="vllm", model="embedded:smollm2-135m",
                                   engine_kwargs=dict(FAST, max_model_len=CONTEXT, speculative_config=NGRAM,
                                                      disable_log_stats=False)))  # get_metrics() needs the stats
    try:
        reqs = [Request(messages=chat("Copy this text word for word:\n\n" + t), max_tokens=48, temperature=0.0)
                for t in COPY_TEXTS]
        plain, drafted = engine.generate(reqs), spec.generate(reqs)
        proposed, accepted = _spec_counts(spec.llm)
    finally:
        spec.close()
    assert [r.text for r in drafted] == [r.text for r in plain] and all(r.ok for r in drafted)
    assert proposed > 0 and accepted > 0


def test_a_vllm_server_started_with_speculative_config_serves_the_openai_engine():
    """The served flag: `--speculative-config '{"method": "ngram", ...}'`; backforth's openai engine
    needs nothing of its own, and the server's /metrics counts the drafts."""
    import os
    import socket
    import subprocess
    import sys
    import time

    import httpx

    from backforth.engines.openai import OpenAIEngine

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    weights, _ = resolve_model_dir("embedded:smollm2-135m")
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", weights, "--served-model-name",
           "smol", "--port", str(port), "--host", "127.0.0.1", "--max-model-len", str(CONTEXT), "--enforce-eager",
           "--speculative-config", json.dumps(NGRAM)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            env=dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1"))
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        while True:
            assert proc.poll() is None, "the vLLM server exited"
            try:
                if httpx.get(f"{base}/v1/models", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the vLLM server did not start"
            time.sleep(2)
        eng = OpenAIEngine("smol", base_url=f"{base}/v1")
        results = eng.generate([Request(messages=chat("Copy this text word for word:\n\n" + t), max_tokens=48,
                                        temperature=0.0) for t in COPY_TEXTS])
        eng.close()
        page = httpx.get(f"{base}/metrics", timeout=10).text
    finally:
        proc.terminate()
        proc.wait(60)
    assert all(r.ok and r.text for r in results)
    drafts = [float(line.rsplit(" ", 1)[1]) for line in page.splitlines()
              if line.startswith("vllm:spec_decode_num_draft_tokens")]
    assert drafts and sum(drafts) > 0
    assert eng.load()["server_queue"] is not None  # the engine read the server's queue from the same /metrics

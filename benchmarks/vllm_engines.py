"""What the pipeline costs on top of vLLM, offline and served, measured side by side in one run.

The same backtranslation prompts (the bundled demo corpus, greedy decoding so both sides generate
the same tokens) go straight to an engine and through the pipeline (`run_method` up to the
backtranslate stage, with the same engine), twice:

a. vLLM offline: `VLLMEngine` (one `LLM.generate` per chunk).
b. vLLM's OpenAI-compatible server, started here as a subprocess on the same model, through
   backforth's `OpenAIEngine`; also the pipeline run's prefix-cache hit rate from the server's
   /metrics.

Bare and pipeline passes alternate (bare, then `--rounds` times pipeline + bare) and are averaged,
so drift in machine load favours neither; vLLM's prefix cache is emptied before every pass.
Needs vLLM (on a CPU-only machine: `make vllm-env`):

    .venv-vllm/bin/python benchmarks/vllm_engines.py [--docs 32] [--max-tokens 48] [--rounds 2]   # or `make bench-vllm`
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from backforth.cli import DATA_DIR
from backforth.config import make_model, load_config
from backforth.corpus import read_documents
from backforth.engines.models import resolve_model_dir
from backforth.pipeline.stages.backtranslate import Backtranslate
from backforth.pipeline.stages.prepare import normalize_text
from backforth.engines.base import Borrowed
from backforth.pipeline.method import run_method
from backforth.pipeline.store import StageStore

SERVED_NAME = "embedded"


def measure(label: str, engine, cfg, requests, rounds: int, reset=lambda: None, probe=lambda: None) -> dict:
    """Bare engine and the pipeline's backtranslate stage on the same prompts, alternating: bare, then
    `rounds` times (pipeline, bare), so drift in machine load favours neither side.

    `reset()` empties vLLM's prefix cache before each timed pass, so no pass reuses the prompts a
    previous one left there; `probe()` is read just before and after the first pipeline pass."""
    engine.generate(requests[:2])  # warm-up: first-call allocations

    def bare() -> tuple[float, int]:
        reset()
        t0 = time.perf_counter()
        results = []
        for i in range(0, len(requests), cfg.runner.chunk_size):
            results += engine.generate(requests[i:i + cfg.runner.chunk_size])
        bad = [r.error for r in results if not r.ok]
        if bad:
            raise SystemExit(f"{label}: {len(bad)} requests failed, e.g. {bad[0]}")
        return time.perf_counter() - t0, sum(r.completion_tokens for r in results)

    def pipeline() -> tuple[float, int, int, list]:
        with tempfile.TemporaryDirectory() as tmp:
            def runner_run() -> None:
                run_method(cfg, tmp, until="backtranslate", engine_factory=lambda _m: Borrowed(engine))
            reset()
            probed = [probe()]
            runner_run()
            probed.append(probe())
            counters, seconds, done = StageStore(Path(tmp) / "stages" / "backtranslate").totals()
            return seconds, done, counters.get("completion_tokens", 0), probed

    bare_runs, pipe_runs = [bare()], []
    for _ in range(rounds):
        pipe_runs.append(pipeline())
        bare_runs.append(bare())
    tokens = bare_runs[0][1]
    engine_rps = len(requests) / (sum(t for t, _ in bare_runs) / len(bare_runs))
    pipe_rps = sum(done for _, done, _, _ in pipe_runs) / sum(t for t, _, _, _ in pipe_runs)
    pipe_tokens = {tok for _, _, tok, _ in pipe_runs}
    print(f"[{label}] bare engine: {engine_rps:.3f} requests/s ({tokens} tokens; runs "
          f"{', '.join(f'{t:.1f}s' for t, _ in bare_runs)})")
    print(f"[{label}] pipeline backtranslate stage: {pipe_rps:.3f} requests/s "
          f"({'/'.join(map(str, sorted(pipe_tokens)))} tokens; stage runs "
          f"{', '.join(f'{t:.1f}s' for t, _, _, _ in pipe_runs)})")
    print(f"[{label}] pipeline/engine throughput ratio: {pipe_rps / engine_rps:.3f}", flush=True)
    return {"engine_rps": engine_rps, "pipeline_rps": pipe_rps, "ratio": pipe_rps / engine_rps,
            "tokens": tokens, "pipeline_tokens": pipe_tokens, "probe": pipe_runs[0][3]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prefix_cache_counters(base: str) -> tuple[float, float] | None:
    """(queries, hits) summed over the server's prefix-cache counters, or None when it has none."""
    try:
        text = httpx.get(f"{base}/metrics", timeout=10).text
    except httpx.HTTPError:
        return None
    totals = {"vllm:prefix_cache_queries": 0.0, "vllm:prefix_cache_hits": 0.0}
    seen = False
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0].removesuffix("_total")
        if name in totals:
            totals[name] += float(line.rsplit(" ", 1)[1])
            seen = True
    return (totals["vllm:prefix_cache_queries"], totals["vllm:prefix_cache_hits"]) if seen else None


def start_server(weights: str, port: int, max_model_len: int, log_path: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", weights,
           "--served-model-name", SERVED_NAME, "--host", "127.0.0.1", "--port", str(port),
           "--max-model-len", str(max_model_len), "--enable-prefix-caching", "--seed", "0"]
    env = dict(os.environ)
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")  # GiB; on a GPU build vLLM ignores it
    env["VLLM_SERVER_DEV_MODE"] = "1"  # for POST /reset_prefix_cache between the timed passes
    return subprocess.Popen(cmd, stdout=open(log_path, "w"), stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)


def wait_ready(proc: subprocess.Popen, base: str, log_path: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the vLLM server exited ({proc.returncode}); its log: {log_path}\n"
                             + log_path.read_text()[-3000:])
        try:
            if httpx.get(f"{base}/v1/models", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(2)
    raise SystemExit(f"the vLLM server was not ready after {timeout_s:.0f}s; its log: {log_path}")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--chunk-size", type=int, default=64, help="runner.chunk_size; the bare side sends the same chunks")
    ap.add_argument("--max-model-len", type=int, default=4096)
    ap.add_argument("--server-timeout", type=float, default=600, help="seconds to wait for the server to start")
    ap.add_argument("--rounds", type=int, default=2, help="pipeline passes, each followed by a bare pass")
    ap.add_argument("--skip-server", action="store_true")
    args = ap.parse_args()

    import vllm

    from backforth.engines.openai import OpenAIEngine
    from backforth.engines.vllm import VLLMEngine

    cfg = load_config(DATA_DIR / "demo.yaml", [
        "backtranslate.temperature=0", f"backtranslate.max_tokens={args.max_tokens}", "prepare.min_words=0",
        f"runner.chunk_size={args.chunk_size}", "runner.progress=false"])
    cfg.input.path = str(DATA_DIR / "demo_corpus.jsonl")
    cfg.input.limit = args.docs
    stage = Backtranslate(cfg.backtranslate)
    rows = [dict(r, text=normalize_text(r["text"])) for r in read_documents(cfg.input)]
    requests = [q for r in rows for q in stage.requests(r)]
    weights, _ = resolve_model_dir("embedded")
    print(f"vLLM {vllm.__version__}; model: embedded ({weights}); {len(requests)} backtranslation prompts, greedy, "
          f"max_tokens {args.max_tokens}, chunk {args.chunk_size}", flush=True)

    # a. offline LLM
    cfg.models.backward = make_model(engine="vllm", model="embedded", engine_kwargs={"max_model_len": args.max_model_len})
    t0 = time.perf_counter()
    engine = VLLMEngine(model="embedded", engine_kwargs={"max_model_len": args.max_model_len})
    print(f"[vllm offline] engine start: {time.perf_counter() - t0:.1f}s", flush=True)
    try:
        offline = measure("vllm offline", engine, cfg, requests, args.rounds, reset=engine.llm.reset_prefix_cache)
    finally:
        engine.close()

    if args.skip_server:
        return
    # b. the OpenAI-compatible server, through backforth's openai engine
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = Path(tempfile.gettempdir()) / f"backforth-vllm-server-{port}.log"
    t0 = time.perf_counter()
    proc = start_server(weights, port, args.max_model_len, log_path)
    try:
        wait_ready(proc, base, log_path, args.server_timeout)
        print(f"[vllm server] ready after {time.perf_counter() - t0:.1f}s on port {port} (log: {log_path})", flush=True)
        cfg.models.backward = make_model(engine="openai", model=SERVED_NAME, base_url=f"{base}/v1",
                                          context_length=args.max_model_len)
        client = OpenAIEngine(model=SERVED_NAME, base_url=f"{base}/v1", context_length=args.max_model_len)
        try:
            served = measure("vllm server", client, cfg, requests, args.rounds,
                             reset=lambda: httpx.post(f"{base}/reset_prefix_cache", timeout=30).raise_for_status(),
                             probe=lambda: prefix_cache_counters(base))
        finally:
            client.close()
    finally:
        stop_server(proc)

    print("\nsummary")
    print(f"  vLLM offline : bare {offline['engine_rps']:.3f} req/s, pipeline {offline['pipeline_rps']:.3f} req/s, "
          f"pipeline/engine throughput ratio {offline['ratio']:.3f}")
    print(f"  vLLM server  : bare {served['engine_rps']:.3f} req/s, pipeline {served['pipeline_rps']:.3f} req/s, "
          f"pipeline/engine throughput ratio {served['ratio']:.3f}")
    before, after = served["probe"]
    if before and after and after[0] > before[0]:
        queries, hits = after[0] - before[0], after[1] - before[1]
        print(f"  server prefix-cache hit rate during the pipeline run: {hits / queries:.1%} "
              f"({hits:.0f} of {queries:.0f} prompt tokens)")
    else:
        print("  server prefix-cache counters: not exposed by this vLLM (/metrics has no vllm:prefix_cache_*)")


if __name__ == "__main__":
    main()

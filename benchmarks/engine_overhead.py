"""How much the pipeline costs on top of the bare engine, measured side by side in one process.

The same backtranslation prompts (the bundled demo corpus, greedy decoding so both sides generate
exactly the same tokens) go once straight to `TransformersEngine.generate` and once through the
pipeline (`run_method` up to the backtranslate stage: request building, chunking, parsing, the
append-only stage file). Bare and pipeline passes alternate (bare, then `--rounds` times pipeline
+ bare) and are averaged, so drift in machine load favours neither. Also prints the engine's batched throughput
against batch size 1.

    python benchmarks/engine_overhead.py [--docs 32] [--max-tokens 48] [--rounds 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from backforth.cli import DATA_DIR
from backforth.config import load_config
from backforth.corpus import read_documents
from backforth.engines import build_engine
from backforth.pipeline.stages.backtranslate import Backtranslate
from backforth.pipeline.stages.prepare import normalize_text
from backforth.engines.base import Borrowed
from backforth.pipeline.method import run_method
from backforth.pipeline.store import StageStore


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=2, help="pipeline passes, each followed by a bare pass")
    args = ap.parse_args()

    cfg = load_config(DATA_DIR / "demo.yaml", [
        "backtranslate.temperature=0", f"backtranslate.max_tokens={args.max_tokens}", "prepare.min_words=0",
        f"models.backward.batch_size={args.batch_size}", "runner.progress=false"])
    cfg.input.path = str(DATA_DIR / "demo_corpus.jsonl")
    cfg.input.limit = args.docs
    engine = build_engine(cfg.models.backward)
    stage = Backtranslate(cfg.backtranslate)
    rows = [dict(r, text=normalize_text(r["text"])) for r in read_documents(cfg.input)]
    requests = [q for r in rows for q in stage.requests(r)]
    engine.generate(requests[:2])  # warm-up: first-call allocations

    def bare() -> tuple[float, int]:
        t0 = time.perf_counter()
        results = []
        for i in range(0, len(requests), cfg.runner.chunk_size):
            results += engine.generate(requests[i:i + cfg.runner.chunk_size])
        return time.perf_counter() - t0, sum(r.completion_tokens for r in results)

    def pipeline() -> tuple[float, float, int, int]:
        with tempfile.TemporaryDirectory() as tmp:
            def runner_run() -> None:
                run_method(cfg, tmp, until="backtranslate", engine_factory=lambda _m: Borrowed(engine))
            t0 = time.perf_counter()
            runner_run()
            wall = time.perf_counter() - t0
            counters, seconds, done = StageStore(Path(tmp) / "stages" / "backtranslate").totals()
            toks = counters.get("completion_tokens", 0)
        return seconds, wall, done, toks

    # bare, then (pipeline, bare) x rounds: passes alternate, so drift in machine load favours neither
    t_bare, tokens = bare()
    bare_times, pipe_times, walls = [t_bare], [], []
    for _ in range(args.rounds):
        bt_seconds, wall, done, pipe_tokens = pipeline()
        pipe_times.append(bt_seconds)
        walls.append(wall)
        bare_times.append(bare()[0])
    t_engine = sum(bare_times) / len(bare_times)
    engine_rps = len(requests) / t_engine
    pipe_rps = done / (sum(pipe_times) / len(pipe_times))

    subset = requests[:8]
    engine.batch_size = 1
    t0 = time.perf_counter()
    single = engine.generate(subset)
    t_single = time.perf_counter() - t0
    engine.batch_size = args.batch_size
    t0 = time.perf_counter()
    batched = engine.generate(subset)
    t_batched = time.perf_counter() - t0
    tok_single = sum(r.completion_tokens for r in single) / t_single
    tok_batched = sum(r.completion_tokens for r in batched) / t_batched

    print(f"model: {engine.name} ({engine.dtype}), {len(requests)} backtranslation prompts, greedy, max_tokens {args.max_tokens}")
    print(f"bare engine: {engine_rps:.3f} requests/s ({tokens} tokens; passes "
          f"{', '.join(f'{t:.1f}s' for t in bare_times)})")
    print(f"pipeline backtranslate stage: {pipe_rps:.3f} requests/s ({pipe_tokens} tokens; passes "
          f"{', '.join(f'{t:.1f}s' for t in pipe_times)}; whole runs incl. prepare "
          f"{', '.join(f'{t:.1f}s' for t in walls)})")
    print(f"pipeline/engine throughput ratio: {pipe_rps / engine_rps:.3f}")
    print(f"engine batch {args.batch_size} vs batch 1 on {len(subset)} prompts: {tok_batched:.1f} vs {tok_single:.1f} tokens/s "
          f"(ratio {tok_batched / tok_single:.2f})")


if __name__ == "__main__":
    main()

"""Does the pipeline keep a model server busy? Chunks in flight, against the bare engine, one run.

The server is the test suite's stub OpenAI server (tests/stub_openai.py) with model-like answer
times: each request takes a log-normal time (median `--median-ms`, a long tail, as generation
lengths vary), and up to `--server-batch` requests are served at once (more wait at the server,
like vLLM's max_num_seqs). What is measured is our side: the runner's chunking and writes and the
engine's limit, ordering and HTTP. Printed for `runner.chunks_in_flight` 1, 2, 4 and the default (auto):

* pipeline/engine throughput ratio: the same backtranslation requests through the pipeline
  (`run_method` up to backtranslate) against one bare `OpenAIEngine.generate` call holding them all
  (no chunk boundaries at all: the ceiling);
* the mean number of requests in flight (against the server batch: a chunk's tail leaves the
  batch half empty even when the server is never quite idle) and the share of the time busy.

    python benchmarks/server_overlap.py [--docs 256] [--chunk 32] [--median-ms 150]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from stub_openai import StubOpenAIServer  # noqa: E402

from backforth.config import build_config  # noqa: E402
from backforth.engines.openai import OpenAIEngine  # noqa: E402
from backforth.pipeline.stages.backtranslate import Backtranslate  # noqa: E402
from backforth.pipeline.method import run_method  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=256)
    ap.add_argument("--chunk", type=int, default=32)
    ap.add_argument("--median-ms", type=float, default=150)
    ap.add_argument("--server-batch", type=int, default=32)
    ap.add_argument("--in-flight", type=int, default=64)
    args = ap.parse_args()

    rng = random.Random(0)
    delays = {}
    slots = threading.BoundedSemaphore(args.server_batch)

    def delay(body: dict) -> float:
        key = json.dumps(body["messages"][-1]["content"])[:200]
        if key not in delays:  # the same prompt takes the same time on both sides of the comparison
            delays[key] = args.median_ms / 1000 * math.exp(rng.gauss(0, 0.6))
        with slots:  # a server batch: beyond it, requests queue
            time.sleep(delays[key])
        return 0.0

    words = "river stone market light paper garden engine winter signal coffee harbor violin".split()
    with tempfile.TemporaryDirectory() as tmp:
        docs = Path(tmp) / "docs.jsonl"
        with open(docs, "w") as fh:
            for i in range(args.docs):
                text = f"Document {i}. " + " ".join(rng.choice(words) for _ in range(80))
                fh.write(json.dumps({"id": f"d{i:05d}", "text": text}) + "\n")
        with StubOpenAIServer(delay_s=delay, responder=lambda b: "Instruction: What is described here?") as stub:
            model = {"engine": "openai", "model": "stub", "base_url": stub.base_url,
                     "max_in_flight": args.in_flight}

            def config(depth: int):
                return build_config({"input": {"path": str(docs)}, "models": {"backward": model},
                                     "runner": {"progress": False, "chunk_size": args.chunk, "chunks_in_flight": depth},
                                     "dedup_documents": {"enabled": False}, "prepare": {"min_words": 0}})

            cfg = config(1)
            stage = Backtranslate(cfg.backtranslate)
            rows = [json.loads(line) for line in docs.read_text().splitlines()]
            requests = [q for r in rows for q in stage.requests(r)]

            def bare() -> tuple[float, dict]:
                eng = OpenAIEngine("stub", base_url=stub.base_url, max_in_flight=args.in_flight)
                t0 = time.perf_counter()
                eng.generate(requests)
                dt = time.perf_counter() - t0
                eng.close()
                return dt, eng.load()

            def pipeline(depth: int) -> tuple[float, float | None]:
                engines = []

                def factory(m):
                    engines.append(OpenAIEngine("stub", base_url=stub.base_url, max_in_flight=args.in_flight))
                    return engines[-1]

                t0 = time.perf_counter()
                run_method(config(depth), Path(tmp) / f"run{depth}-{time.time_ns()}", until="backtranslate",
                           engine_factory=factory)
                dt = time.perf_counter() - t0
                return dt, engines[0].load()

            bare()  # warm-up: connections, the delay table
            (t1, load), (t2, _) = bare(), bare()
            t_bare = (t1 + t2) / 2
            n = len(requests)
            print(f"{n} requests, chunk {args.chunk}, server batch {args.server_batch}, "
                  f"max_in_flight {args.in_flight}, median answer {args.median_ms:.0f} ms")
            print(f"bare engine (one call, no chunks): {n / t_bare:7.1f} req/s   "
                  f"mean in flight {load['mean_in_flight']:5.1f}   busy {load['utilization']:.3f}")
            # each depth three times, in rotated order, so that drift on a shared machine lands on every depth alike
            depths, times, loads = (1, 2, 4, None), {}, {}
            for r in range(3):
                for depth in depths[r % 4:] + depths[:r % 4]:
                    t, load = pipeline(depth)
                    times.setdefault(depth, []).append(t)
                    loads.setdefault(depth, []).append(load["mean_in_flight"])
            for depth in depths:
                t = sum(times[depth]) / len(times[depth])
                spread = ", ".join(f"{t_bare / x:.3f}" for x in times[depth])
                name = f"chunks_in_flight={depth or 'auto'}"
                print(f"pipeline, {name:<19} {n / t:7.1f} req/s   pipeline/engine throughput ratio {t_bare / t:.3f} "
                      f"(runs {spread})   mean in flight {sum(loads[depth]) / 3:5.1f}")

if __name__ == "__main__":
    main()

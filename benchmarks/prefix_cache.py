"""Does sending prompts by prefix family fill a server's prefix cache? Measured on vLLM's server.

The same backtranslation requests (the bundled demo corpus, greedy) go to vLLM's OpenAI-compatible
server (started here on the embedded model, prefix caching on) through backforth's `OpenAIEngine`,
in alternating passes with the server's prefix cache emptied before each:

* `order_by_prefix` on: sorted by prompt, and the first request of a prompt family sent alone
  before the rest of its family;
* off (the default): every request at once, in corpus order.

Printed per mode: the prefix-cache hit rate (cached prompt tokens / prompt tokens, from /metrics)
and requests per second.

    .venv-vllm/bin/python benchmarks/prefix_cache.py [--docs 32] [--max-tokens 48] [--rounds 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from vllm_engines import SERVED_NAME, free_port, prefix_cache_counters, start_server, stop_server, wait_ready  # noqa: E402,I001

from backforth.cli import DATA_DIR  # noqa: E402
from backforth.config import load_config  # noqa: E402
from backforth.corpus import read_documents  # noqa: E402
from backforth.engines.models import resolve_model_dir  # noqa: E402
from backforth.engines.openai import OpenAIEngine  # noqa: E402
from backforth.pipeline.stages.backtranslate import Backtranslate  # noqa: E402
from backforth.pipeline.stages.prepare import normalize_text  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--max-model-len", type=int, default=4096)
    args = ap.parse_args()

    cfg = load_config(DATA_DIR / "demo.yaml", ["backtranslate.temperature=0", f"backtranslate.max_tokens={args.max_tokens}",
                                               "prepare.min_words=0"])
    cfg.input.path = str(DATA_DIR / "demo_corpus.jsonl")
    cfg.input.limit = args.docs
    stage = Backtranslate(cfg.backtranslate)
    requests = [q for r in read_documents(cfg.input) for q in stage.requests(dict(r, text=normalize_text(r["text"])))]
    weights, _ = resolve_model_dir("embedded")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        proc = start_server(weights, port, args.max_model_len, Path(tmp) / "server.log")
        try:
            wait_ready(proc, base, Path(tmp) / "server.log", 600)

            def one_pass(ordered: bool) -> tuple[float, float]:
                httpx.post(f"{base}/reset_prefix_cache", timeout=30).raise_for_status()
                eng = OpenAIEngine(SERVED_NAME, base_url=f"{base}/v1", max_in_flight=64, order_by_prefix=ordered)
                q0, h0 = prefix_cache_counters(base) or (0.0, 0.0)
                t0 = time.perf_counter()
                results = eng.generate(requests)
                dt = time.perf_counter() - t0
                eng.close()
                q1, h1 = prefix_cache_counters(base) or (0.0, 0.0)
                assert all(r.ok for r in results), [r.error for r in results if not r.ok][:3]
                return (h1 - h0) / max(q1 - q0, 1.0), len(requests) / dt

            one_pass(True)  # warm-up: compilation, connections
            runs: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
            for _ in range(args.rounds):
                for ordered in (False, True):
                    runs[ordered].append(one_pass(ordered))
        finally:
            stop_server(proc)
    print(f"{len(requests)} backtranslation requests, vLLM server, prefix cache emptied before each pass, "
          f"{args.rounds} passes each")
    for ordered, label in ((False, "all at once (default)"), (True, "by prefix family")):
        hit = sum(h for h, _ in runs[ordered]) / len(runs[ordered])
        rps = sum(r for _, r in runs[ordered]) / len(runs[ordered])
        print(f"  {label:<28} prefix-cache hit rate {hit:6.1%}   {rps:6.2f} req/s")
    on = sum(r for _, r in runs[True]) / args.rounds
    off = sum(r for _, r in runs[False]) / args.rounds
    print(f"  throughput ratio by-family / all-at-once: {on / off:.3f}")


if __name__ == "__main__":
    main()

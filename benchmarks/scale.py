"""Throughput and memory of the pipeline itself at corpus scale, with an instant in-process engine.

N synthetic documents go through every stage (prepare, backtranslate, decontaminate, curate by
logprobs, rewrite, grounding, distill) and the export (MinHash near-dedup is off: its index is
memory that grows with the corpus by design, measured in `backforth/pipeline/dedup.py`); the engine answers at once, so what is measured is the pipeline: reading,
request building, parsing, the append-only stage files, resume bookkeeping and the export.

    python benchmarks/scale.py --docs 100000              # one run: docs/s and peak_rss_mb
    python benchmarks/scale.py --compare 100000 1000000   # both sizes in subprocesses, side by side

Peak RSS is the process's high-water mark (`ru_maxrss`), so each size runs in its own process.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from backforth.config import build_config
from backforth.engines.base import Request, Result
from backforth.pipeline.runner import Runner

WORDS = ("river stone market light paper garden engine winter signal coffee harbor violin planet "
         "ladder mirror forest castle pencil rocket candle bridge island thunder meadow lantern").split()


class InstantEngine:
    """Answers every request at once with a plausible, parseable output."""

    name = "instant"
    context_length = 8192

    def count_tokens(self, text: str) -> int:
        return len(text) // 4 + 1

    def generate(self, requests: list[Request]) -> list[Result]:
        out = []
        for r in requests:
            user = r.messages[-1]["content"] if r.messages else r.prompt
            if r.choices:
                out.append(Result(text="5", finish_reason="stop", prompt_tokens=len(user) // 4,
                                  choice_logprobs={"1": -4.0, "2": -3.5, "3": -3.0, "4": -1.5, "5": -0.4}))
            elif r.assistant_prefix == "[RES]":
                out.append(Result(text=" A clear answer drawn from the draft. [/RES]", finish_reason="stop",
                                  prompt_tokens=len(user) // 4, completion_tokens=10))
            elif "What request does this text answer" in user:
                out.append(Result(text=f"How does the {r.key[-6:]} {random.choice(WORDS)} work?", finish_reason="stop",
                                  prompt_tokens=len(user) // 4, completion_tokens=9))
            else:
                out.append(Result(text="A direct answer without the document.", finish_reason="stop",
                                  prompt_tokens=len(user) // 4, completion_tokens=8))
        return out

    def close(self) -> None:
        pass


def write_corpus(path: Path, n: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    with open(path, "w") as fh:
        for i in range(n):
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(60, 140)))
            fh.write(json.dumps({"id": f"d{i:08d}", "text": f"Document {i}. {text}."}) + "\n")


def run_once(n: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.jsonl"
        write_corpus(corpus, n)
        cfg = build_config({"input": {"path": str(corpus)}, "curate": {"method": "logprobs"},
                            "prepare": {"min_words": 10}, "runner": {"progress": False, "chunk_size": 256},
                            # MinHash dedup is measured on its own (its index grows ~6 KB per kept row: dedup.py)
                            "dedup_documents": {"enabled": False}, "dedup_instructions": {"enabled": False}})
        engine = InstantEngine()
        t0 = time.perf_counter()
        stats = Runner(cfg, Path(tmp) / "run", engine_factory=lambda _m: engine, log=lambda _s: None).run()
        seconds = time.perf_counter() - t0
        disk = sum(p.stat().st_size for p in (Path(tmp) / "run").rglob("*") if p.is_file())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"docs": n, "seconds": round(seconds, 1), "docs_per_s": round(n / seconds, 1), "peak_rss_mb": round(peak, 1),
            "exported": stats["outputs"]["sft"], "run_dir_mb": round(disk / 2**20, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=10000)
    ap.add_argument("--compare", type=int, nargs=2, metavar=("SMALL", "LARGE"))
    args = ap.parse_args()
    if not args.compare:
        r = run_once(args.docs)
        print(json.dumps(r))
        print(f"docs/s: {r['docs_per_s']}  peak_rss_mb: {r['peak_rss_mb']}")
        return
    results = []
    for n in args.compare:
        proc = subprocess.run([sys.executable, __file__, "--docs", str(n)], capture_output=True, text=True, check=True)
        results.append(json.loads(proc.stdout.splitlines()[0]))
    small, large = results
    for r in results:
        print(f"{r['docs']:>9} docs: {r['docs_per_s']:>8} docs/s  peak_rss_mb {r['peak_rss_mb']:>7}  "
              f"({r['seconds']} s, {r['exported']} exported, run dir {r['run_dir_mb']} MB)")
    print(f"docs/s ratio large/small: {large['docs_per_s'] / small['docs_per_s']:.2f}")
    print(f"peak_rss_mb ratio large/small: {large['peak_rss_mb'] / small['peak_rss_mb']:.2f} "
          f"(docs x{large['docs'] / small['docs']:.0f})")


if __name__ == "__main__":
    main()

"""Throughput and memory of the pipeline itself at corpus scale, with an instant in-process engine.

N synthetic documents go through every stage (prepare, near-dedup of the documents, backtranslate,
near-dedup of the instructions, decontaminate, curate by logprobs, rewrite, grounding, distill) and
the export; the engine answers at once, so what is measured is the pipeline: reading, request
building, parsing, the MinHash near-dedup and its index, the append-only stage files, resume
bookkeeping and the export. Each stage's results are parquet shards of the columns it adds, so
the run dir is about the size of the input (`run_dir_bytes/input_bytes`). The dedup does real work: 3% of the documents are near-copies of a recent
one (1-2 words changed and a new header: most are dropped as near-duplicates, the rest make near-duplicate
instructions), and 2% of the instructions are one of 20 stock questions; the other instructions are
built from their document's words, so they are distinct.

    python benchmarks/scale.py --docs 100000              # one run: docs/s and peak_rss_mb
    python benchmarks/scale.py --compare 100000 1000000   # both sizes in subprocesses, side by side

Peak RSS is the process's high-water mark (`ru_maxrss`), so each size runs in its own process.
Measured figures: docs/performance.md.
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
import zlib
from pathlib import Path

from backforth.config import build_config
from backforth.engines.base import InProcessEngine, Request, Result
from backforth.pipeline.executors.local import LocalExecutor
from backforth.pipeline.method import run_method

# 4,000 pseudo-words: random documents share few 5-word shingles, random instructions few words
VOCAB = [a + b + c + s for s in ("", "a", "o", "en", "et") for a in ("ba", "ko", "mi", "ne", "su", "ta", "vo", "ri", "le", "du")
         for b in "aeiou" for c in "nrsltmkpdgbxzfvw"]
STOCK = [f"How do I choose a good {w}?" for w in VOCAB[:20]]  # the duplicated instructions


class InstantEngine(InProcessEngine):
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
                document = user.rsplit("<<<", 1)[-1].split(">>>", 1)[0].split()
                h = zlib.crc32(r.key.encode())
                text = STOCK[h % 20] if h % 50 == 0 else f"How does {' '.join(document[2:10])} work?"
                out.append(Result(text=text, finish_reason="stop", prompt_tokens=len(user) // 4, completion_tokens=9))
            else:
                out.append(Result(text="A direct answer without the document.", finish_reason="stop",
                                  prompt_tokens=len(user) // 4, completion_tokens=8))
        return out

    def close(self) -> None:
        pass


def write_corpus(path: Path, n: int, seed: int = 0) -> None:
    """`n` documents of 60-140 words; 3% are a recent document with 1-2 words changed (a new id and header)."""
    rng = random.Random(seed)
    recent: list[list[str]] = []  # the last 256 bodies: near-copies come from these (flat memory)
    with open(path, "w") as fh:
        for i in range(n):
            if recent and rng.random() < 0.03:
                body = list(rng.choice(recent))
                for j in rng.sample(range(len(body)), rng.randint(1, 2)):
                    body[j] = rng.choice(VOCAB)
            else:
                body = [rng.choice(VOCAB) for _ in range(rng.randint(60, 140))]
                recent.append(body)
                if len(recent) > 256:
                    recent.pop(0)
            fh.write(json.dumps({"id": f"d{i:08d}", "text": f"Document {i}. {' '.join(body)}."}) + "\n")


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:  # Linux; elsewhere the per-stage figures are left out
        return next(int(line.split()[1]) / 1024 for line in fh if line.startswith("VmRSS"))


class MeasuringExecutor(LocalExecutor):
    """Records the RSS at the end of each stage, before the stage releases its state (e.g. a dedup index)."""

    def __init__(self):
        self.rss_at_stage_end: dict[str, float] = {}
        self.peak_at_stage_end: dict[str, float] = {}  # the high-water mark so far

    def run_stage(self, job):
        failed = super().run_stage(job)
        try:
            self.rss_at_stage_end[job.stage.name] = round(_rss_mb(), 1)
            self.peak_at_stage_end[job.stage.name] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        except OSError:
            pass
        return failed


def run_once(n: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.jsonl"
        write_corpus(corpus, n)
        cfg = build_config({"input": {"path": str(corpus)}, "curate": {"method": "logprobs"},
                            "prepare": {"min_words": 10}, "runner": {"progress": False, "chunk_size": 256}})
        engine = InstantEngine()
        t0 = time.perf_counter()
        runner = MeasuringExecutor()
        stats = run_method(cfg, Path(tmp) / "run", engine_factory=lambda _m: engine, executor=runner)
        seconds = time.perf_counter() - t0
        disk = sum(p.stat().st_size for p in (Path(tmp) / "run").rglob("*") if p.is_file())
        input_bytes = corpus.stat().st_size
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"docs": n, "seconds": round(seconds, 1), "docs_per_s": round(n / seconds, 1), "peak_rss_mb": round(peak, 1),
            "exported": stats["outputs"]["sft"], "run_dir_mb": round(disk / 2**20, 1),
            "input_mb": round(input_bytes / 2**20, 1), "run_dir_ratio": round(disk / input_bytes, 2),
            "near_duplicates": {st: stats["stages"][st]["rejected"] for st in ("dedup_documents", "dedup_instructions")},
            "rss_mb_at_stage_end": runner.rss_at_stage_end, "peak_rss_mb_at_stage_end": runner.peak_at_stage_end}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=10000)
    ap.add_argument("--compare", type=int, nargs=2, metavar=("SMALL", "LARGE"))
    args = ap.parse_args()
    if not args.compare:
        r = run_once(args.docs)
        print(json.dumps(r))
        print(f"docs/s: {r['docs_per_s']}  peak_rss_mb: {r['peak_rss_mb']}")
        print(f"run_dir_bytes/input_bytes: {r['run_dir_ratio']}")
        return
    results = []
    for n in args.compare:
        proc = subprocess.run([sys.executable, __file__, "--docs", str(n)], capture_output=True, text=True, check=True)
        results.append(json.loads(proc.stdout.splitlines()[0]))
    small, large = results
    for r in results:
        print(f"{r['docs']:>9} docs: {r['docs_per_s']:>8} docs/s  peak_rss_mb {r['peak_rss_mb']:>7}  "
              f"({r['seconds']} s, {r['exported']} exported, run dir {r['run_dir_mb']} MB for {r['input_mb']} MB of "
              f"input, near-duplicates dropped "
              f"{r['near_duplicates']['dedup_documents']} documents, {r['near_duplicates']['dedup_instructions']} instructions)")
    for r in results:
        print(f"{r['docs']:>9} docs, RSS MB at each stage's end (peak so far): " + ", ".join(
            f"{k} {v} ({r['peak_rss_mb_at_stage_end'][k]})" for k, v in r["rss_mb_at_stage_end"].items()))
    for r in results:
        print(f"{r['docs']:>9} docs: run_dir_bytes/input_bytes: {r['run_dir_ratio']}")
    print(f"docs/s ratio large/small: {large['docs_per_s'] / small['docs_per_s']:.2f}")
    print(f"peak_rss_mb ratio large/small: {large['peak_rss_mb'] / small['peak_rss_mb']:.2f} "
          f"(docs x{large['docs'] / small['docs']:.0f})")


if __name__ == "__main__":
    main()

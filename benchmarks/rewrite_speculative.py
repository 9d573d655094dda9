"""Speculative decoding for the rewrite: does drafting from the prompt beat batching? Side by side, one run.

The demo's rewriter (embedded:qwen2.5-coder-0.5b) rewrites the demo's own curated pairs (the rows a
demo run kept through curation: `--run`, made with `backforth demo --until curate` when missing),
with the rewrite prompt and the demo's sampling (T=0.7, top_p=0.9, max_tokens 512). Ways:

* `batches`: the transformers engine as the demo runs it, batches packed under the token budget;
* `batch 1`: the same engine one request at a time (what prompt lookup gives up, shown apart);
* `prompt lookup K`: one request at a time with transformers' prompt-lookup decoding, K draft tokens
  a step (`models.<role>.prompt_lookup_tokens: K`);
* with vLLM importable (`make vllm-env`; `make bench-vllm` runs this with `--engines vllm`): vLLM's
  offline engine as is, with `speculative_config` method `ngram` (K tokens, n-grams of 2 to 4 from
  the prompt), and with method `suffix` (which needs Arctic Inference; the error is printed if not).

Printed per way: completion tokens per second (wall time of the generate calls, model loading
excluded), the ratio to `batches` (or to plain vLLM), and the share of draft tokens accepted.
transformers does not count drafts, so they are counted here: the prompt-lookup candidate
generator's proposals, and accepted = tokens generated - verification steps (each step keeps its
accepted drafts plus one token of its own). vLLM's come from its `vllm:spec_decode_num_*` counters.

    python benchmarks/rewrite_speculative.py [--run runs/rewrite-prompts] [--prompts 16] [--k 10] [--engines transformers vllm]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from backforth.cli import DATA_DIR
from backforth.config import load_config
from backforth.pipeline import registry
from backforth.pipeline.stages.rewrite import Rewrite
from backforth.pipeline.store import RunStore

MODEL = "embedded:qwen2.5-coder-0.5b"


def rewrite_requests(run: Path, limit: int):
    """The demo's rewrite requests for the pairs its curation kept (a run made with --until curate)."""
    if not (run / "stages" / "curate").is_dir():
        print(f"no curated demo run at {run}: making one (backforth demo --until curate)", flush=True)
        subprocess.run([sys.executable, "-m", "backforth.cli", "demo", "--out", str(run), "--until", "curate"],
                       check=True)
    cfg = load_config(DATA_DIR / "demo.yaml")
    store = RunStore(run)
    chain = [n for n in registry.names(cfg) if n in store.on_disk()]
    chain = chain[:chain.index("curate") + 1]
    rows = list(store.joined(chain, status="done"))[:limit]
    stage = Rewrite(cfg.rewrite)
    return cfg, [q for r in rows for q in stage.requests(r)]


class DraftCounter:
    """Counts transformers' prompt-lookup proposals: steps (one verification forward each) and drafted tokens."""

    def __init__(self):
        from transformers.generation.candidate_generator import PromptLookupCandidateGenerator

        self.cls, self.original = PromptLookupCandidateGenerator, PromptLookupCandidateGenerator.get_candidates
        self.steps = self.drafted = 0
        counter = self

        def counted(gen, input_ids, *args, **kwargs):
            ids, logits = counter.original(gen, input_ids, *args, **kwargs)
            counter.steps += 1
            counter.drafted += ids.shape[1] - input_ids.shape[1]
            return ids, logits

        self.cls.get_candidates = counted

    def close(self) -> None:
        self.cls.get_candidates = self.original


def timed(engine, requests) -> tuple[float, int, list]:
    engine.generate(requests[:1])  # warm-up
    t0 = time.perf_counter()
    results = engine.generate(requests)
    seconds = time.perf_counter() - t0
    bad = [r.error for r in results if not r.ok]
    if bad:
        raise SystemExit(f"{len(bad)} requests failed, e.g. {bad[0]}")
    return seconds, sum(r.completion_tokens for r in results), results


def transformers_ways(requests, ks: list[int], with_batch1: bool) -> list[dict]:
    from backforth.engines.transformers import TransformersEngine

    rows = []
    engine = TransformersEngine(model=MODEL)
    seconds, tokens, _ = timed(engine, requests)
    rows.append({"way": "batches (token budget)", "seconds": seconds, "tokens": tokens, "accepted": None})
    print(f"  batches: {tokens} tokens in {seconds:.1f}s", flush=True)
    if with_batch1:
        engine.batch_size = 1
        seconds, tokens, _ = timed(engine, requests)
        rows.append({"way": "batch 1", "seconds": seconds, "tokens": tokens, "accepted": None})
        print(f"  batch 1: {tokens} tokens in {seconds:.1f}s", flush=True)
        engine.batch_size = 16
    for k in ks:
        engine.prompt_lookup_tokens = k
        engine.generate(requests[:1])  # warm-up
        counter = DraftCounter()
        try:
            t0 = time.perf_counter()
            results = engine.generate(requests)
            seconds = time.perf_counter() - t0
        finally:
            counter.close()
        tokens = sum(r.completion_tokens for r in results)
        accepted = tokens - counter.steps
        rows.append({"way": f"prompt lookup {k} (batch 1)", "seconds": seconds, "tokens": tokens,
                     "accepted": accepted / counter.drafted if counter.drafted else 0.0,
                     "drafted": counter.drafted, "steps": counter.steps})
        print(f"  prompt lookup {k}: {tokens} tokens in {seconds:.1f}s, {counter.steps} steps, "
              f"{accepted} of {counter.drafted} drafted tokens accepted", flush=True)
    engine.close()
    return rows


def spec_counters(llm) -> tuple[float, float] | None:
    """(drafted, accepted) tokens so far from vLLM's own metrics, or None when it has none."""
    try:
        metrics = llm.get_metrics()
    except Exception:  # noqa: BLE001 - an older vLLM without get_metrics
        return None
    found = {m.name: getattr(m, "value", None) for m in metrics}
    d, a = found.get("vllm:spec_decode_num_draft_tokens"), found.get("vllm:spec_decode_num_accepted_tokens")
    return (float(d), float(a)) if d is not None and a is not None else None


def vllm_ways(requests, ks: list[int], max_model_len: int) -> list[dict]:
    from backforth.engines.base import EngineError
    from backforth.engines.vllm import VLLMEngine

    rows = []
    configs = [("vLLM", None)]
    configs += [(f"vLLM + ngram {k}", {"method": "ngram", "num_speculative_tokens": k,
                                        "prompt_lookup_min": 2, "prompt_lookup_max": 4}) for k in ks]
    configs += [("vLLM + suffix", {"method": "suffix"})]
    for name, spec in configs:
        kwargs = {"max_model_len": max_model_len, "disable_log_stats": False}  # get_metrics() needs the stats
        if spec:
            kwargs["speculative_config"] = spec
        try:
            engine = VLLMEngine(model=MODEL, engine_kwargs=kwargs)
        except (EngineError, ImportError, ValueError, RuntimeError) as err:  # a method this vLLM lacks
            print(f"  {name}: could not start: {err}", flush=True)
            rows.append({"way": name, "error": str(err)[:300]})
            continue
        try:
            engine.generate(requests[:1])
            before = spec_counters(engine.llm)
            t0 = time.perf_counter()
            results = engine.generate(requests)
            seconds = time.perf_counter() - t0
            after = spec_counters(engine.llm)
        finally:
            engine.close()
        tokens = sum(r.completion_tokens for r in results)
        accepted = None
        if spec and before is not None and after is not None and after[0] > before[0]:
            accepted = (after[1] - before[1]) / (after[0] - before[0])
        rows.append({"way": name, "seconds": seconds, "tokens": tokens, "accepted": accepted})
        print(f"  {name}: {tokens} tokens in {seconds:.1f}s" +
              (f", {accepted:.1%} of drafted tokens accepted" if accepted is not None else ""), flush=True)
    return rows


def report(title: str, rows: list[dict]) -> None:
    ok = [r for r in rows if "error" not in r]
    if not ok:
        return
    base = ok[0]["tokens"] / ok[0]["seconds"]
    print(f"\n{title}")
    print(f"  {'way':<30} {'tokens':>7} {'seconds':>8} {'tokens/s':>9} {'vs first':>9} {'drafts accepted':>16}")
    for r in rows:
        if "error" in r:
            print(f"  {r['way']:<30} not run: {r['error']}")
            continue
        rate = r["tokens"] / r["seconds"]
        acc = "" if r["accepted"] is None else f"{r['accepted']:.1%}"
        print(f"  {r['way']:<30} {r['tokens']:7d} {r['seconds']:8.1f} {rate:9.1f} {rate / base:9.2f} {acc:>16}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", type=Path, default=Path("runs/rewrite-prompts"))
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--k", type=int, nargs="+", default=[10])
    ap.add_argument("--engines", nargs="+", default=["transformers"], choices=["transformers", "vllm"])
    ap.add_argument("--batch1", action="store_true", help="also time batch 1 without drafts")
    ap.add_argument("--max-model-len", type=int, default=4096)
    args = ap.parse_args()

    cfg, requests = rewrite_requests(args.run, args.prompts)
    r0 = requests[0]
    print(f"{len(requests)} rewrite prompts from {args.run}, {MODEL}, T={r0.temperature} top_p={r0.top_p} "
          f"max_tokens={r0.max_tokens}", flush=True)
    if "transformers" in args.engines:
        report("transformers (tokens/s over the same prompts)", transformers_ways(requests, args.k, args.batch1))
    if "vllm" in args.engines:
        report("vLLM offline (tokens/s over the same prompts)", vllm_ways(requests, args.k, args.max_model_len))


if __name__ == "__main__":
    main()

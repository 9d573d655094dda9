"""Real-length documents through the bare transformers engine: token-budget batching against fixed batches.

Two corpora of real text, cut from the docstrings and comments of the Python standard library
(text no one here wrote), with the same number of documents and the same total tokens:

* uniform: every document about as long as the mean;
* skewed, like web pages: a few long documents (1 in 16, 8x the mean: half the tokens) among many
  short ones.

Each corpus goes through the engine twice, as backtranslation requests (generation, the demo's
settings) and as scoring requests (curate by logprobs), sent as the runner sends them: in chunks of
`--chunk` requests in corpus order. Two engines run the same requests in the same process:

* `fixed`: today's batching before this change, batches of `batch_size` in length order inside a
  chunk, padded to the longest, and scoring that computes the logits of every position;
* `tokens`: batches packed under `max_batch_tokens`, scoring from the last position only.

Printed: prompt tokens/s per corpus, the skewed/uniform ratio per batching (the token budget is
there to make it close to 1), the speed-up of `tokens` over `fixed` on the skewed corpus, and the
peak RSS of each pass (sampled every 20 ms by a thread, so passes in one process are told apart).

    python benchmarks/long_documents.py [--docs 48] [--mean-tokens 500] [--chunk 16] [--max-batch-tokens 16384]
"""

from __future__ import annotations

import argparse
import ast
import gc
import os
import random
import sys
import sysconfig
import threading
import time
from pathlib import Path

from backforth.config import CurateConfig, build_config
from backforth.engines.transformers import TransformersEngine
from backforth.pipeline.stages.backtranslate import Backtranslate
from backforth.pipeline.stages.curate import Curate


class FixedBatchEngine(TransformersEngine):
    """The engine as it was: fixed batches of `batch_size` in length order, full logits for scoring."""

    def batches(self, lengths, extra):
        order = sorted(range(len(lengths)), key=lambda i: lengths[i])
        return [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]

    def next_token_logprobs(self, seqs):
        import torch

        ids, mask = self._pad(seqs)
        with torch.inference_mode():
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            logits = self.model(input_ids=ids, attention_mask=mask, position_ids=positions).logits[:, -1, :].float()
        return torch.log_softmax(logits, dim=-1)


class PeakRSS:
    """Peak resident memory while the block runs (a sampling thread reading /proc/self/statm)."""

    def __enter__(self):
        self.peak, self._stop = _rss(), threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self):
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def stdlib_text() -> list[str]:
    """Paragraphs of real English: module, class and function docstrings and comment blocks of the stdlib."""
    root = Path(sysconfig.get_paths()["stdlib"])
    paras: list[str] = []
    for path in sorted(root.glob("*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc.split()) >= 12:
                    paras.append(" ".join(doc.split()))
    return paras


def make_corpora(tokenizer, n_docs: int, mean_tokens: int, seed: int = 0) -> dict[str, list[str]]:
    """Two corpora of `n_docs` documents and the same total tokens: uniform, and skewed (1 in 16 long, 8x the mean)."""
    rng = random.Random(seed)
    paras = stdlib_text()
    rng.shuffle(paras)
    words = " ".join(paras).split()
    n_long = max(1, n_docs // 16)
    long_len = 8 * mean_tokens
    short_len = (n_docs * mean_tokens - n_long * long_len) // (n_docs - n_long)
    if short_len < 30:
        raise SystemExit("--mean-tokens too small for the skewed corpus")
    targets = {"uniform": [mean_tokens] * n_docs,
               "skewed": [long_len] * n_long + [short_len] * (n_docs - n_long)}
    rng.shuffle(targets["skewed"])  # long pages land anywhere in the stream, as on the web
    out, pos = {}, 0
    for name, lengths in targets.items():
        docs = []
        for n in lengths:
            take = int(n * 0.8)  # about 1.25 tokens a word here; trimmed to the exact count below
            while True:
                text = " ".join(words[pos:pos + take])
                got = len(tokenizer(text, add_special_tokens=False)["input_ids"])
                if got >= n or take > 4 * n:
                    break
                take += max(1, (n - got) // 2)
            ids = tokenizer(text, add_special_tokens=False)["input_ids"][:n]
            docs.append(tokenizer.decode(ids))
            pos = (pos + take) % max(1, len(words) - 8 * n)
        out[name] = docs
    return out


def requests_for(kind: str, docs: list[str], max_tokens: int) -> list:
    if kind == "generate":
        cfg = build_config({}).backtranslate.model_copy(update={"temperature": 0.7, "max_tokens": max_tokens})
        stage = Backtranslate(cfg)
        return [q for i, d in enumerate(docs) for q in stage.requests({"id": str(i), "text": d})]
    stage = Curate(CurateConfig(method="logprobs"))
    return [q for i, d in enumerate(docs)
            for q in stage.requests({"id": str(i), "text": d, "instruction": "Explain what this text describes."})]


def run_pass(engine, requests, chunk: int) -> tuple[float, int, int]:
    """(seconds, prompt tokens, peak RSS bytes) for the requests in chunks of `chunk`, as the runner sends them."""
    gc.collect()
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        tokens = 0
        for i in range(0, len(requests), chunk):
            results = engine.generate(requests[i:i + chunk])
            assert all(r.ok for r in results), [r.error for r in results if not r.ok][:1]
            tokens += sum(r.prompt_tokens for r in results)
        seconds = time.perf_counter() - t0
    return seconds, tokens, mem.peak


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=48)
    ap.add_argument("--mean-tokens", type=int, default=500)
    ap.add_argument("--chunk", type=int, default=16, help="requests per engine call (demo.yaml's runner.chunk_size)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-batch-tokens", type=int, default=None, help="default: the engine's")
    ap.add_argument("--max-tokens", type=int, default=64, help="new tokens per backtranslation (demo.yaml)")
    ap.add_argument("--model", default="embedded")
    args = ap.parse_args()

    engines = {
        "fixed": FixedBatchEngine(model=args.model, batch_size=args.batch_size, device="cpu"),
        "tokens": TransformersEngine(model=args.model, batch_size=args.batch_size,
                                     max_batch_tokens=args.max_batch_tokens, device="cpu"),
    }
    engines["fixed"].model = engines["tokens"].model  # one copy of the weights: RSS compares batching only
    corpora = make_corpora(engines["tokens"].tokenizer, args.docs, args.mean_tokens)
    sizes = {k: [len(engines["tokens"].tokenizer(d, add_special_tokens=False)["input_ids"]) for d in v]
             for k, v in corpora.items()}
    print(f"model {args.model} ({engines['tokens'].dtype}, {engines['tokens'].model.config._attn_implementation} "
          f"attention), {os.cpu_count()} CPUs; chunks of {args.chunk}, batch_size {args.batch_size}, "
          f"max_batch_tokens {engines['tokens'].max_batch_tokens}")
    for k, v in sizes.items():
        print(f"corpus {k}: {len(v)} documents, {sum(v)} document tokens (min {min(v)}, max {max(v)})")
    engines["tokens"].generate(requests_for("generate", corpora["uniform"][:2], 4))  # warm-up

    rate: dict[tuple, float] = {}
    seconds: dict[tuple, float] = {}
    # every token-budget pass first: the fixed passes' big allocations must not inflate its peak RSS
    for name in ("tokens", "fixed"):
        for kind in ("generate", "score"):
            for corpus in ("uniform", "skewed"):
                reqs = requests_for(kind, corpora[corpus], args.max_tokens)
                s, toks, peak = run_pass(engines[name], reqs, args.chunk)
                rate[kind, corpus, name], seconds[kind, corpus, name] = toks / s, s
                print(f"{name:<6} {kind:<8} {corpus:<7}: {s:7.1f} s, {toks / s:7.0f} prompt tokens/s, "
                      f"peak RSS {peak / 2**30:.2f} GiB", flush=True)
    print()
    for kind in ("generate", "score"):
        for name in ("fixed", "tokens"):
            print(f"{kind:<8} {name:<6} skewed/uniform tokens/s: {rate[kind, 'skewed', name] / rate[kind, 'uniform', name]:.2f}")
        print(f"{kind:<8} speed-up of token batching over fixed on the skewed corpus: "
              f"{seconds[kind, 'skewed', 'fixed'] / seconds[kind, 'skewed', 'tokens']:.2f}x")
    both = {c: sum(seconds[k, c, "tokens"] for k in ("generate", "score")) for c in ("uniform", "skewed")}
    tok = {c: sum(rate[k, c, "tokens"] * seconds[k, c, "tokens"] for k in ("generate", "score")) for c in both}
    print(f"skewed/uniform tokens/s ratio: {(tok['skewed'] / both['skewed']) / (tok['uniform'] / both['uniform']):.2f}")


if __name__ == "__main__":
    sys.exit(main())

"""Seconds per 100 documents, per stage, for each embedded model on this machine's CPU.

The first `--docs` bundled demo documents go through the real stages (`chunks.process_chunk`:
requests, engine, parsing) with the demo's settings: backtranslation (prompted, T=1.0, 64 new
tokens), curation by logprobs (one forward pass), rewriting (T=0.7, at most `--rewrite-tokens` new
tokens) of each document against its own backtranslated instruction. Printed per model: the load
time and seconds per 100 documents per stage, and one markdown table for the README.

    python benchmarks/embedded_models.py [--docs 16] [--rewrite-tokens 384] [--models embedded:...,...]
"""

from __future__ import annotations

import argparse
import time

from backforth import embedded
from backforth.cli import DATA_DIR
from backforth.config import load_config, make_model
from backforth.corpus import read_documents
from backforth.engines import build_engine
from backforth.pipeline.chunks import process_chunk
from backforth.pipeline.stages.backtranslate import Backtranslate
from backforth.pipeline.stages.curate import Curate
from backforth.pipeline.stages.prepare import normalize_text
from backforth.pipeline.stages.rewrite import Rewrite


def timed(stage, engine, rows: list[dict]) -> tuple[float, list[dict]]:
    stage.model_name = engine.name
    stage.setup(engine)
    t0 = time.perf_counter()
    out = process_chunk(stage, engine, rows).rows
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=16)
    ap.add_argument("--rewrite-tokens", type=int, default=384)
    ap.add_argument("--models", default=",".join(f"embedded:{n}" for n in embedded.MODELS if embedded.installed(n)))
    args = ap.parse_args()
    cfg = load_config(DATA_DIR / "demo.yaml", [f"rewrite.max_tokens={args.rewrite_tokens}"])
    cfg.input.path, cfg.input.limit = str(DATA_DIR / "demo_corpus.jsonl"), args.docs
    docs = [dict(r, text=normalize_text(r["text"])) for r in read_documents(cfg.input)]
    table = []
    for model in args.models.split(","):
        t0 = time.perf_counter()
        engine = build_engine(make_model(model=model))
        load = time.perf_counter() - t0
        bt_s, rows = timed(Backtranslate(cfg.backtranslate), engine, docs)
        rows = [r if r.get("instruction") else dict(r, instruction="What does this text explain?") for r in rows]
        rows = [{k: v for k, v in r.items() if k not in ("_status", "stage", "reason")} for r in rows]
        cu_s, _ = timed(Curate(cfg.curate), engine, rows)
        rw_s, _ = timed(Rewrite(cfg.rewrite), engine, rows)
        per = 100 / len(docs)
        table.append((model, load, bt_s * per, cu_s * per, rw_s * per))
        print(f"{model}: load {load:.0f} s; per 100 documents: backtranslate {bt_s * per:.0f} s, curate {cu_s * per:.0f} s, "
              f"rewrite {rw_s * per:.0f} s", flush=True)
        engine.close()
    print("\n| model | load (s) | backtranslate (s / 100 docs) | curate by logprobs (s / 100 docs) | rewrite (s / 100 docs) |")
    print("|---|---|---|---|---|")
    for model, load, bt, cu, rw in table:
        print(f"| {model} | {load:.0f} | {bt:.0f} | {cu:.0f} | {rw:.0f} |")


if __name__ == "__main__":
    main()

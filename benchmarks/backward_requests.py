"""Does the backward model write requests? A prompted instruct model against a LoRA-trained backward model.

Both backtranslate the bundled corpus (44 web-like pages) through the real pipeline (`run_method` up to
`backtranslate`, the demo's settings). The trained one is `backforth demo --train`'s model: a LoRA
adapter on the same base, trained on the 48 bundled seed pairs in reverse (response -> instruction),
saved under `--out` and reused when it is there. Printed per mode: the share of outputs that read as
a user's request (a question or an imperative: `parsing.looks_like_request`, the check behind the
`not_a_request` reject), the share kept, the reject reasons, and examples of what was not a request.

    python benchmarks/backward_requests.py [--base embedded:qwen2.5-coder-0.5b] [--steps 18] [--out runs/backward_requests]
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path

from backforth.analysis.analyze import stage_rows
from backforth.cli import DATA_DIR
from backforth.config import load_config
from backforth.pipeline.method import run_method
from backforth.pipeline.stages.parsing import clean_instruction, looks_like_request
from backforth.train.seed import load_seed
from backforth.train.sft import load_train_config, train_backward


def backtranslate(out: Path, sets: list[str]) -> list[dict]:
    cfg = load_config(DATA_DIR / "demo.yaml", sets + ["runner.progress=false"])
    cfg.input.path = str(DATA_DIR / "demo_corpus.jsonl")
    run_method(cfg, out, until="backtranslate")
    return list(stage_rows(out, "backtranslate").values())


def report(name: str, rows: list[dict], seconds: float) -> None:
    outputs = [clean_instruction(r["instruction_raw"]) for r in rows if r.get("instruction_raw")]
    requests = [o for o in outputs if looks_like_request(o)]
    kept = sum(r["_status"] == "done" for r in rows)
    reasons = Counter(r["reason"] for r in rows if r["_status"] == "rejected")
    print(f"{name}: {len(requests)} of {len(outputs)} outputs read as requests ({len(requests) / max(1, len(outputs)):.0%}); "
          f"kept {kept} of {len(rows)}; rejected {dict(reasons.most_common())}; backtranslate {seconds:.0f} s")
    for o in [o for o in outputs if not looks_like_request(o)][:5]:
        print(f"    not a request: {o[:100]!r}")
    for r in [r for r in rows if r["_status"] == "done"][:3]:
        print(f"    kept: {r['instruction'][:100]!r}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", default="embedded:qwen2.5-coder-0.5b")
    ap.add_argument("--steps", type=int, default=None, help="LoRA steps (default: the training config's epochs)")
    ap.add_argument("--out", type=Path, default=Path("runs/backward_requests"))
    args = ap.parse_args()
    model_dir = args.out / "backward_model"
    t0 = time.perf_counter()
    tcfg = load_train_config(None, [f"base_model={args.base}", "progress=false"] + ([f"max_steps={args.steps}"] if args.steps else []))
    result = train_backward(load_seed(DATA_DIR / "demo_seed.jsonl"), model_dir, tcfg)
    print(f"trained {model_dir}: {result.steps} LoRA steps on {args.base}, "
          f"{result.seconds_per_step or 0:.1f} s/step, {time.perf_counter() - t0:.0f} s with loading")
    for name, sets in (("prompted", [f"models.backward.model={args.base}"]),
                       ("trained", ["backtranslate.mode=trained", f"models.backward.model={model_dir}"])):
        t0 = time.perf_counter()
        rows = backtranslate(args.out / name, sets)
        report(name, rows, time.perf_counter() - t0)


if __name__ == "__main__":
    main()

"""Can the judge tell the experiment's data apart? Agreement on the labelled pairs of the response task.

`backforth/data/judge_check/` (README there): 24 real pages (Python's docs, PyPI descriptions) each
against a faithful rewrite into an answer, the same 24 rewrites against a copy with one invented
fact, and 16 good instructions against flawed ones. The pairs go through the code the experiment
runs (`evaluate.judge_check.check_judge`: `judge_pairs`, both orders), so this prints what the
experiment's `judge check` step writes into `response_table.md`. Per model and method: agreement
per kind, how often both orders agree, the share of verdicts for the first slot, how often the longer
side was picked, the two length rules' agreement, pass/fail, and the time (uncached unless --cache:
with it, a later `make experiment-demo` finds these judgements in the judge cache).

    python benchmarks/judge_check.py [--models embedded:qwen2.5-coder-1.5b,...] [--methods logprobs,generate] [--cache]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from backforth.config import make_model
from backforth.evaluate.judge_check import KINDS, check_judge


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="embedded:qwen2.5-coder-1.5b")
    ap.add_argument("--methods", default="logprobs")
    ap.add_argument("--cache", action="store_true", help="use (and fill) the shared judge cache")
    args = ap.parse_args()
    lines = ["| judge | method | kind | n | agreement | both orders agree | first slot | picks longer | "
             "better longer / shorter | length rules (shorter, longer) | check |", "|---" * 11 + "|"]
    for model in args.models.split(","):
        for method in args.methods.split(","):
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                summary = check_judge(make_model(model=model), method, Path(tmp), use_cache=args.cache)
                seconds = time.perf_counter() - t0
            print(f"{model} {method}: {seconds:.0f} s", flush=True)
            for kind, s in summary["kinds"].items():
                bl, bs = s["agreement_better_longer"], s["agreement_better_shorter"]
                lines.append(f"| {model} | {method} | {KINDS[kind]} | {s['n']} | {s['agreement']:.2f} | "
                             f"{s['both_orders_agree']:.2f} | {s['first_slot']:.2f} | {s['picks_longer']:.2f} | "
                             f"{bl[0]:.2f} (n={bl[1]}) / {bs[0]:.2f} (n={bs[1]}) | {s['shorter_rule']:.2f}, "
                             f"{s['longer_rule']:.2f} | {'passed' if s['passed'] else 'FAILED'} |")
            print("instructions by kind:", summary["kinds"]["instructions"]["by_kind"], flush=True)
    print("\n" + "\n".join(lines))


if __name__ == "__main__":
    main()

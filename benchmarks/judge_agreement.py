"""Does the eval judge prefer the better answer? Every embedded model, both judging methods.

The rows are labelled answer pairs written for this benchmark (`benchmarks/data/judge_pairs.jsonl`):
20 instructions, each with a correct, helpful answer and a clearly worse one of five kinds (wrong
facts, unhelpful, off-topic, truncated, a refusal of a harmless request), four of each. The pairs
go through the real `backforth eval judge` code (`evaluate.judge.judge`): the better answers as the
"model" outputs, the worse ones as the references, judged in both orders so that a judge that
always picks one position scores a draw. Printed per model and method: the share of pairs where the
judge prefers the better answer (a draw counts half), per kind, the share of verdicts parsed, and
the time taken. Target for the demo's judge: >= 0.90.

    python benchmarks/judge_agreement.py [--models embedded:qwen2.5-coder-1.5b,...] [--methods generate,logprobs]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from backforth import embedded
from backforth.config import make_model
from backforth.evaluate.judge import judge

PAIRS = Path(__file__).parent / "data" / "judge_pairs.jsonl"


def write_sides(rows: list[dict], folder: Path) -> tuple[Path, Path]:
    better, worse = folder / "better.jsonl", folder / "worse.jsonl"
    with open(better, "w") as fb, open(worse, "w") as fw:
        for r in rows:
            fb.write(json.dumps({"id": r["id"], "instruction": r["instruction"], "output": r["better"],
                                 "generator": "better"}) + "\n")
            fw.write(json.dumps({"id": r["id"], "instruction": r["instruction"], "output": r["worse"],
                                 "generator": "worse"}) + "\n")
    return better, worse


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default=",".join(f"embedded:{n}" for n in embedded.MODELS if embedded.installed(n)))
    ap.add_argument("--methods", default="generate,logprobs")
    ap.add_argument("--pairs", type=Path, default=PAIRS)
    ap.add_argument("--max-tokens", type=int, default=96, help="verdict budget of `generate`")
    args = ap.parse_args()
    rows = [json.loads(line) for line in args.pairs.read_text().splitlines() if line.strip()]
    kind = {r["id"]: r["kind"] for r in rows}
    table = []
    with tempfile.TemporaryDirectory() as tmp:
        better, worse = write_sides(rows, Path(tmp))
        for model in args.models.split(","):
            for method in args.methods.split(","):
                out = Path(tmp) / f"{model.replace(':', '_')}-{method}.jsonl"
                t0 = time.perf_counter()
                stats = judge(better, worse, make_model(model=model), out, method=method, use_cache=False,
                              max_tokens=args.max_tokens)
                seconds = time.perf_counter() - t0
                ann = [json.loads(line) for line in out.read_text().splitlines()]
                prefs = {a["id"]: a["preference"] for a in ann}
                right = {i: (0.5 if p is None or p == 1.5 else float(p > 1.5)) for i, p in prefs.items()}
                by_kind = defaultdict(list)
                for i, v in right.items():
                    by_kind[kind[i]].append(v)
                verdicts = [v for a in ann for v in a["preference_by_order"].values()]
                parsed = sum(v is not None for v in verdicts) / max(1, len(verdicts))
                acc = sum(right.values()) / len(right)
                table.append((model, method, acc, parsed, seconds))
                print(f"{model} {method}: prefers the better answer in {acc:.2f} of {len(right)} pairs "
                      f"(by kind {({k: round(sum(v) / len(v), 2) for k, v in sorted(by_kind.items())})}), "
                      f"verdicts parsed {parsed:.2f}, {stats.judge_calls} calls in {seconds:.1f} s", flush=True)
    print()
    print("| judge | method | prefers the better answer | verdicts parsed | seconds |")
    print("|---|---|---|---|---|")
    for model, method, acc, parsed, seconds in table:
        print(f"| {model} | {method} | {acc:.2f} | {parsed:.2f} | {seconds:.0f} |")


if __name__ == "__main__":
    main()

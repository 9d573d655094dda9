"""Does the scorer tell good answers from bad ones? Every embedded model, both curation methods.

The rows are labelled (instruction, answer) pairs written for this benchmark
(`benchmarks/data/curation_pairs.jsonl`): for each of 20 instructions a good, focused answer, and
a bad one of five kinds (promotional, off-topic, forum chatter, an answer to a different question,
page boilerplate), four of each. Each model scores every row with each method through the
pipeline's unit of work (`process_chunk`: the stage's requests, the engine, parsing), the model
loaded once per model. Printed per model and method: requests/s, the parse rate, the AUC of the
score as a good-pair detector (the expected score where the method gives one: it separates better
than the most likely score when the scorer is unsure), the mean score of good and bad pairs and of
each bad kind, and how many of each the paper's threshold keeps. Ends with one table.

    python benchmarks/curation.py [--models embedded:smollm2-135m,embedded:qwen2.5-coder-0.5b,...]
                                  [--methods generate,logprobs,logprobs+calibrate] [--dump-raw raw.jsonl]

Any scorer runs the same way (`--models` a local folder or .gguf; `--engine openai --base-url ...`).
`--dump-raw` writes each generated rationale with the score parsed from it: the real outputs the
parser's tests are built from.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

from backforth import embedded
from backforth.config import CurateConfig, make_model
from backforth.engines import build_engine
from backforth.pipeline.stages.curate import Curate
from backforth.pipeline.chunks import process_chunk
from backforth.pipeline.store import DONE

PAIRS = Path(__file__).parent / "data" / "curation_pairs.jsonl"
METHODS = {
    "generate": dict(method="generate", max_tokens=160, temperature=0.0),
    "logprobs": dict(method="logprobs"),
    "logprobs+calibrate": dict(method="logprobs", calibrate=True),
}


def labelled_rows(path: Path = PAIRS) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [{"id": r["id"], "instruction": r["instruction"], "text": r["answer"], "good": r["label"] == "good",
             "kind": r["kind"]} for r in rows]


def score(engine, cfg: CurateConfig, rows: list[dict], chunk: int) -> tuple[list[dict], float]:
    stage = Curate(cfg)
    stage.model_name = engine.name
    t0 = time.perf_counter()
    stage.setup(engine)  # calibration requests count: they are part of the method's cost
    out = []
    for i in range(0, len(rows), chunk):
        out += process_chunk(stage, engine, rows[i:i + chunk]).rows
    return out, time.perf_counter() - t0


def auc(pos: list[float], neg: list[float]) -> float | None:
    """P(a good pair outscores a bad one), ties counting half."""
    if not pos or not neg:
        return None
    wins = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg)
    return wins / (len(pos) * len(neg))


def _value(row: dict) -> float | None:
    if row.get("score") is None:
        return None
    return row["score_expected"] if row.get("score_expected") is not None else float(row["score"])


def summarize(out: list[dict], rows: list[dict], threshold: float) -> dict:
    by_id = {r["id"]: r for r in out}
    label = {r["id"]: r for r in rows}
    parsed = [i for i, r in by_id.items() if r.get("score") is not None]
    good = [_value(by_id[i]) for i in parsed if label[i]["good"]]
    bad = [_value(by_id[i]) for i in parsed if not label[i]["good"]]
    kinds = defaultdict(list)
    for i in parsed:
        kinds[label[i]["kind"]].append(_value(by_id[i]))
    kept = [i for i in parsed if by_id[i]["score"] >= threshold]
    # an unparsed row cannot be ranked: it counts as a tie against everything (AUC over all rows)
    all_good = [_value(by_id[r["id"]]) if by_id[r["id"]].get("score") is not None else 0.0 for r in rows if r["good"]]
    all_bad = [_value(by_id[r["id"]]) if by_id[r["id"]].get("score") is not None else 0.0 for r in rows if not r["good"]]
    return {"parse_rate": len(parsed) / len(rows), "auc_parsed": auc(good, bad), "auc_all": auc(all_good, all_bad),
            "mean_good": sum(good) / len(good) if good else None, "mean_bad": sum(bad) / len(bad) if bad else None,
            "by_kind": {k: round(sum(v) / len(v), 2) for k, v in sorted(kinds.items())},
            "kept_good": sum(label[i]["good"] for i in kept), "kept_bad": sum(not label[i]["good"] for i in kept)}


def _fmt(x: float | None, spec: str = ".2f") -> str:
    return "n/a" if x is None else format(x, spec)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default=",".join(f"embedded:{n}" for n in embedded.MODELS if embedded.installed(n)))
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--pairs", type=Path, default=PAIRS)
    ap.add_argument("--engine", default="transformers")
    ap.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    ap.add_argument("--threshold", type=float, default=5)
    ap.add_argument("--chunk", type=int, default=16)
    ap.add_argument("--dump-raw", type=Path, default=None, help="write the generated rationales here (jsonl)")
    args = ap.parse_args()

    rows = labelled_rows(args.pairs)
    print(f"{len(rows)} labelled pairs ({sum(r['good'] for r in rows)} good) from {args.pairs}")
    table, raw = [], []
    for model in args.models.split(","):
        fields = {"base_url": args.base_url} if args.engine == "openai" else {}
        engine = build_engine(make_model(engine=args.engine, model=model, **fields))
        engine.generate([Curate(CurateConfig(method="logprobs")).requests(rows[0])[0]])  # warm-up
        for method in args.methods.split(","):
            cfg = CurateConfig(threshold=args.threshold, **METHODS[method])
            out, seconds = score(engine, cfg, rows, args.chunk)
            n_req = len(rows) + (3 if cfg.calibrate else 0)
            s = summarize(out, rows, args.threshold)
            table.append((model, method, n_req / seconds, s))
            print(f"{model} {method}: {n_req} requests in {seconds:.1f} s ({n_req / seconds:.2f} req/s), parse rate "
                  f"{s['parse_rate']:.2f}, AUC {_fmt(s['auc_all'])} (parsed rows only {_fmt(s['auc_parsed'])}), "
                  f"mean good {_fmt(s['mean_good'])} bad {_fmt(s['mean_bad'])}, by kind {s['by_kind']}, "
                  f"kept at >= {args.threshold:g}: {s['kept_good']} good {s['kept_bad']} bad", flush=True)
            if method == "generate":
                raw += [{"model": model, "id": r["id"], "raw": r.get("score_raw"), "score": r.get("score")} for r in out]
        engine.close()
    if args.dump_raw:
        args.dump_raw.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in raw))
    print()
    print("| model | method | req/s | parse rate | AUC good>bad | mean good | mean bad |")
    print("|---|---|---|---|---|---|---|")
    for model, method, rps, s in table:
        print(f"| {model} | {method} | {rps:.2f} | {s['parse_rate']:.2f} | {_fmt(s['auc_all'])} | "
              f"{_fmt(s['mean_good'])} | {_fmt(s['mean_bad'])} |")


if __name__ == "__main__":
    main()

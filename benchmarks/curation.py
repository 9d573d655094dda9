"""Curation by logprobs against curation by a generated rationale, side by side on the same pairs.

The rows are labelled: the bundled seed pairs as (instruction, document) where the document is the
pair's own answer (a good pair, which a scorer should rate high), and the same instructions with
another pair's answer (a bad pair, which it should rate low). Each method scores every row through
the pipeline's unit of work (`process_chunk`: the stage's requests, the engine, parsing), with the
same engine loaded once. Printed: requests per second and their ratio; the kept sets (score >=
threshold) and how much they agree (Jaccard, Cohen's kappa on keep/drop, Spearman on the scores);
the parse rate of `generate`; and how well each method separates good from bad pairs (mean score
of each, and the AUC of the score as a good-pair detector).

    python benchmarks/curation.py [--pairs 16] [--model embedded] [--threshold 5]

Any scorer runs the same way (`--model` a local folder or .gguf; `--engine openai --base-url ...`).
"""

from __future__ import annotations

import argparse
import json
import time

from backforth.cli import DATA_DIR
from backforth.config import CurateConfig, ModelConfig
from backforth.engines import build_engine
from backforth.pipeline.curate import Curate
from backforth.pipeline.runner import process_chunk
from backforth.pipeline.store import DONE


def labelled_rows(n: int) -> list[dict]:
    seed = [json.loads(line) for line in (DATA_DIR / "demo_seed.jsonl").read_text().splitlines()][: 2 * n]
    good = [{"id": f"good-{i}", "instruction": p["instruction"], "text": p["response"], "good": True}
            for i, p in enumerate(seed[:n])]
    # a bad pair: an instruction with the answer to a different question, from the other half
    bad = [{"id": f"bad-{i}", "instruction": p["instruction"], "text": seed[n + (i + 1) % n]["response"], "good": False}
           for i, p in enumerate(seed[:n])]
    return good + bad


def score(engine, cfg: CurateConfig, rows: list[dict], chunk: int) -> tuple[list[dict], float]:
    stage = Curate(cfg)
    stage.model_name = engine.name
    t0 = time.perf_counter()
    stage.setup(engine)  # calibration requests count: they are part of the method's cost
    out = []
    for i in range(0, len(rows), chunk):
        out += process_chunk(stage, engine, rows[i:i + chunk])
    return out, time.perf_counter() - t0


def auc(pos: list[float], neg: list[float]) -> float | None:
    """P(a good pair outscores a bad one), ties counting half."""
    if not pos or not neg:
        return None
    wins = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg)
    return wins / (len(pos) * len(neg))


def kappa(a: list[bool], b: list[bool]) -> float | None:
    n = len(a)
    po = sum(x == y for x, y in zip(a, b)) / n
    pa, pb = sum(a) / n, sum(b) / n
    pe = pa * pb + (1 - pa) * (1 - pb)
    return None if pe == 1 else (po - pe) / (1 - pe)


def spearman(x: list[float], y: list[float]) -> float | None:
    from scipy.stats import spearmanr

    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return None
    return float(spearmanr(x, y).statistic)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=16, help="good pairs (as many bad ones are made)")
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--engine", default="transformers")
    ap.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    ap.add_argument("--threshold", type=float, default=5)
    ap.add_argument("--max-tokens", type=int, default=128, help="rationale budget of `generate`")
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()

    engine = build_engine(ModelConfig(engine=args.engine, model=args.model, base_url=args.base_url,
                                      batch_size=args.batch_size))
    rows = labelled_rows(args.pairs)
    methods = {
        "generate": CurateConfig(method="generate", threshold=args.threshold, max_tokens=args.max_tokens,
                                 temperature=0.0),
        "logprobs": CurateConfig(method="logprobs", threshold=args.threshold),
        "logprobs+calibrate": CurateConfig(method="logprobs", calibrate=True, threshold=args.threshold),
    }
    engine.generate([Curate(methods["logprobs"]).requests(rows[0])[0]])  # warm-up: first-call allocations
    res = {}
    for name, cfg in methods.items():
        out, seconds = score(engine, cfg, rows, args.batch_size)
        n_req = len(rows) + (3 if cfg.calibrate else 0)
        by_id = {r["id"]: r for r in out}
        res[name] = {"seconds": seconds, "req_s": n_req / seconds, "rows": by_id,
                     "kept": {i for i, r in by_id.items() if r["_status"] == DONE},
                     "parsed": sum(r.get("score") is not None for r in out) / len(out)}
        print(f"{name:<20} {n_req} requests in {seconds:6.1f} s: {n_req / seconds:6.2f} req/s, "
              f"parse rate {res[name]['parsed']:.2f}, kept {len(res[name]['kept'])}/{len(rows)}", flush=True)

    print()
    base = res["generate"]
    for name in ("logprobs", "logprobs+calibrate"):
        r = res[name]
        print(f"speed {name} / generate: {r['req_s'] / base['req_s']:.1f}x requests/s")
    print()
    print(f"{'method':<20} {'mean score good':>15} {'mean score bad':>15} {'AUC good>bad':>13} {'kept good':>10} {'kept bad':>9}")
    for name, r in res.items():
        good = [x["score"] for x in r["rows"].values() if x["good"] and x["score"] is not None]
        bad = [x["score"] for x in r["rows"].values() if not x["good"] and x["score"] is not None]
        # expected scores separate better than the argmax when the scorer is unsure: use them where present
        good_e = [x.get("score_expected", x["score"]) for x in r["rows"].values() if x["good"] and x["score"] is not None]
        bad_e = [x.get("score_expected", x["score"]) for x in r["rows"].values() if not x["good"] and x["score"] is not None]
        a = auc(good_e, bad_e)
        print(f"{name:<20} {(sum(good) / len(good) if good else float('nan')):>15.2f} "
              f"{(sum(bad) / len(bad) if bad else float('nan')):>15.2f} {'n/a' if a is None else f'{a:.2f}':>13} "
              f"{sum(i.startswith('good') for i in r['kept']):>10} {sum(i.startswith('bad') for i in r['kept']):>9}")
    print()
    ids = sorted(rows_id for rows_id in base["rows"])
    for name in ("logprobs", "logprobs+calibrate"):
        r = res[name]
        union = base["kept"] | r["kept"]
        jac = len(base["kept"] & r["kept"]) / len(union) if union else None
        k = kappa([i in base["kept"] for i in ids], [i in r["kept"] for i in ids])
        both = [i for i in ids if base["rows"][i]["score"] is not None and r["rows"][i]["score"] is not None]
        rho = spearman([base["rows"][i]["score"] for i in both], [r["rows"][i]["score_expected"] for i in both])
        print(f"agreement generate vs {name}: kept-set Jaccard "
              f"{'n/a (both kept nothing)' if jac is None else f'{jac:.2f}'}, keep/drop kappa "
              f"{'n/a' if k is None else f'{k:.2f}'}, Spearman of scores {'n/a' if rho is None else f'{rho:.2f}'} "
              f"(on {len(both)} rows both parsed)")
    engine.close()


if __name__ == "__main__":
    main()

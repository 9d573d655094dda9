"""How well can any pre-filter predict the scorer's keep? The keep re-drawn on the same documents.

The scorer's keep depends on the document and on the instruction the backward model sampled for it
(temperature 1.0 in the paper). Run the same documents again with another seed of the backward model
up to curation (`backforth demo --input SUBSET --set models.backward.seed=1 --set curate.keep_share=null
--set curate.threshold=1 --until curate ...`, docs/prefilter.md) and this script compares the two
draws: how many kept documents are kept again, and how well the second draw's expected score, used
as if it were a classifier that knew the document as well as the scorer does, reaches the first
draw's kept documents (AUC, and R at recall 0.8 and 0.9 with the rejected documents weighted up to
the whole labelled corpus). The pre-filter sees only the document: a classifier that knew the document
as well as the scorer does would rank about as well as this second draw (a propensity estimated from
many draws would do somewhat better), so the figures are a ceiling for what embeddings can reach.

    python benchmarks/prefilter_ceiling.py --first runs/paper-labels --subset-to runs/repeat-subset.jsonl \\
        --corpus benchmarks/data/real_corpus.jsonl     # every kept document and as many rejected ones
    python benchmarks/prefilter_ceiling.py --first runs/paper-labels --again runs/repeat-s1 \\
        --labels benchmarks/data/prefilter_labels_paper.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import backforth  # noqa: E402
from backforth.pipeline.prefilter_model import threshold_for_recall  # noqa: E402


def compare(first: dict[str, bool], again: dict[str, float], cutoff: float, labels: dict[str, dict],
            recalls=(0.8, 0.9)) -> dict:
    """first: id -> kept in the first draw; again: id -> expected score in the second draw."""
    from sklearn.metrics import roc_auc_score

    ids = [i for i in again if i in first and again[i] == again[i]]
    k0 = np.array([first[i] for i in ids])
    e1 = np.array([again[i] for i in ids])
    k1 = e1 >= cutoff
    out = {"documents": len(ids), "kept_first": int(k0.sum()),
           "kept_again": round(float((k0 & k1).sum() / max(1, k0.sum())), 3),
           "rejected_then_kept": round(float((~k0 & k1).sum() / max(1, (~k0).sum())), 3),
           "auc": round(float(roc_auc_score(k0, e1)), 3), "curve": []}
    # the sample holds every kept document and some rejected ones: weight those up to all rejected
    n_rejected = sum(not r["kept"] for r in labels.values())
    w = np.where(k0, 1.0, n_rejected / max(1, (~k0).sum()))
    tokens = np.array([sum(labels[i]["tokens"].values()) for i in ids]) * w
    exported = np.array([labels[i]["exported"] for i in ids]) * w
    base = tokens.sum() / exported.sum()
    for r in recalls:
        through = e1 >= threshold_for_recall(e1, k0.astype(int), r)
        out["curve"].append({"recall": round(float((through & k0).sum() / k0.sum()), 3),
                             "skipped": round(float(1 - w[through].sum() / w.sum()), 3),
                             "ratio": round(float(tokens[through].sum() / exported[through].sum() / base), 3)})
    return out


def write_subset(first: dict[str, bool], corpus: Path, dest: Path, seed: int = 0) -> int:
    """Every kept document of the first draw and as many rejected ones (seeded), as the corpus has them."""
    kept = sorted(i for i, k in first.items() if k)
    rejected = sorted(i for i, k in first.items() if not k)
    pick = set(kept) | set(random.Random(seed).sample(rejected, min(len(kept), len(rejected))))
    lines = [x for x in corpus.read_text(encoding="utf-8").splitlines() if x.strip() and json.loads(x)["id"] in pick]
    dest.write_text("".join(x + "\n" for x in lines), encoding="utf-8")
    return len(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--first", type=Path, required=True, help="the labelling run (curate.keep_share, top_share stage)")
    ap.add_argument("--again", type=Path, help="the same documents, another backward seed, --until curate")
    ap.add_argument("--labels", type=Path, help="the first run's labels (benchmarks/prefilter.py)")
    ap.add_argument("--subset-to", type=Path, help="write the documents to run again there (jsonl) and stop")
    ap.add_argument("--corpus", type=Path, help="with --subset-to: the first run's input")
    a = ap.parse_args(argv)
    top = backforth.Result(a.first).stage("top_share").to_pandas()
    cutoff = float(top["score_cutoff"].dropna().iloc[0])
    first = {r.id: str(r.keep) == "True" for r in top.itertuples()}
    if a.subset_to:
        if not a.corpus:
            ap.error("--subset-to needs --corpus")
        print(f"wrote {write_subset(first, a.corpus, a.subset_to)} documents to {a.subset_to}")
        return 0
    if not (a.again and a.labels):
        ap.error("--again and --labels are needed (or --subset-to)")
    cur = backforth.Result(a.again).stage("curate").to_pandas()
    again = {r.id: float(r.score_expected) for r in cur.itertuples() if r.score_expected is not None}
    labels = {r["id"]: r for r in map(json.loads, a.labels.read_text(encoding="utf-8").splitlines()) if r}
    out = compare(first, again, cutoff, labels)
    print(f"documents {out['documents']} (kept in the first draw {out['kept_first']}); cutoff {cutoff}")
    print(f"kept again: {out['kept_again']:.0%} of the kept; rejected documents kept now: {out['rejected_then_kept']:.0%}")
    print(f"the second draw's expected score against the first keep: AUC {out['auc']:.3f}")
    for c in out["curve"]:
        print(f"as a classifier: recall {c['recall']:.3f}, skipped {c['skipped']:.3f}, ratio R {c['ratio']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Which document features predict the scorer's keep best? The pre-filter's classifier on other inputs.

The pre-filter (docs/prefilter.md) learns P(kept by the scorer) from a document's MiniLM embedding.
This compares that input with word and character TF-IDF and with both, on a labels file of
`benchmarks/prefilter.py` (no LLM runs): per feature set, the held-out AUC (5-fold, repeated) and,
at the threshold that reaches `--recall` of the kept documents out of fold, the recall, the share
skipped and the ratio R of LLM tokens per exported pair with and without the pre-filter.

    python benchmarks/prefilter_features.py benchmarks/data/prefilter_labels.jsonl \\
        benchmarks/data/prefilter_labels_paper.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backforth.pipeline.prefilter_model import new_classifier, threshold_for_recall  # noqa: E402


def feature_sets(texts: list[str], embedder: str | None) -> dict:
    """name -> (X or None, a scikit-learn transformer fitted inside each fold, or None)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import FeatureUnion

    from backforth.embedding import load_embedder

    E = load_embedder(embedder).embed(texts)
    words = TfidfVectorizer(sublinear_tf=True, min_df=2, ngram_range=(1, 2), max_features=50000)
    chars = TfidfVectorizer(sublinear_tf=True, min_df=2, analyzer="char_wb", ngram_range=(2, 5), max_features=100000)
    return {"MiniLM embedding (the product)": (E, None), "TF-IDF words 1-2": (None, words),
            "TF-IDF characters 2-5": (None, chars), "TF-IDF words + characters": (None, FeatureUnion([("w", words), ("c", chars)]))}


def held_out(X, vectorizer, texts: list[str], y: np.ndarray, seed: int) -> np.ndarray:
    """Each document's P(kept) from a classifier (and vectorizer) fit without it."""
    from sklearn.base import clone
    from sklearn.model_selection import StratifiedKFold

    p = np.zeros(len(y))
    for train, test in StratifiedKFold(5, shuffle=True, random_state=seed).split(np.zeros(len(y)), y):
        if vectorizer is None:
            A, B = X[train], X[test]
        else:
            v = clone(vectorizer)
            A, B = v.fit_transform([texts[i] for i in train]), v.transform([texts[i] for i in test])
        p[test] = new_classifier(seed).fit(A, y[train]).predict_proba(B)[:, 1]
    return p


def main(argv=None) -> int:
    from sklearn.metrics import roc_auc_score

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("labels", type=Path, nargs="+")
    ap.add_argument("--recall", type=float, default=0.9)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--embedder", default=None)
    a = ap.parse_args(argv)
    for path in a.labels:
        labels = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
        texts = [r["text"] for r in labels]
        y = np.array([int(r["kept"]) for r in labels])
        tokens = np.array([sum(r["tokens"].values()) for r in labels], dtype=float)
        exported = np.array([bool(r["exported"]) for r in labels])
        base = tokens.sum() / exported.sum()
        print(f"{path.name}: {len(y)} documents, kept {y.sum()} ({y.mean():.1%})")
        print(f"  {'features':32} {'AUC':>6} {'recall':>7} {'skipped':>8} {'ratio R':>8}")
        for name, (X, vec) in feature_sets(texts, a.embedder).items():
            aucs, rows = [], []
            for rep in range(a.repeats):
                p = held_out(X, vec, texts, y, rep)
                aucs.append(roc_auc_score(y, p))
                through = p >= threshold_for_recall(p, y, a.recall)
                rows.append((through[y == 1].mean(), 1 - through.mean(),
                             tokens[through].sum() / max(1, exported[through].sum()) / base))
            rec, skip, ratio = np.mean(rows, axis=0)
            print(f"  {name:32} {np.mean(aucs):>6.3f} {rec:>7.3f} {skip:>8.3f} {ratio:>8.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The learned pre-filter's model: a scikit-learn classifier on document embeddings, its threshold
for a target recall, its files in the run dir, and the recall a run estimates from its audit.

The classifier learns P(the scorer keeps this document's pair) from the labelled sample. The
threshold is chosen on held-out documents: each sample document's probability comes from a model
that did not see it (stratified k-fold, `cross_val_predict`), and the threshold is the highest one
that lets through `recall` of the kept documents. The model used on the rest of the corpus is then
fit on the whole sample. Everything is seeded.

Files (in `<run dir>/prefilter/`): `classifier.joblib` (the fitted model) and `metrics.json`
(written last: its presence means the step is done; `status` is `trained`, or `off` with the reason
the run went on without a pre-filter).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import UserError

CLASSIFIER, METRICS, SAMPLING = "classifier.joblib", "metrics.json", "sampling.json"


class PrefilterUnusable(UserError):
    """The sample cannot teach a classifier (no kept pair, no rejected pair, too few of either)."""


def threshold_for_recall(p: np.ndarray, y: np.ndarray, recall: float) -> float:
    """The highest threshold t such that the documents with p >= t hold at least `recall` of the positives."""
    pos = np.sort(np.asarray(p)[np.asarray(y) == 1])[::-1]
    if not len(pos):
        raise PrefilterUnusable("no kept document to set a threshold on")
    k = max(1, math.ceil(recall * len(pos) - 1e-9))
    return float(pos[k - 1])


def at_threshold(p: np.ndarray, y: np.ndarray, t: float) -> dict:
    """Recall of the positives and the share of documents skipped when documents with p < t are skipped."""
    p, y = np.asarray(p), np.asarray(y)
    through = p >= t
    n_pos = int(y.sum())
    return {"threshold": round(float(t), 6), "recall": round(float((through & (y == 1)).sum() / n_pos), 4) if n_pos else None,
            "skipped_share": round(float(1 - through.mean()), 4) if len(p) else None}


def curve(p: np.ndarray, y: np.ndarray, recalls: Sequence[float] = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 1.0)) -> list[dict]:
    """Recall against skipped share, at the thresholds that reach each target recall."""
    return [{"target_recall": r, **at_threshold(p, y, threshold_for_recall(p, y, r))} for r in recalls]


def check_labels(y: np.ndarray) -> tuple[int, int]:
    n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
    if n_pos == 0:
        raise PrefilterUnusable(f"the sample of {len(y)} documents has no kept pair: there is nothing to learn "
                                "(raise prefilter.sample, or check the scorer's keep rule)")
    if n_neg == 0:
        raise PrefilterUnusable(f"every pair of the sample of {len(y)} documents was kept: there is nothing to skip")
    if min(n_pos, n_neg) < 2:
        raise PrefilterUnusable(f"the sample has {n_pos} kept and {n_neg} rejected documents: at least 2 of each are "
                                "needed to choose a threshold on held-out documents (raise prefilter.sample)")
    return n_pos, n_neg


def out_of_fold(X: np.ndarray, y: np.ndarray, seed: int = 0, folds: int = 5) -> np.ndarray:
    """Each document's P(kept) from a classifier fit without it (stratified k-fold)."""
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    n_pos, n_neg = check_labels(y)
    k = max(2, min(folds, n_pos, n_neg))
    cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    return cross_val_predict(new_classifier(seed), X, y, cv=cv, method="predict_proba")[:, 1]


def new_classifier(seed: int = 0):
    from sklearn.linear_model import LogisticRegression

    # balanced: kept documents are the minority (about 14% in the paper), and the threshold is
    # chosen afterwards anyway, so the weights only shape the ranking
    return LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000, random_state=seed)


def fit(X: np.ndarray, y: np.ndarray, recall: float, seed: int = 0) -> tuple[object, dict]:
    """(classifier fit on the whole sample, metrics with the held-out threshold, AUC and curve)."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y, dtype=int)
    n_pos, n_neg = check_labels(y)
    oof = out_of_fold(X, y, seed)
    t = threshold_for_recall(oof, y, recall)
    clf = new_classifier(seed).fit(X, y)
    metrics = {"status": "trained", "sample": len(y), "kept": n_pos, "rejected": n_neg,
               "auc_held_out": round(float(roc_auc_score(y, oof)), 4), "target_recall": recall,
               **{f"held_out_{k}": v for k, v in at_threshold(oof, y, t).items()}, "threshold": round(t, 6),
               "curve_held_out": curve(oof, y)}
    return clf, metrics


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n (95% by default)."""
    if n <= 0:
        return 0.0, 1.0
    phat = k / n
    den = 1 + z * z / n
    mid = (phat + z * z / (2 * n)) / den
    half = z * math.sqrt(phat * (1 - phat) / n + z * z / (4 * n * n)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


def recall_estimate(kept_above: int, kept_audited: int, audited: int, below: int) -> dict:
    """The recall the run got among the documents the classifier judged, from its audit: the kept
    documents below the threshold are estimated as the audited ones' keep rate times all documents
    below it, with that rate's Wilson 95% interval carried into an interval for the recall."""
    out = {"kept_above_threshold": kept_above, "below_threshold": below, "audited": audited,
           "kept_among_audited": kept_audited}
    if not audited:
        return {**out, "recall": None, "recall_ci95": None,
                "note": "no document below the threshold was audited (prefilter.audit 0, or none below it)"}
    rate = kept_audited / audited
    lo, hi = wilson(kept_audited, audited)

    def recall_at(r: float) -> float | None:
        missed = r * below
        return round(kept_above / (kept_above + missed), 4) if kept_above + missed else None

    return {**out, "recall": recall_at(rate), "recall_ci95": [recall_at(hi), recall_at(lo)]}


def save(folder: Path, clf, metrics: dict) -> None:
    """The classifier, then its metrics (the marker that training finished), each written whole."""
    import joblib

    folder.mkdir(parents=True, exist_ok=True)
    if clf is not None:
        tmp = folder / (CLASSIFIER + ".tmp")
        joblib.dump(clf, tmp)
        os.replace(tmp, folder / CLASSIFIER)
    write_json(folder / METRICS, metrics)


def write_json(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


def read_metrics(folder: Path) -> dict | None:
    path = folder / METRICS
    return json.loads(path.read_text()) if path.is_file() else None


def load_classifier(folder: Path):
    import joblib

    return joblib.load(folder / CLASSIFIER)

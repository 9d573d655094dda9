"""Does the scorer itself know, from the document alone, whether it will keep the pair? Its hidden states as pre-filter features.

The pre-filter (docs/prefilter.md) learns P(kept by the scorer) from a MiniLM embedding, which
ranks the paper rule's kept documents at AUC 0.64 (benchmarks/prefilter_features.py). This reads
each document's first `--max-chars` characters (2,000: what the page-kind pass reads) through the
scorer's model and takes its hidden states as features: the mean over tokens of the middle layer,
of the last layer, and the middle layer's last token. Per feature set, on held-out folds (5-fold,
repeated): the AUC and, at the threshold reaching `--recall` of the kept documents, the recall, the
share skipped and the ratio R of LLM tokens per exported pair with and without the pre-filter; and
R again counting the forward pass's own prompt tokens for every document (what a run pays unless
the page-kind pass, which reads the same characters, already ran). The features are cached in
`--cache` (an .npz), so a second call costs seconds.

    python benchmarks/prefilter_hidden.py benchmarks/data/prefilter_labels_paper.jsonl --cache runs/hidden.npz
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backforth.pipeline.prefilter_model import threshold_for_recall  # noqa: E402

SCORER = "embedded:qwen2.5-coder-1.5b"  # the demo's scorer


def hidden_features(texts: list[str], model: str, max_chars: int) -> tuple[np.ndarray, np.ndarray]:
    """(features: middle-layer mean | last-layer mean | middle-layer last token, tokens read) per text."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from backforth.engines.models import resolve_model_dir

    path, _adapter = resolve_model_dir(model, dtype=torch.bfloat16)
    tok = AutoTokenizer.from_pretrained(path)
    lm = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16).eval()
    feats, read = [], []
    for i, text in enumerate(texts):
        ids = tok(text[:max_chars], return_tensors="pt")
        with torch.no_grad():
            hs = lm(**ids, output_hidden_states=True).hidden_states
        mid, last = hs[len(hs) // 2][0].float(), hs[-1][0].float()
        feats.append(torch.cat([mid.mean(0), last.mean(0), mid[-1]]).numpy())
        read.append(ids["input_ids"].shape[1])
        if i % 100 == 0:
            print(f"  {i}/{len(texts)} documents read", file=sys.stderr, flush=True)
    return np.array(feats), np.array(read)


def compare(X: np.ndarray, read: np.ndarray, labels: list[dict], recall: float, repeats: int) -> list[dict]:
    """One row per feature set: AUC, recall, skipped, R, R with the forward pass paid for."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = np.array([int(r["kept"]) for r in labels])
    tokens = np.array([sum(r["tokens"].values()) for r in labels], dtype=float)
    exported = np.array([bool(r["exported"]) for r in labels])
    base = tokens.sum() / exported.sum()
    h = X.shape[1] // 3
    sets = {"middle layer, mean": X[:, :h], "last layer, mean": X[:, h:2 * h], "middle layer, last token": X[:, 2 * h:]}
    out = []
    for name, Z in sets.items():
        aucs, rows = [], []
        for rep in range(repeats):
            p = np.zeros(len(y))
            for train, test in StratifiedKFold(5, shuffle=True, random_state=rep).split(Z, y):
                clf = make_pipeline(StandardScaler(), PCA(min(64, len(train) - 1, Z.shape[1]), random_state=0),
                                    LogisticRegression(max_iter=2000, class_weight="balanced"))
                p[test] = clf.fit(Z[train], y[train]).predict_proba(Z[test])[:, 1]
            aucs.append(roc_auc_score(y, p))
            through = p >= threshold_for_recall(p, y, recall)
            pairs = max(1, exported[through].sum())
            rows.append((through[y == 1].mean(), 1 - through.mean(), tokens[through].sum() / pairs / base,
                         (tokens[through].sum() + read.sum()) / pairs / base))
        rec, skip, r, r_paid = np.mean(rows, axis=0)
        out.append({"features": name, "auc": float(np.mean(aucs)), "recall": float(rec), "skipped": float(skip),
                    "ratio": float(r), "ratio_with_pass": float(r_paid)})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("labels", type=Path)
    ap.add_argument("--cache", type=Path, default=None, help="an .npz of the features: read if present, else written")
    ap.add_argument("--model", default=SCORER)
    ap.add_argument("--max-chars", type=int, default=2000)
    ap.add_argument("--recall", type=float, default=0.9)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args(argv)
    labels = [json.loads(x) for x in a.labels.read_text(encoding="utf-8").splitlines() if x.strip()]
    if a.cache is not None and a.cache.is_file():
        cached = np.load(a.cache)
        X, read = cached["X"], cached["read"]
    else:
        X, read = hidden_features([r["text"] for r in labels], a.model, a.max_chars)
        if a.cache is not None:
            np.savez(a.cache, X=X, read=read)
    y = [r["kept"] for r in labels]
    mean_run = np.mean([sum(r["tokens"].values()) for r in labels])
    print(f"{a.labels.name}: {len(y)} documents, kept {sum(y)} ({np.mean(y):.1%}); the pass reads {read.mean():.0f} "
          f"tokens a document, the run spent {mean_run:.0f}")
    print(f"  {'features':26} {'AUC':>6} {'recall':>7} {'skipped':>8} {'ratio R':>8} {'R, pass paid':>13}")
    for row in compare(X, read, labels, a.recall, a.repeats):
        print(f"  {row['features']:26} {row['auc']:>6.3f} {row['recall']:>7.3f} {row['skipped']:>8.3f} "
              f"{row['ratio']:>8.3f} {row['ratio_with_pass']:>13.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

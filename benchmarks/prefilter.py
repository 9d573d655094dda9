"""The learned pre-filter (`prefilter.enabled`) measured on labelled documents, without running the LLMs again.

Input: a labels file, one JSON object per document that reached backtranslation:

    {"id": ..., "text": ..., "kept": true|false, "exported": true|false,
     "tokens": {"backtranslate": 812, "curate": 655, "rewrite": 940, ...}}

`kept`: the run's scorer kept the pair (it passed the stage that applies the keep rule, and was
kept); `exported`: the pair reached sft.jsonl; `tokens`: the prompt + completion tokens the run's
models spent on this document, per stage (the rows' `<stage>_prompt_tokens` and
`<stage>_completion_tokens`). Make it from a finished run dir:

    backforth demo --input benchmarks/data/real_corpus.jsonl --out runs/labels --set prefilter.enabled=false
    python benchmarks/prefilter.py --from-run runs/labels --write-labels benchmarks/data/prefilter_labels.jsonl

(`--from-run` alone derives the labels and measures at once.) Labelling a corpus of a few hundred real
pages with the demo's scorer takes hours on a 2-core CPU, so the labels are made once and kept as a
fixture; this script then only embeds the documents and fits small classifiers (seconds to minutes).

What it measures, by repeated stratified k-fold cross-validation (`--folds`, `--repeats`): in each
fold the training part plays the run's labelled sample. As the stage does, a threshold is chosen on
the training part's out-of-fold probabilities for each target recall, the classifier is fit on the
whole training part, and the held-out part is filtered with it: documents at or above the
threshold go through, a seeded `--audit` share of the others too. Over the held-out documents
(the part of a corpus the pre-filter decides), averaged over folds and repeats:

* recall: the share of the scorer's kept documents that went through;
* skipped: the share of documents that did not (no model ever read them);
* tokens per exported pair with the pre-filter, against without it (all held-out documents go
  through): their ratio R. The labelled sample's own tokens are left out: at the scale the pre-filter
  is for (documented: 10x the sample and more) they are a small part.

It prints the curve (recall against skipped share and R, one line per target recall) and last the
line `prefilter: tokens per exported pair ratio R at recall X` for `--recall` (default 0.9, the
config's default).

    python benchmarks/prefilter.py --labels FILE [--recall 0.9] [--audit 0.05] [--embedder NAME]
    python benchmarks/prefilter.py --from-run RUN_DIR [RUN_DIR ...] [--write-labels FILE]

Several run dirs: their labels together, e.g. a `prefilter.enabled` run and the run of the documents
its pre-filter skipped (`--skipped-to FILE` writes those documents from the first run's input), which
labels every document of the corpus with the same scorer while the first run measures the pre-filter
as it ran.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from backforth.pipeline.prefilter_model import (PrefilterUnusable, new_classifier, out_of_fold,  # noqa: E402
                                                threshold_for_recall)
from backforth.pipeline.stages.prefilter import draw  # noqa: E402

TARGETS = (0.5, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 1.0)


# ---- labels from a run dir ------------------------------------------------------------------------

def labels_from_run(run_dir: str | Path) -> list[dict]:
    """One label row per document that reached backtranslation in a finished run (documents a
    pre-filter skipped have no label: no scorer saw them)."""
    import yaml

    from backforth.config import build_config
    from backforth.pipeline import registry
    from backforth.pipeline.store import RunStore

    run_dir = Path(run_dir)
    cfg = build_config(yaml.safe_load((run_dir / "config.yaml").read_text()))
    stages = registry.enabled(cfg)
    names = [s.name for s in stages]
    keepers = [s.name for s in stages if s.applies_keep_rule and not s.trained_role]
    if not keepers:
        raise SystemExit(f"{run_dir}: variant {cfg.variant} has no scorer: nothing to label")
    keep_stage = keepers[-1]
    model_stages = [s.name for s in stages if s.role_for(cfg) is not None]
    out = []
    for row, last in RunStore(run_dir).final(names):
        if not any(f"{n}_model" in row for n in model_stages):
            continue  # rejected before any model read it (prepare, dedup, a pre-filter)
        passed = names.index(last) > names.index(keep_stage) or (last == keep_stage and row["_status"] == "done")
        kept = passed and row.get("keep") is not False
        tokens = {n: int(row.get(f"{n}_prompt_tokens") or 0) + int(row.get(f"{n}_completion_tokens") or 0)
                  for n in model_stages if f"{n}_prompt_tokens" in row}
        out.append({"id": row["id"], "text": row["text"], "kept": kept,
                    "exported": last == names[-1] and row["_status"] == "done", "tokens": tokens})
    return out


def write_skipped(run_dir: str | Path, dest: str | Path) -> int:
    """The documents of a run's input that its pre-filter rejected (`prefilter_unlikely`), as they came
    in, so that a run of them without the pre-filter labels them too."""
    import yaml

    from backforth.pipeline.store import RunStore

    run_dir = Path(run_dir)
    order = json.loads((run_dir / "fingerprints.json").read_text())
    skipped = {row["id"] for row, _ in RunStore(run_dir).final([s for s in order if (run_dir / "stages" / s).is_dir()])
               if row.get("reason") == "prefilter_unlikely"}
    source = Path(yaml.safe_load((run_dir / "config.yaml").read_text())["input"]["path"])
    lines = [x for x in source.read_text(encoding="utf-8").splitlines() if x.strip() and json.loads(x)["id"] in skipped]
    Path(dest).write_text("".join(x + "\n" for x in lines), encoding="utf-8")
    return len(lines)


# ---- the measurement ------------------------------------------------------------------------------

def simulate(p_test: np.ndarray, t: float, ids: Sequence[str], audit: float, seed: int) -> np.ndarray:
    """Which held-out documents go through: at or above the threshold, or drawn for the audit."""
    audited = np.array([draw(seed, "audit", i) < audit for i in ids], dtype=bool)
    return (p_test >= t) | audited


def junk_weight(y: np.ndarray, keep_rate: float | None) -> np.ndarray:
    """Per document, its weight in the token and skipped sums: 1, or with `keep_rate` the rejected
    documents weighted so that the kept ones make that share of the corpus (a corpus with more junk,
    made of the same measured documents)."""
    w = np.ones(len(y))
    if keep_rate is not None:
        n_kept, n_rej = int(y.sum()), int(len(y) - y.sum())
        w[y == 0] = n_kept * (1 - keep_rate) / (keep_rate * n_rej)
    return w


def measure(X: np.ndarray, labels: list[dict], *, targets: Sequence[float] = TARGETS, folds: int = 5,
            repeats: int = 3, audit: float = 0.05, seed: int = 0, keep_rate: float | None = None) -> list[dict]:
    """Per target recall: the achieved recall, skipped share and token ratio on held-out folds, averaged."""
    from sklearn.model_selection import StratifiedKFold

    y = np.array([int(r["kept"]) for r in labels])
    w = junk_weight(y, keep_rate)
    exported = np.array([bool(r.get("exported")) for r in labels])
    tokens = np.array([sum(r["tokens"].values()) for r in labels], dtype=float) * w
    ids = [r["id"] for r in labels]
    per = {t: [] for t in targets}
    for rep in range(repeats):
        cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed + rep)
        for train, test in cv.split(X, y):
            oof = out_of_fold(X[train], y[train], seed + rep)
            clf = new_classifier(seed + rep).fit(X[train], y[train])
            p = clf.predict_proba(X[test])[:, 1]
            base = tokens[test].sum() / max(1, exported[test].sum())
            for target in targets:
                t = threshold_for_recall(oof, y[train], target)
                through = simulate(p, t, [ids[i] for i in test], audit, seed)
                kept = y[test] == 1
                with_pf = tokens[test][through].sum() / max(1, exported[test][through].sum())
                per[target].append({"recall": float(through[kept].mean()) if kept.any() else float("nan"),
                                    "skipped": float(1 - (w[test] * through).sum() / w[test].sum()), "ratio": with_pf / base if base else float("nan"),
                                    "tokens_per_pair": with_pf, "tokens_per_pair_without": base})
    return [{"target_recall": t, **{k: float(np.nanmean([m[k] for m in ms])) for k in ms[0]},
             "recall_min": float(np.nanmin([m["recall"] for m in ms]))} for t, ms in per.items()]


def report(labels: list[dict], embed, *, recall: float = 0.9, audit: float = 0.05, folds: int = 5,
           repeats: int = 3, seed: int = 0, keep_rate: float | None = None, out=print) -> dict:
    """Embed, measure, print the curve and the final line; returns the row of `recall`."""
    from sklearn.metrics import roc_auc_score

    y = np.array([int(r["kept"]) for r in labels])
    n_pos = int(y.sum())
    out(f"documents {len(labels)}, kept by the scorer {n_pos} ({n_pos / max(1, len(labels)):.1%}), exported "
        f"{sum(bool(r.get('exported')) for r in labels)}, LLM tokens {sum(sum(r['tokens'].values()) for r in labels)}")
    folds = min(folds, n_pos, len(y) - n_pos)
    if folds < 2:
        raise SystemExit("prefilter: the labels need at least 2 kept and 2 rejected documents")
    X = embed([r["text"] for r in labels])
    oof = out_of_fold(X, y, seed)
    out(f"held-out AUC (5-fold, whole set): {roc_auc_score(y, oof):.3f}")
    targets = sorted(set(TARGETS) | {recall})
    rows = measure(X, labels, targets=targets, folds=folds, repeats=repeats, audit=audit, seed=seed, keep_rate=keep_rate)
    if keep_rate is not None:
        out(f"the rejected documents weighted {junk_weight(y, keep_rate)[y == 0][0]:.2f} each, so that the kept ones are "
            f"{keep_rate:.1%} of the corpus (--keep-rate; the corpus as it is: {y.mean():.1%})")
    out(f"{'target':>7} {'recall':>7} {'min':>6} {'skipped':>8} {'tok/pair with':>14} {'without':>9} {'ratio R':>8}"
        f"   ({folds}-fold x {repeats}, audit {audit})")
    for r in rows:
        out(f"{r['target_recall']:>7.2f} {r['recall']:>7.3f} {r['recall_min']:>6.3f} {r['skipped']:>8.3f} "
            f"{r['tokens_per_pair']:>14.0f} {r['tokens_per_pair_without']:>9.0f} {r['ratio']:>8.3f}")
    raw = np.array([sum(r["tokens"].values()) for r in labels], dtype=float)
    # The bound: a classifier that let through exactly the documents the scorer keeps. The tokens of the
    # kept documents are paid whatever the pre-filter does, so R cannot go below their share.
    tokens = raw * junk_weight(y, keep_rate)
    exported = np.array([bool(r.get("exported")) for r in labels])
    kept = y == 1
    oracle = (tokens[kept].sum() / max(1, exported[kept].sum())) / (tokens.sum() / max(1, exported.sum()))
    out(f"the bound (an oracle passing exactly the kept documents): ratio {oracle:.3f}; the rejected documents "
        f"spent {tokens[~kept].sum() / tokens.sum():.1%} of the tokens ({raw[~kept].mean():.0f} a document, "
        f"the kept ones {raw[kept].mean():.0f})")
    chosen = next(r for r in rows if r["target_recall"] == recall)
    out(f"prefilter: tokens per exported pair ratio {chosen['ratio']:.3f} at recall {chosen['recall']:.3f}")
    return chosen


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--labels", type=Path, help="labels jsonl (see the docstring)")
    src.add_argument("--from-run", type=Path, nargs="+", help="derive the labels from finished run dirs")
    src.add_argument("--skipped-to", type=Path, nargs=2, metavar=("RUN_DIR", "FILE"),
                     help="write the input documents that RUN_DIR's pre-filter skipped to FILE (jsonl) and stop")
    ap.add_argument("--write-labels", type=Path, help="with --from-run: also write the labels there")
    ap.add_argument("--recall", type=float, default=0.9)
    ap.add_argument("--audit", type=float, default=0.05)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep-rate", type=float, default=None,
                    help="weight the rejected documents so that the kept ones are this share of the corpus (e.g. 0.136, "
                         "the paper's): the same measured documents in a corpus with more junk")
    ap.add_argument("--embedder", default=None, help="sentence-transformers model (default: the bundled MiniLM)")
    a = ap.parse_args(argv)
    if a.skipped_to:
        n = write_skipped(*a.skipped_to)
        print(f"wrote {n} documents the pre-filter skipped to {a.skipped_to[1]}")
        return 0
    if a.labels:
        labels = [json.loads(x) for x in a.labels.read_text(encoding="utf-8").splitlines() if x.strip()]
    else:
        labels = [row for run in a.from_run for row in labels_from_run(run)]
        if len({r["id"] for r in labels}) != len(labels):
            raise SystemExit("prefilter: a document is labelled by two of the runs; give runs of disjoint documents")
        if a.write_labels:
            a.write_labels.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in labels), encoding="utf-8")
            print(f"wrote {len(labels)} labels to {a.write_labels}")
    from backforth.embedding import load_embedder

    try:
        report(labels, load_embedder(a.embedder).embed, recall=a.recall, audit=a.audit, folds=a.folds,
               repeats=a.repeats, seed=a.seed, keep_rate=a.keep_rate)
    except PrefilterUnusable as err:
        print(f"prefilter: {err}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

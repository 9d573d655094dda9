"""prefilter: skip the documents the run's own scorer would not keep, before any model reads them.

Most of a run's tokens go to documents that end up rejected. With `prefilter.enabled`, `backforth
run` works in two steps on one run dir (`workflows.run`, like Humpback's M1): first a seeded random
sample of `prefilter.sample` documents goes through backtranslation and curation while the other
documents wait (this stage leaves them unfinished); then a classifier learns P(kept by the scorer)
from the sample's embeddings (`learned_prefilter`, saved under `<run dir>/prefilter/`), and the run
goes on: this stage sends on the documents whose probability reaches the threshold chosen for
`prefilter.recall`, plus a seeded `prefilter.audit` share of the others, and rejects the rest as
`prefilter_unlikely` with their probability (`prefilter_p`). From the audited documents the run
estimates the recall it got, with a 95% interval (`outcome`: stats.json and the card).

When the sample cannot teach a classifier (the embedder does not load, no pair or every pair was
kept) the run says why and goes on without the pre-filter: every document passes.
"""

from __future__ import annotations

import hashlib
import heapq
import logging
from pathlib import Path
from typing import Any

from ...config import PrefilterConfig
from ..prefilter_model import SAMPLING, load_classifier, read_metrics, recall_estimate
from ..stage import DONE, LATER, REJECTED, Stage

log = logging.getLogger(__name__)

EMBED_BATCH = 256


def draw(seed: int, purpose: str, doc_id: str) -> float:
    """A uniform number in [0, 1) fixed by (seed, purpose, id): the sample and the audit, reproducibly."""
    h = hashlib.blake2b(f"{seed}\x00{purpose}\x00{doc_id}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2**64


class Prefilter(Stage):
    name = "prefilter"
    funnel = "likely_kept"
    learns_from_sample = True
    survey_first = True  # the sample is drawn from every document, and the probabilities are embedded in batches
    rejects = {
        "prefilter_unlikely": "The learned pre-filter gave the document a probability of being kept by the scorer "
                              "(`prefilter_p`) below the threshold chosen for `prefilter.recall`, and it was not drawn "
                              "for the audit. Try: raise `prefilter.recall` (fewer skipped, more tokens), or set "
                              "`prefilter.enabled: false`; `<run dir>/prefilter/metrics.json` has the threshold and "
                              "the held-out recall curve.",
    }

    @classmethod
    def enabled(cls, cfg) -> bool:
        return cfg.prefilter.enabled

    @classmethod
    def build(cls, cfg, ctx) -> Prefilter:
        run_dir = getattr(ctx, "run_dir", None)
        return cls(cfg.prefilter, Path(run_dir) / cls.name if run_dir is not None else None)

    def __init__(self, cfg: PrefilterConfig, folder: Path | None = None):
        self.cfg, self.folder = cfg, folder
        self.mode = "pass"
        self.sample: set[str] = set()
        self.p: dict[str, float] = {}
        self.threshold: float | None = None

    def settings(self) -> dict[str, Any]:
        return self.cfg.model_dump(exclude={"enabled"})

    def accepts(self, status: str, reason: str | None) -> bool:
        return status == DONE

    def survey(self, rows) -> None:
        """Choose the sample (the `sample` documents with the lowest seeded draw) and, once the
        classifier exists, every other document's probability, embedded in batches."""
        metrics = read_metrics(self.folder) if self.folder is not None else None
        if metrics is not None and metrics.get("settings") != self.settings():
            metrics = None  # made with other settings: the run trains it again after the sample
        sampling = self.folder is not None and (self.folder / SAMPLING).is_file()
        self.mode = ("classify" if metrics and metrics.get("status") == "trained" else "pass" if metrics
                     else "sample" if sampling else "pass")
        if self.mode == "pass" and not metrics:
            log.warning("prefilter: no classifier and no sample step in this run dir (the stage was run outside "
                        "`backforth run`/`backforth.run`): every document goes on")
        clf = embedder = None
        if self.mode == "classify":
            from ...embedding import EmbedderUnavailable, load_embedder

            try:
                embedder = load_embedder(self.cfg.embedder)
                clf = load_classifier(self.folder)
                self.threshold = float(metrics["threshold"])
            except (EmbedderUnavailable, OSError, ValueError) as err:
                log.warning(f"prefilter: {err}; the run goes on without the pre-filter (every document passes)")
                self.mode = "pass"
        heap: list[tuple[float, str]] = []  # the sample: the `sample` lowest draws, as a max-heap
        batch: list[tuple[str, str]] = []

        def score() -> None:
            probs = clf.predict_proba(embedder.embed([t for _i, t in batch], batch_size=64))[:, 1]
            self.p.update({i: float(p) for (i, _t), p in zip(batch, probs)})
            batch.clear()

        n = 0
        for row in rows:
            n += 1
            d = draw(self.cfg.seed, "sample", row["id"])
            if len(heap) < self.cfg.sample:
                heapq.heappush(heap, (-d, row["id"]))
            elif -heap[0][0] > d:
                heapq.heapreplace(heap, (-d, row["id"]))
            if clf is not None:
                batch.append((row["id"], row["text"]))
                if len(batch) >= EMBED_BATCH:
                    score()
        if batch:
            score()
        self.sample = {i for _d, i in heap}
        if self.mode == "sample" and n <= self.cfg.sample:
            log.warning(f"prefilter: the corpus has {n} documents, not more than prefilter.sample ({self.cfg.sample}): "
                        "every document is in the sample and nothing is left to skip (the pre-filter pays on corpora "
                        "of about 10x the sample)")

    def apply(self, row: dict, results: list) -> str | None:
        in_sample = row["id"] in self.sample
        row["prefilter_sample"] = in_sample
        if in_sample:
            self.count("sample")
            return None
        if self.mode == "sample":
            return LATER  # waits for the classifier the sample will train
        if self.mode == "pass" or row["id"] not in self.p:
            self.count("passed_unjudged")
            return None
        p = self.p[row["id"]]
        row["prefilter_p"] = round(p, 4)
        if p >= self.threshold:
            self.count("above_threshold")
            return None
        self.count("below_threshold")
        if draw(self.cfg.seed, "audit", row["id"]) < self.cfg.audit:
            row["prefilter_audit"] = True
            self.count("audited")
            return None
        return "prefilter_unlikely"

    def release(self) -> None:
        self.p, self.sample = {}, set()

    @classmethod
    def summarize(cls, counters: dict[str, int], summary: dict[str, Any]) -> None:
        for k in ("sample", "above_threshold", "below_threshold", "audited", "passed_unjudged"):
            summary[k] = int(counters.get(k, 0))

    def outcome(self, run, stages) -> dict | None:
        """The classifier's metrics, and the recall the run got among the documents it judged,
        estimated from the audit (kept = the pair passed the last stage that applies the keep rule,
        and was kept)."""
        metrics = read_metrics(self.folder) if self.folder is not None else None
        if not metrics:
            return None
        out = {"classifier": {k: metrics.get(k) for k in (
            "status", "reason", "threshold", "target_recall", "auc_held_out", "held_out_recall",
            "held_out_skipped_share", "sample", "kept", "embedder")}}
        names = [st.name for st in stages]
        keepers = [st.name for st in stages if st.applies_keep_rule]
        if metrics.get("status") != "trained" or self.name not in names or not keepers:
            return out
        chain = names[names.index(self.name):names.index(keepers[-1]) + 1]
        audited = kept_above = kept_audited = below = 0
        for row, last in run.final(chain):
            if "prefilter_p" not in row or row.get("prefilter_sample"):
                continue
            kept = last == chain[-1] and row["_status"] == DONE and row.get("keep") is not False
            if row.get("prefilter_audit"):
                audited, kept_audited, below = audited + 1, kept_audited + kept, below + 1
            elif last == self.name and row["_status"] == REJECTED:
                below += 1
            else:
                kept_above += kept
        out["audit"] = recall_estimate(kept_above, kept_audited, audited, below)
        return out

    def card_note(self, summary: dict) -> str | None:
        clf, audit = summary.get("classifier"), summary.get("audit")
        if not clf:
            return None
        if clf.get("status") != "trained":
            return f"Pre-filter: off for this run ({clf.get('reason')}); every document went on."
        text = (f"Pre-filter: a classifier on document embeddings, trained on a sample of {clf['sample']} documents "
                f"({clf['kept']} kept by the scorer), threshold {clf['threshold']:.4f} for a held-out recall of "
                f"{clf['held_out_recall']} (target {clf['target_recall']}; held-out AUC {clf['auc_held_out']}); "
                f"{summary.get('below_threshold', 0)} documents fell below it and {summary.get('audited', 0)} of "
                "those were audited.")
        if audit and audit.get("recall") is not None:
            lo, hi = audit["recall_ci95"]
            text += f" Recall estimated from the audit: {audit['recall']} (95% interval {lo} to {hi})."
        return text

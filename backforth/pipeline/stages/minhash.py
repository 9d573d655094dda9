"""minhash: the MinHash signature of a text's word n-grams, what near-dedup compares texts by.

A text's shingles are its word n-grams, lowercased, with words as `parsing.words` finds them (the whole
text is one shingle when it has fewer than n words; a text without words has none). Its signature is
datasketch's MinHash of that set in the "affine32" scheme: each shingle is hashed (the first 4 bytes
of its SHA-1, little-endian), mixed once (MurmurHash3's 32-bit finalizer), and mapped by `num_perm`
affine permutations a*h + b mod 2^32 (a odd) drawn from `seed`; the signature keeps the minimum under
each, `num_perm` uint32 (512 bytes at 128). Two texts' signatures agree at a position with
probability about the Jaccard similarity of their shingle sets.

datasketch draws the permutations (so the scheme is exactly its own, and a signature here equals its
`MinHash` of the same shingles, bit for bit: tests/pipeline/test_dedup.py checks it); the signature
itself is computed here with numpy, one vectorised pass per text, because that is measurably faster
than datasketch's `update_batch` (`python benchmarks/minhash.py` measures both side by side, with
the same near-duplicate decisions). A `MinHasher` is for one thread at a time.
"""

from __future__ import annotations

from collections.abc import Collection
from hashlib import sha1 as _sha1

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
        self.permutations = MinHash(num_perm=num_perm, seed=seed, scheme=SCHEME).permutations
        self._a, self._b = (np.asarray(p, dtype=np.uint32) for p in self.permutations)

    def hashvalues(self, text: str) -> np.ndarray | None:
        """The signature of `text`, or None when it has no words."""
        return self.of_shingles(shingles(text, self.ngram))

    def of_shingles(self, grams: Collection[bytes]) -> np.ndarray | None:
        """The signature of a set of shingles (its own array), or None for the empty set."""
        if not grams:
            return None
        # the first 4 bytes of each shingle's SHA-1, little-endian, mixed once, then a*h + b mod 2^32
        hv = np.frombuffer(b"".join([_sha1(g).digest() for g in grams]), dtype="<u4")[::5].astype(np.uint32)
        return (_fmix32(hv)[:, None] * self._a + self._b).min(axis=0)

    def minhash(self, hashvalues: np.ndarray):
        """A datasketch `MinHash` holding `hashvalues` (for datasketch's own LSH and comparisons)."""
        return self._MinHash(seed=self.seed, hashvalues=hashvalues, permutations=self.permutations, scheme=SCHEME)


def _fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer, as the affine32 scheme applies it to each shingle hash."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))

"""dedup: drop near-duplicates (MinHash LSH over word shingles) of one column, first seen wins.

Two instances run in a pipeline: `dedup_documents` on `text` after prepare (web crawls repeat the
same page under many URLs, with a changed date or menu; exact dedup in prepare misses those), and
`dedup_instructions` on `instruction` after backtranslate (a backward model asks the same question of
many similar pages, and a hundred copies of one instruction teach one answer a hundred times).

A row is a near-duplicate when the Jaccard similarity of its set of word n-grams (lowercased, words
as in `parsing.words`) with a row kept earlier reaches `threshold`. A MinHash signature of `num_perm`
hashes (`minhash`) estimates that similarity; LSH (`band_index`) finds the candidates: the kept rows
that agree with the row on all `r` hashes of at least one of `b` bands. With `verify` (default) every
candidate is checked against its stored signature, so a pair well below the threshold that LSH
happens to put in one bucket (about 8% of pairs at Jaccard 0.7 with b=9, r=13) is not dropped.
Dropped rows are rejected `near_duplicate` with `duplicate_of` (the id of the kept row, the earliest
one in input order when several match) and `duplicate_similarity` (the estimated Jaccard; None
without `verify`). A row whose field has no words is kept and not indexed.

The state is the kept rows: their ids, band hashes and (with `verify`) signatures, rebuilt on resume
through `observe`, and dropped with `release()`. It holds no Python object per row (`band_index`
says how), so the memory per kept row is the same at any size; beyond tens of millions of rows,
dedup in shards or with a dedicated tool.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...config import NearDedupConfig
from .band_index import BandIndex, Ids, SpillRows, lsh_params, trim_heap
from ..stage import Stage
from .minhash import MinHasher


class NearDedup(Stage):
    """Near-duplicate removal over `field`; `name` is the stage's (`dedup_documents`, `dedup_instructions`)."""

    def __init__(self, cfg: NearDedupConfig, *, name: str, field: str):
        try:
            self._hasher = MinHasher(ngram=cfg.ngram, num_perm=cfg.num_perm, seed=cfg.seed)
        except ImportError:
            raise ImportError(f"{name}: near-duplicate removal needs datasketch>=2.0: pip install 'datasketch>=2.0' "
                              f"(or set {name}.enabled=false)") from None

        self.cfg, self.name, self.field = cfg, name, field
        self._kept = 0
        self._index: BandIndex | None = None
        self._ids: Ids | None = None
        self._sig_rows: SpillRows | None = None
        self.setup(None)

    def setup(self, engine) -> None:
        """The index of kept rows: made when the stage starts, not when it is built (fingerprints build it too)."""
        if self._index is not None:
            return
        self._index = BandIndex(*lsh_params(self.cfg.threshold, self.cfg.num_perm))
        self._ids = Ids()  # kept rows in insertion order (their key is the position here)
        self._sig_rows = SpillRows(self.cfg.num_perm, np.uint32) if self.cfg.verify else None

    def settings(self) -> dict[str, Any]:
        return {"field": self.field, **self.cfg.model_dump(exclude={"enabled"})}

    def hashvalues(self, text: str) -> np.ndarray | None:
        """The MinHash signature of `text`'s shingles (uint32 x num_perm), or None when it has no words."""
        return self._hasher.hashvalues(text)

    def signature(self, text: str):
        """The datasketch MinHash of `text`'s shingles, or None when it has no words."""
        hv = self.hashvalues(text)
        return None if hv is None else self._hasher.minhash(hv)

    def _insert(self, row_id: str, hv: np.ndarray, band_hashes: list[int] | None = None) -> None:
        key = len(self._ids)
        self._ids.append(row_id)
        self._index.add(key, self._index.band_hashes(hv) if band_hashes is None else band_hashes)
        if self._sig_rows is not None:
            self._sig_rows.append(hv)
        self._kept += 1

    def _match(self, hv: np.ndarray, band_hashes: list[int]) -> tuple[int, float] | None:
        """The earliest kept row similar enough to `hv`: (key, estimated Jaccard)."""
        candidates = self._index.candidates(band_hashes)
        if not candidates:
            return None
        if self._sig_rows is None:
            return candidates[0], float("nan")
        last = -1
        for key in candidates:
            if key != last:
                last = key
                sim = float((self._sig_rows[key] == hv).mean())
                if sim >= self.cfg.threshold:
                    return key, sim
        return None

    def key(self, row: dict) -> str:
        """The text compared: the stage's field."""
        return row.get(self.field) or ""

    def observe(self, row: dict) -> None:
        hv = self.hashvalues(self.key(row))
        if hv is not None:
            self._insert(row["id"], hv)

    def apply(self, row: dict, results: list) -> str | None:
        hv = self.hashvalues(self.key(row))
        if hv is None:
            return None
        band_hashes = self._index.band_hashes(hv)
        found = self._match(hv, band_hashes)
        if found is not None:
            key, sim = found
            row["duplicate_of"] = self._ids[key]
            row["duplicate_similarity"] = None if sim != sim else round(sim, 3)
            return "near_duplicate"
        self._insert(row["id"], hv, band_hashes)
        return None

    def release(self) -> None:
        """Drop the index and close the signatures' scratch file, deleting it (the stage is finished; `kept` stays)."""
        if self._sig_rows is not None:
            self._sig_rows.close()
        self._index = self._ids = self._sig_rows = None
        trim_heap()

    @property
    def kept(self) -> int:
        return self._kept

    @property
    def _sigs(self) -> np.ndarray:
        """The stored signatures as one array, read back from the scratch file (for inspection)."""
        if self._sig_rows is None:
            return np.empty((0, self.cfg.num_perm), dtype=np.uint32)
        return np.array([self._sig_rows[k] for k in range(self._sig_rows.n)], dtype=np.uint32).reshape(-1, self.cfg.num_perm)

    def spill_nbytes(self) -> int:
        """Bytes of the signatures' scratch file (0 without `verify`)."""
        return self._sig_rows.disk_nbytes() if self._sig_rows is not None else 0


class DedupDocuments(NearDedup):
    """Near-duplicate documents (`text`), after prepare."""

    name = "dedup_documents"
    funnel = "unique_documents"
    rejects = {
        "near_duplicate": "The document's word 5-grams overlap an earlier kept document's by at least "
                          "`dedup_documents.threshold` (Jaccard, default 0.8): the same page with a changed date or menu; "
                          "`duplicate_of` names the kept one. Try: raise `dedup_documents.threshold` (at most 0.95), or "
                          "`dedup_documents.enabled: false`.",
    }

    def __init__(self, cfg: NearDedupConfig):
        super().__init__(cfg, name="dedup_documents", field="text")

    @classmethod
    def enabled(cls, cfg) -> bool:
        return cfg.dedup_documents.enabled

    @classmethod
    def build(cls, cfg, ctx) -> DedupDocuments:
        return cls(cfg.dedup_documents)


class DedupInstructions(NearDedup):
    """Near-duplicate instructions, after backtranslate. A pair that came with the input
    (`instruction_source: input`) is compared as instruction and response together: a dataset that
    holds several answers to one question keeps them all for curation to rank."""

    name = "dedup_instructions"
    funnel = "unique_instructions"
    rejects = {
        "near_duplicate": "The instruction's words overlap an earlier kept instruction's by at least "
                          "`dedup_instructions.threshold` (Jaccard, default 0.8): the backward model asked the same "
                          "question again (a pair from the input is compared as instruction and response together, so "
                          "only a repeated pair is dropped); `duplicate_of` names the kept one. Try: raise `dedup_instructions.threshold`, "
                          "a backward model that writes more varied instructions, or `dedup_instructions.enabled: false`.",
    }

    def __init__(self, cfg: NearDedupConfig):
        super().__init__(cfg, name="dedup_instructions", field="instruction")

    def key(self, row: dict) -> str:
        if row.get("instruction_source") == "input":
            return f"{row.get('instruction') or ''}\n{row.get('text') or ''}"
        return row.get("instruction") or ""

    def settings(self) -> dict:
        return {**super().settings(), "input_pairs": "instruction+response"}

    @classmethod
    def enabled(cls, cfg) -> bool:
        return cfg.dedup_instructions.enabled

    @classmethod
    def build(cls, cfg, ctx) -> DedupInstructions:
        return cls(cfg.dedup_instructions)

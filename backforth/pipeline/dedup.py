"""dedup: drop near-duplicates (MinHash LSH over word shingles) of one column, first seen wins.

Two instances run in a pipeline: `dedup_documents` on `text` after prepare (web crawls repeat the
same page under many URLs, with a changed date or menu; exact dedup in prepare misses those), and
`dedup_instructions` on `instruction` after backtranslate (a backward model asks the same question of
many similar pages, and a hundred copies of one instruction teach one answer a hundred times).

A row is a near-duplicate when the Jaccard similarity of its set of word n-grams (lowercased, words
as in `parsing.words`) with a row kept earlier reaches `threshold`. MinHash (`num_perm` hashes,
datasketch's "affine32" scheme, computed here in numpy with the same values) estimates that
similarity; LSH finds the candidates: the kept rows that agree with the row on all `r` hashes of at
least one of `b` bands (datasketch's optimal b, r for the threshold: b=9 bands of r=13 at 0.8 with
128 hashes). With `verify` (default) every candidate is checked against its stored signature, so a
pair well below the threshold that LSH happens to put in one bucket (about 8% of pairs at Jaccard 0.7)
is not dropped. Dropped rows are rejected `near_duplicate` with `duplicate_of` (the id of the kept
row, the earliest one in input order when several match) and `duplicate_similarity` (the estimated
Jaccard). A row whose field has no words is kept and not indexed.

The index is ours, in numpy, because datasketch's `MinHashLSH` (Python dicts of lists keyed by
bytes) took 4.1-4.3 KB of RSS per kept row (measured as below), 4 GiB per million. Per band, a sorted
array of the kept rows' 64-bit band hashes with their row numbers beside it (12 bytes per row and
band; the rows sharing a band hash sit side by side, so the candidates are exactly MinHashLSH's,
barring a 64-bit hash collision), searched by bisection; new rows wait in a small dict per band that
is merged into the arrays every 8,192 rows, one band at a time (a merge briefly needs one band's
arrays twice, not the whole index), and the heap is trimmed after each merge (glibc `malloc_trim`,
else the replaced arrays stay resident as holes: +8% RSS). The ids are utf-8 bytes end to end with
an end offset each.

The signatures for `verify` (uint32 x `num_perm`: 512 bytes) are read only for a row's LSH candidates
(most rows have none), so they are not kept in RAM: each kept row's goes to an anonymous scratch file
(row k at byte 512 k), written 1,024 rows at a time (the newest wait in RAM and are read from there),
and a candidate's is read back with one `os.pread` (not a memory map: mapped file pages count in the
RSS). The file is made in the directory `BACKFORTH_TMPDIR` names when set, else the system's temp dir
(`tempfile`: TMPDIR, /tmp); it has no name (POSIX), and goes with `release()`, with the stage
object, or with the process. Disk: 512 bytes per kept row, 512 MB per million (in the OS page cache
while it is recent, which the kernel can write back and drop: not this process's RSS).

Memory per kept row (128 hashes, b=9 r=13, 12-character ids): band arrays 9 x 12 = 108 bytes, ids
12 + 8: 128 bytes by construction, plus at most ~15 MB for the insert buffer and 512 KiB of
unwritten signatures. Measured (RSS of a fresh process before and after indexing 1,000,000 distinct
synthetic 12-30-word texts with 12-character ids, numpy 2.4, Python 3.11, glibc, ext4): 132-133 bytes
per kept row at 1M (145 at 400k, 152-157 at 200k: the bounded buffers amortised), 126 MiB per
million; the process high-water mark (merge transients included) 163-168 bytes per row; back to +2-3
MB after `release()`; the scratch file 512 bytes per kept row. (With the signatures in RAM, as before:
644 bytes per kept row at 1M, high-water 676-682.) Without `verify` there is no file and the same
RAM (131 bytes per kept row at 1M). The same per row at any size: no per-row Python objects. Speed, one core (shared), the same
texts through both implementations with identical results: 8-20-word instructions ~32,000 rows/s
(datasketch MinHash + MinHashLSH: ~17,000), 300-700-word documents ~3,300 rows/s (datasketch:
~2,350); the MinHash itself (SHA-1 per shingle) is most of the time. The scratch file costs no
measurable speed (side by side in one process, identical results: 200,000 instructions with 5% near-
copies 28,200-28,300 rows/s with the signatures in RAM, 28,500-29,000 spilled, 3,903 preads; with 40%
near-copies 27,200-27,800 vs 28,000-28,200, 30,366 preads; 10,000 documents 3,200-3,300 both).
Beyond tens of millions of rows, dedup in shards or with a dedicated tool.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import weakref
from array import array
from functools import lru_cache
from typing import Any

import numpy as np

from ..config import NearDedupConfig
from .base import Stage
from .parsing import words

_BLOCK = 1024  # signatures written to the scratch file at a time (the newest wait in RAM): 512 KiB
_MERGE_AT = 8192  # rows buffered before the band arrays are merged
_malloc_trim = None  # glibc's, found on first use (False where there is none)
_pread = getattr(os, "pread", None)


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


def _fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer, as datasketch's affine32 scheme applies it to each shingle hash."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def _trim_heap() -> None:
    """Give the allocator's free pages back to the OS (glibc): the arrays replaced by a merge leave holes
    in the heap that would otherwise stay resident."""
    global _malloc_trim
    if _malloc_trim is None:
        try:
            import ctypes

            _malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


class _SpillRows:
    """Fixed-width numpy rows, appended one by one to an anonymous scratch file (row k at byte
    k * row size) and read back one by one with `os.pread`. The newest rows wait in RAM until
    `_BLOCK` of them are written at once; a read of one of those is served from RAM. The file is made
    on the first write, in `BACKFORTH_TMPDIR` when that is set, else the system's temp dir; on POSIX it
    has no name (deleted at creation), so it goes with `close()`, with this object, or with the process."""

    def __init__(self, width: int, dtype):
        self.width, self.dtype = width, np.dtype(dtype)
        self.row_bytes = width * self.dtype.itemsize
        self.n = self.written = 0  # rows appended; rows of those in the file
        self.tail = bytearray()  # rows written..n, not yet in the file
        self.file = None
        self._finalizer = None

    def _open(self) -> None:
        where = os.environ.get("BACKFORTH_TMPDIR") or None
        try:
            self.file = tempfile.TemporaryFile(dir=where, prefix="backforth-dedup-", buffering=0)
        except OSError as e:
            raise OSError(f"near-dedup: cannot make its scratch file in {where or tempfile.gettempdir()} "
                          f"({e}); set BACKFORTH_TMPDIR to a writable directory") from e
        self._finalizer = weakref.finalize(self, self.file.close)

    def append(self, values: np.ndarray) -> None:
        self.tail += np.ascontiguousarray(values, dtype=self.dtype).tobytes()
        self.n += 1
        if self.n - self.written >= _BLOCK:
            self.flush()

    def flush(self) -> None:
        if not self.tail:
            return
        if self.file is None:
            self._open()
        self.file.seek(self.written * self.row_bytes)  # where the rows go, even after a failed write
        with memoryview(self.tail) as view:
            done = 0
            while done < len(view):
                done += self.file.write(view[done:])
        self.written = self.n
        self.tail.clear()

    def __getitem__(self, key: int) -> np.ndarray:
        if not 0 <= key < self.n:
            raise IndexError(f"signature row {key} of {self.n}")
        size = self.row_bytes
        if key >= self.written:
            at = (key - self.written) * size
            data = bytes(self.tail[at:at + size])
        elif _pread is not None:
            data = _pread(self.file.fileno(), size, key * size)
        else:  # no pread (Windows)
            self.file.seek(key * size)
            data = self.file.read(size)
        if len(data) != size:
            raise OSError(f"near-dedup: the scratch file is short at signature row {key} of {self.n}")
        return np.frombuffer(data, dtype=self.dtype)

    def close(self) -> None:
        """Close the scratch file (deleting it) and drop the unwritten rows."""
        if self._finalizer is not None:
            self._finalizer()
        self.file, self.tail = None, bytearray()

    def ram_nbytes(self) -> int:
        return len(self.tail)

    def disk_nbytes(self) -> int:
        return self.written * self.row_bytes


class _Ids:
    """Strings by position: utf-8 bytes end to end and their end offsets (~20 bytes for a 12-character id)."""

    def __init__(self):
        self.data, self.ends = bytearray(), array("Q")

    def append(self, s: str) -> None:
        self.data += s.encode("utf-8", "surrogatepass")
        self.ends.append(len(self.data))

    def __getitem__(self, key: int) -> str:
        start = self.ends[key - 1] if key else 0
        return self.data[start:self.ends[key]].decode("utf-8", "surrogatepass")

    def __len__(self) -> int:
        return len(self.ends)

    def nbytes(self) -> int:
        return len(self.data) + self.ends.itemsize * len(self.ends)


class BandIndex:
    """LSH over `bands` bands of `rows` hashes: which kept rows agree with a signature on a whole band.

    Per band: the 64-bit hashes of the band's values for the merged rows, sorted (int64), and the
    row numbers in the same order (uint32), plus a dict of the rows added since the last merge
    (band hash -> row number, or a list of them when several rows share it)."""

    def __init__(self, bands: int, rows: int):
        self.b, self.r = bands, rows
        self.hashes = [np.empty(0, dtype=np.int64) for _ in range(bands)]
        self.keys = [np.empty(0, dtype=np.uint32) for _ in range(bands)]
        self.recent: list[dict[int, Any]] = [{} for _ in range(bands)]
        self.n_recent = 0

    def band_hashes(self, sig: np.ndarray) -> list[int]:
        # Python's bytes hash (SipHash, 64 bits): fast, and random per process, which is fine because
        # the index lives in one process (a resumed run rebuilds it through `observe`).
        raw, w = sig[:self.b * self.r].tobytes(), 4 * self.r
        return [hash(raw[i:i + w]) for i in range(0, len(raw), w)]

    def add(self, key: int, hs: list[int]) -> None:
        for recent, h in zip(self.recent, hs):
            old = recent.get(h)
            if old is None:
                recent[h] = key
            elif isinstance(old, list):
                old.append(key)
            else:
                recent[h] = [old, key]
        self.n_recent += 1
        if self.n_recent >= _MERGE_AT:
            self.merge()

    def candidates(self, hs: list[int]) -> list[int]:
        """Every indexed row sharing a band with `hs`, ascending (a row may appear more than once)."""
        found: list[int] = []
        q = np.array(hs, dtype=np.int64)
        for band, h in enumerate(hs):
            arr = self.hashes[band]
            if len(arr):
                hq = q[band]
                lo = int(arr.searchsorted(hq))
                if lo < len(arr) and arr[lo] == hq:
                    hi = int(arr.searchsorted(hq, side="right"))
                    found.extend(self.keys[band][lo:hi].tolist())
            hit = self.recent[band].get(h)
            if isinstance(hit, list):
                found.extend(hit)
            elif hit is not None:
                found.append(hit)
        found.sort()
        return found

    def merge(self) -> None:
        for band, recent in enumerate(self.recent):
            hs, ks = [], []
            for h, k in recent.items():
                if isinstance(k, list):
                    hs.extend([h] * len(k))
                    ks.extend(k)
                else:
                    hs.append(h)
                    ks.append(k)
            recent.clear()
            h_new = np.array(hs, dtype=np.int64)
            order = np.argsort(h_new, kind="stable")
            h_new, k_new = h_new[order], np.array(ks, dtype=np.uint32)[order]
            at = self.hashes[band].searchsorted(h_new, side="right")
            self.hashes[band] = np.insert(self.hashes[band], at, h_new)
            self.keys[band] = np.insert(self.keys[band], at, k_new)
        self.n_recent = 0
        _trim_heap()

    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.hashes) + sum(a.nbytes for a in self.keys)


class NearDedup(Stage):
    """Near-duplicate removal over `field`; `name` is the stage's (`dedup_documents`, `dedup_instructions`)."""

    def __init__(self, cfg: NearDedupConfig, *, name: str, field: str):
        try:
            from datasketch import MinHash
        except ImportError:
            raise ImportError(f"{name}: near-duplicate removal needs datasketch>=2.0: pip install 'datasketch>=2.0' "
                              f"(or set {name}.enabled=false)") from None

        self.cfg, self.name, self.field = cfg, name, field
        self._MinHash = MinHash
        # datasketch's permutations (a odd, b) for the seed, drawn once: MinHash() would draw them for every row.
        self._perm = MinHash(num_perm=cfg.num_perm, seed=cfg.seed, scheme="affine32").permutations
        self._a, self._b = self._perm[0].astype(np.uint32), self._perm[1].astype(np.uint32)
        self._kept = 0
        self._index: BandIndex | None = BandIndex(*lsh_params(cfg.threshold, cfg.num_perm))
        self._ids: _Ids | None = _Ids()  # kept rows in insertion order (their key is the position here)
        self._sig_rows: _SpillRows | None = _SpillRows(cfg.num_perm, np.uint32) if cfg.verify else None

    def settings(self) -> dict[str, Any]:
        return {"field": self.field, **self.cfg.model_dump(exclude={"enabled"})}

    def hashvalues(self, text: str) -> np.ndarray | None:
        """The MinHash signature of `text`'s shingles (uint32 x num_perm, the values datasketch's
        `MinHash(scheme="affine32").update_batch` gives), or None when it has no words."""
        grams = shingles(text, self.cfg.ngram)
        if not grams:
            return None
        sha1 = hashlib.sha1
        # datasketch's sha1_hash32: the first 4 bytes of each SHA-1 digest, little-endian
        hv = np.frombuffer(b"".join([sha1(g).digest() for g in grams]), dtype="<u4")[::5]
        hv = _fmix32(hv.astype(np.uint32))
        return (hv[:, None] * self._a + self._b).min(axis=0)

    def signature(self, text: str):
        """The datasketch MinHash of `text`'s shingles, or None when it has no words."""
        hv = self.hashvalues(text)
        if hv is None:
            return None
        return self._MinHash(seed=self.cfg.seed, hashvalues=hv, permutations=self._perm, scheme="affine32")

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

    def observe(self, row: dict) -> None:
        hv = self.hashvalues(row.get(self.field) or "")
        if hv is not None:
            self._insert(row["id"], hv)

    def apply(self, row: dict, results: list) -> str | None:
        hv = self.hashvalues(row.get(self.field) or "")
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
        _trim_heap()

    @property
    def kept(self) -> int:
        return self._kept

    @property
    def _sigs(self) -> np.ndarray:
        """The stored signatures as one array, read back from the scratch file (for inspection)."""
        if self._sig_rows is None:
            return np.empty((0, self.cfg.num_perm), dtype=np.uint32)
        return np.array([self._sig_rows[k] for k in range(self._sig_rows.n)], dtype=np.uint32).reshape(-1, self.cfg.num_perm)

    def index_nbytes(self) -> int:
        """Bytes of RAM held by the index's arrays (band arrays, ids, the signatures not yet written to
        the scratch file), not counting the insert buffer."""
        sigs = self._sig_rows.ram_nbytes() if self._sig_rows is not None else 0
        return self._index.nbytes() + sigs + self._ids.nbytes()

    def spill_nbytes(self) -> int:
        """Bytes of the signatures' scratch file (0 without `verify`)."""
        return self._sig_rows.disk_nbytes() if self._sig_rows is not None else 0

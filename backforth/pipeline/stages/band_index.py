"""band_index: the LSH index of near-dedup's kept rows, compact in RAM, with their signatures in a file.

LSH over `b` bands of `r` signature positions (datasketch's optimal b, r for the threshold: b=9 bands
of r=13 at 0.8 with 128 hashes): a row's candidates are the kept rows that agree with it on every
position of at least one band. datasketch's `MinHashLSH` finds the same candidates but keeps Python
dicts of lists keyed by bytes, kilobytes per kept row, so corpus-scale runs did not fit in RAM; this
index holds no Python object per row:

* `BandIndex`: per band, a sorted array of the kept rows' 64-bit band hashes with their row numbers
  beside it (12 bytes per row and band; the rows sharing a band hash sit side by side, so the
  candidates are exactly MinHashLSH's, barring a 64-bit hash collision), searched by bisection. New
  rows wait in a small dict per band, merged into the arrays every `_MERGE_AT` rows one band at a
  time (a merge briefly needs one band's arrays twice, not the whole index), and the heap is trimmed
  after each merge (`trim_heap`), else the replaced arrays stay resident as holes.
* `Ids`: the kept rows' ids, utf-8 bytes end to end with an end offset each.
* `SpillRows`: the signatures, read back only to verify a row's LSH candidates (most rows have none),
  so they are not kept in RAM: each goes to an anonymous scratch file (row k at byte k x row size),
  written `_BLOCK` rows at a time (the newest wait in RAM and are read from there), and one is read
  back with one `os.pread` (not a memory map: mapped file pages count in the process's RSS). The file
  is made in the directory `BACKFORTH_TMPDIR` names when set, else the system's temp dir (`tempfile`:
  TMPDIR, /tmp); it has no name (POSIX), and goes with `close()`, with its object, or with the process.

By construction, at 128 hashes, b=9 r=13 and 12-character ids: 9 x 12 + 12 + 8 = 128 bytes of RAM per
kept row plus the bounded buffers, and 512 bytes per kept row on disk. The pipeline's memory at scale
is measured by `python benchmarks/scale.py`.
"""

from __future__ import annotations

import os
import tempfile
import weakref
from array import array
from functools import lru_cache
from typing import Any

import numpy as np

_BLOCK = 1024  # rows written to the scratch file at a time (the newest wait in RAM): 512 KiB of signatures
_MERGE_AT = 8192  # rows buffered before the band arrays are merged
_malloc_trim = None  # glibc's, found on first use (False where there is none)
_pread = getattr(os, "pread", None)


@lru_cache(maxsize=None)
def lsh_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows per band) that datasketch finds best for `threshold` (a slow numeric search: done once)."""
    from datasketch import MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    return lsh.b, lsh.r


def trim_heap() -> None:
    """Give the allocator's free pages back to the OS (glibc's `malloc_trim`, through ctypes; a no-op
    elsewhere): arrays replaced or dropped leave holes in the heap that would otherwise stay resident."""
    global _malloc_trim
    if _malloc_trim is None:
        try:
            import ctypes

            _malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


class SpillRows:
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


class Ids:
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
        # the index lives in one process (a resumed run rebuilds it through the stage's `observe`).
        raw, w = sig[:self.b * self.r].tobytes(), 4 * self.r  # uint32 values
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
        trim_heap()

    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.hashes) + sum(a.nbytes for a in self.keys)

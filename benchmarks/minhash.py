"""MinHash signatures: datasketch's `MinHash` against our own numpy copy of its "affine32" scheme.

Near-dedup (`backforth.pipeline.stages.dedup`) needs one MinHash signature per row: `num_perm` uint32, the
minimum under each of `num_perm` affine permutations of the hashes of the row's word n-grams. datasketch
(a dependency) computes them; the pipeline used to carry a numpy reimplementation with the same values
(SHA-1 digests joined and read in one `frombuffer`, instead of one `struct.unpack` and one Python int
per shingle). Rule: keep our copy only if it is measurably better, at least 1.5x the signatures per
second or fewer bytes per signature; else use datasketch's. This script measures, in one process, on
real text (the docstrings of the Python standard library, cut into paragraphs and into documents):

* signatures per second from the same shingle sets (computed once, outside the timing), in chunks
  of 50 texts that the implementations take turns on, best of `--repeat` tries per chunk (a shared
  machine's load comes in bursts):
  - `numpy copy`: the reimplementation, kept here as the candidate;
  - `backforth`: `backforth.pipeline.stages.minhash.MinHasher`, what the stage runs (one MinHash reused);
  - `ds shared`: a new `datasketch.MinHash` per text with the permutations drawn once and passed in;
  - `ds fresh`: `datasketch.MinHash(num_perm, seed)` per text (draws its permutations every time);
  - `ds bulk`: `datasketch.MinHash.bulk` over each chunk;
* bytes per signature held in RAM (tracemalloc, over 2,000 signatures): the numpy array, a MinHash,
  a `LeanMinHash`; and what the stage stores per kept row (its scratch-file row);
* decisions: paragraphs and documents with planted near-copies (a few words replaced: exact Jaccard
  from 1.0 down to below the threshold) through the `NearDedup` stage itself, once per implementation
  (and its rows per second): the rows dropped and the kept row each names must be the same (exit
  status 1 if not); the planted copies dropped are counted by their exact Jaccard.

    python benchmarks/minhash.py [--paragraphs 3000] [--repeat 5]

Measured (numpy 2.4, datasketch 2.0.0, Python 3.11, a 2-core VM shared with other work, load 2-4;
128 hashes, seed 1; 3,000 paragraphs of 8-256 words, median 15, with 1-word shingles as for
instructions, and 597 documents of 300-700 words with 5-word shingles; three runs, 30 s each):

    signatures/s      paragraphs     documents
    numpy copy     66,900-68,000   4,820-4,920
    backforth      52,900-53,700   3,540-3,590
    ds shared      44,200-44,900   3,470-3,500
    ds fresh         9,200-9,300   2,590-2,630
    ds bulk        37,100-37,800   3,370-3,410
    numpy copy / backforth: 1.26-1.27x on paragraphs, 1.36-1.37x on documents (bar: 1.5x)

    whole stage, rows/s (verify on): paragraphs 27,700-28,400 with datasketch, 32,100-32,200 with the
    copy (1.13-1.16x); documents 2,080-2,120 vs 2,530-2,590 (1.21-1.22x)

    bytes per signature in RAM: numpy array 624; MinHash 776 with shared permutations, 1,929 with its
    own; LeanMinHash 722. Stored by the stage per kept row: 512 with either (the same uint32 values)

    decisions: identical (numpy copy, backforth, ds fresh), signatures bit-identical; paragraphs
    3,500 rows with 500 planted copies, dropped by exact Jaccard: >= 0.9 60/60, 0.8-0.9 111/193,
    0.7-0.8 12/130, < 0.7 0/117 (LSH's recall just above the threshold, the estimate's spread just
    below it), plus 46 near-duplicates among the docstrings themselves; documents 897 rows with 300
    planted copies: >= 0.9 172/175, 0.8-0.9 38/70, 0.7-0.8 0/18, < 0.7 0/37

The copy is 1.26-1.37x faster than datasketch used well (one MinHash reused and cleared per text:
no permutations drawn, no MinHash made per text), below the 1.5x bar, 1.13-1.22x at the level of the
whole stage, and no smaller where it counts (the stored row is the same 512 bytes; a signature's array
or object lives only while its row is handled), so `backforth/pipeline/minhash.py` uses datasketch.
"""

from __future__ import annotations

import argparse
import ast
import gc
import hashlib
import random
import statistics
import sys
import sysconfig
import time
import tracemalloc
from pathlib import Path

import numpy as np
from datasketch import LeanMinHash, MinHash

from backforth.config import NearDedupConfig
from backforth.pipeline.stages.dedup import NearDedup
from backforth.pipeline.stages.minhash import SCHEME, MinHasher, shingles


# --- the candidate: our numpy copy of datasketch's affine32 signature --------------------------------

def fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer, as the affine32 scheme applies it to each shingle hash."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def numpy_copy(num_perm: int, seed: int):
    a, b = MinHash(num_perm=num_perm, seed=seed, scheme=SCHEME).permutations
    sha1 = hashlib.sha1

    def signature(grams) -> np.ndarray:
        # the first 4 bytes of each SHA-1 digest, little-endian (datasketch's sha1_hash32)
        hv = np.frombuffer(b"".join([sha1(g).digest() for g in grams]), dtype="<u4")[::5]
        hv = fmix32(hv.astype(np.uint32))
        return (hv[:, None] * a + b).min(axis=0)

    return signature


# --- datasketch, used three ways ----------------------------------------------------------------------

def ds_shared(num_perm: int, seed: int):
    perm = MinHash(num_perm=num_perm, seed=seed, scheme=SCHEME).permutations

    def signature(grams) -> np.ndarray:
        m = MinHash(seed=seed, permutations=perm, scheme=SCHEME)
        m.update_batch(grams)
        return m.hashvalues

    return signature


def ds_fresh_obj(grams, num_perm: int, seed: int) -> MinHash:
    m = MinHash(num_perm=num_perm, seed=seed, scheme=SCHEME)
    m.update_batch(grams)
    return m


def ds_fresh(num_perm: int, seed: int):
    def signature(grams) -> np.ndarray:
        return ds_fresh_obj(grams, num_perm, seed).hashvalues

    return signature


def ds_bulk(num_perm: int, seed: int):
    def signatures(corpus) -> list[np.ndarray]:
        return [m.hashvalues for m in MinHash.bulk(corpus, num_perm=num_perm, seed=seed, scheme=SCHEME)]

    return signatures


# --- real text -----------------------------------------------------------------------------------------

def stdlib_paragraphs() -> list[str]:
    """Distinct paragraphs (8+ words) of the standard library's module, class and function docstrings."""
    root = Path(sysconfig.get_paths()["stdlib"])
    seen: dict[str, None] = {}
    for path in sorted(root.rglob("*.py")):
        if "site-packages" in path.parts:
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                for para in (ast.get_docstring(node) or "").split("\n\n"):
                    para = " ".join(para.split())
                    if len(para.split()) >= 8:
                        seen.setdefault(para)
    return list(seen)


def documents_from(paragraphs: list[str], rng: random.Random) -> list[str]:
    """The paragraphs' words in order, cut into documents of 300-700 words."""
    ws = " ".join(paragraphs).split()
    docs, at = [], 0
    while at + 700 <= len(ws):
        n = rng.randint(300, 700)
        docs.append(" ".join(ws[at:at + n]))
        at += n
    return docs


def with_near_copies(texts: list[str], n_copies: int, shares: tuple[float, ...], rng: random.Random):
    """`texts` with `n_copies` copies of random ones appended in random order, each with a share of its
    words (at least one) replaced by new words. Returns the rows and, per copy, (row index, source index)."""
    rows = list(texts)
    copies = []
    for _ in range(n_copies):
        src = rng.randrange(len(texts))
        ws = texts[src].split()
        for i in rng.sample(range(len(ws)), max(1, round(len(ws) * rng.choice(shares)))):
            ws[i] = f"zq{rng.randrange(10**9)}"
        copies.append((" ".join(ws), src))
    rng.shuffle(copies)
    planted = []
    for text, src in copies:
        planted.append((len(rows), src))
        rows.append(text)
    return rows, planted


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a | b else 1.0


# --- measurements --------------------------------------------------------------------------------------

def rates(impls: dict, corpus: list[set[bytes]], repeat: int, chunk: int = 50) -> dict[str, float]:
    """Signatures per second of each implementation. The corpus is timed in chunks of `chunk` texts,
    the implementations taking turns on every chunk (in a rotating order), `repeat` times; a chunk
    counts with its best time, so a burst of load from other processes costs one try, not a pass."""
    chunks = [corpus[i:i + chunk] for i in range(0, len(corpus), chunk)]
    names = list(impls)
    best = {name: [float("inf")] * len(chunks) for name in names}
    gc.collect()
    for rep in range(repeat):
        for c, part in enumerate(chunks):
            for k in range(len(names)):
                name = names[(c + rep + k) % len(names)]
                f, whole = impls[name]
                t = time.perf_counter()
                if whole:
                    f(part)
                else:
                    for grams in part:
                        f(grams)
                best[name][c] = min(best[name][c], time.perf_counter() - t)
    return {name: len(corpus) / sum(ts) for name, ts in best.items()}


def held_bytes(make, items) -> float:
    """Bytes of RAM per object that `make` returns, while 2,000 of them are held (tracemalloc)."""
    items = items[:2000]
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    kept = [make(g) for g in items]
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return (after - before - sys.getsizeof(kept)) / len(kept)


class StageWith(NearDedup):
    """The near-dedup stage with its signatures computed by `sig` (from the shingle set)."""

    def __init__(self, cfg: NearDedupConfig, sig):
        super().__init__(cfg, name="bench", field="text")
        self._sig = sig

    def hashvalues(self, text: str):
        grams = shingles(text, self.cfg.ngram)
        return self._sig(grams) if grams else None


def decisions(stage: NearDedup, rows: list[str]) -> tuple[list[tuple[str | None, str | None]], float]:
    """What the stage does with each row (reason, the kept row named), and the seconds it took."""
    out = []
    t = time.perf_counter()
    for i, text in enumerate(rows):
        row = {"id": f"r{i}", "text": text}
        out.append((stage.apply(row, []), row.get("duplicate_of")))
    return out, time.perf_counter() - t


BINS = ((0.9, 1.01), (0.8, 0.9), (0.7, 0.8), (0.0, 0.7))  # exact Jaccard of a planted copy with its source


def check_decisions(label: str, rows: list[str], planted, cfg: NearDedupConfig, sigs: dict, repeat: int) -> bool:
    """Runs the stage over `rows` once per signature implementation (`repeat` times, in turns, for its
    rows per second); prints whether the decisions are identical and how the planted copies fared."""
    stages = {"backforth": lambda: NearDedup(cfg, name="bench", field="text")}
    stages.update({name: (lambda sig=sig: StageWith(cfg, sig)) for name, sig in sigs.items()})
    runs, secs = {}, {name: float("inf") for name in stages}
    for _ in range(repeat):
        for name, make in stages.items():
            runs[name], dt = decisions(make(), rows)
            secs[name] = min(secs[name], dt)
    reference = runs["backforth"]
    same = all(run == reference for run in runs.values())
    dropped = {i for i, (reason, _) in enumerate(reference) if reason}
    sets = [shingles(t, cfg.ngram) for t in rows]
    exact = [(i, jaccard(sets[i], sets[src])) for i, src in planted]
    print(f"  {label}: {len(rows):,} rows, {len(planted)} planted copies; decisions identical "
          f"({', '.join(runs)}): {'yes' if same else 'NO'}")
    print("    stage rows/s (best of %d): " % repeat + ", ".join(f"{name} {len(rows) / s:,.0f}" for name, s in secs.items())
          + f"; numpy copy / backforth {secs['backforth'] / secs['numpy copy']:.2f}x")
    counts = []
    for lo, hi in BINS:
        inside = [i for i, j in exact if lo <= j < hi]
        counts.append(f"[{lo}, {min(hi, 1.0)}{']' if hi > 1 else ')'} {sum(i in dropped for i in inside)}/{len(inside)}")
    print(f"    planted copies dropped by exact Jaccard: {', '.join(counts)}; other rows dropped: "
          f"{len(dropped - {i for i, _ in planted})} (near-duplicates among the docstrings themselves)")
    return same


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--paragraphs", type=int, default=3000, help="paragraphs timed (the first after a seeded shuffle)")
    ap.add_argument("--repeat", type=int, default=5, help="timed tries per chunk of texts and implementation (the best counts)")
    ap.add_argument("--num-perm", type=int, default=128)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(0)

    t0 = time.perf_counter()
    paras = stdlib_paragraphs()
    docs = documents_from(paras, random.Random(1))
    rng.shuffle(paras)
    paras = paras[:args.paragraphs]
    lengths = [len(p.split()) for p in paras]
    print(f"text: {len(paras):,} stdlib docstring paragraphs ({min(lengths)}-{max(lengths)} words, median "
          f"{statistics.median(lengths):.0f}), {len(docs):,} documents of 300-700 words "
          f"({time.perf_counter() - t0:.1f}s to read); num_perm={args.num_perm}, seed={args.seed}")

    n, seed = args.num_perm, args.seed
    ours = numpy_copy(n, seed)
    corpora = {"paragraphs (1-word shingles)": [shingles(p, 1) for p in paras],
               "documents (5-word shingles)": [shingles(d, 5) for d in docs]}
    names = ("numpy copy", "backforth", "ds shared", "ds fresh", "ds bulk")
    print(f"\nsignatures per second (best of {args.repeat} tries per chunk of 50, in turns):")
    print(f"  {'':30}" + "".join(f"{name:>12}" for name in names))
    ratios = []
    for label, corpus in corpora.items():
        impls = {"numpy copy": (ours, False), "backforth": (MinHasher(ngram=1, num_perm=n, seed=seed).of_shingles, False),
                 "ds shared": (ds_shared(n, seed), False), "ds fresh": (ds_fresh(n, seed), False),
                 "ds bulk": (ds_bulk(n, seed), True)}
        r = rates(impls, corpus, args.repeat)
        print(f"  {label:30}" + "".join(f"{r[name]:>12,.0f}" for name in names))
        ratio = r["numpy copy"] / r["backforth"]
        ratios.append(ratio)
        print(f"  {'':30}numpy copy / backforth {ratio:.2f}x, / best datasketch use "
              f"{r['numpy copy'] / max(r[k] for k in names[1:]):.2f}x")
        same = all(np.array_equal(ours(g), impls["ds fresh"][0](g)) for g in corpus)
        print(f"  {'':30}signatures bit-identical to datasketch's: {'yes' if same else 'NO'}")

    sample = corpora["documents (5-word shingles)"] + corpora["paragraphs (1-word shingles)"]
    hasher = MinHasher(ngram=1, num_perm=n, seed=seed)
    perm = hasher.permutations

    def minhash(g):
        m = MinHash(seed=seed, permutations=perm, scheme=SCHEME)
        m.update_batch(g)
        return m

    sizes = {"numpy array (numpy copy, backforth)": held_bytes(ours, sample),
             "datasketch MinHash, shared permutations": held_bytes(minhash, sample),
             "datasketch MinHash(num_perm, seed)": held_bytes(lambda g: ds_fresh_obj(g, n, seed), sample),
             "datasketch LeanMinHash": held_bytes(lambda g: LeanMinHash(minhash(g)), sample)}
    print("\nbytes per signature held in RAM (tracemalloc, 2,000 held):")
    for name, size in sizes.items():
        print(f"  {name:42}{size:>8,.0f}")
    stored = hasher.of_shingles(sample[0]).nbytes
    print(f"  stored by the stage per kept row (scratch file), any implementation: {stored} "
          f"(numpy copy / backforth: {ours(sample[0]).nbytes / stored:.2f}x)")

    print("\nnear-duplicate decisions of the NearDedup stage (verify on, threshold 0.8), planted near-copies:")
    sigs = {"numpy copy": ours, "ds fresh": ds_fresh(n, seed)}
    p_rows, p_planted = with_near_copies(paras[:3000], 500, (0.03, 0.06, 0.1, 0.15, 0.25), random.Random(2))
    d_rows, d_planted = with_near_copies(docs, 300, (0.002, 0.005, 0.01, 0.02, 0.04), random.Random(3))
    ok = check_decisions("paragraphs, 1-word shingles", p_rows, p_planted,
                         NearDedupConfig(ngram=1, num_perm=n, seed=seed), sigs, 3)
    ok &= check_decisions("documents, 5-word shingles", d_rows, d_planted,
                          NearDedupConfig(ngram=5, num_perm=n, seed=seed), sigs, 3)

    smaller = ours(sample[0]).nbytes < stored
    verdict = "keep the numpy copy" if max(ratios) >= 1.5 or smaller else "use datasketch's MinHash (minhash.py does)"
    print(f"\nnumpy copy / backforth: {' and '.join(f'{x:.2f}x' for x in ratios)} the signatures per second "
          f"(bar: 1.5x), {ours(sample[0]).nbytes / stored:.2f}x the bytes stored: {verdict}")
    print(f"total {time.perf_counter() - t0:.0f}s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

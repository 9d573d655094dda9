"""dedup: near-duplicate documents and instructions (MinHash LSH), first seen wins, resume state."""

from __future__ import annotations

import os
import random

import pytest

from backforth.config import DedupDocumentsConfig, DedupInstructionsConfig, NearDedupConfig
from backforth.pipeline.stages.dedup import NearDedup
from backforth.pipeline.stages.minhash import shingles

rng = random.Random(7)
VOCAB = [f"{a}{b}" for a in ("ka", "lo", "mi", "ne", "su", "ta", "vo", "ri") for b in range(60)]


def doc(n: int = 120) -> str:
    return " ".join(rng.choice(VOCAB) for _ in range(n))


def one_word_changed(text: str, at: int = 50) -> str:
    ws = text.split()
    ws[at] = "CHANGED"
    return " ".join(ws)


def documents(**cfg) -> NearDedup:
    return NearDedup(DedupDocumentsConfig(**cfg), name="dedup_documents", field="text")


def instructions(**cfg) -> NearDedup:
    return NearDedup(DedupInstructionsConfig(**cfg), name="dedup_instructions", field="instruction")


def run(st: NearDedup, rows: list[dict]) -> list[str | None]:
    assert all(st.requests(r) == [] for r in rows)  # no model call
    return [st.apply(r, []) for r in rows]


def test_shingles():
    assert shingles("The cat, the CAT!", 2) == {b"the cat", b"cat the"}
    assert shingles("one two", 5) == {b"one two"}  # shorter than n: the whole text is one shingle
    assert shingles("  ...  ", 3) == set()


def test_a_document_with_one_word_changed_is_dropped_as_a_duplicate_of_the_first():
    first = doc()
    rows = [{"id": "a", "text": first}, {"id": "b", "text": doc()}, {"id": "c", "text": one_word_changed(first)},
            {"id": "d", "text": first.upper() + " !"}]
    assert run(documents(), rows) == [None, None, "near_duplicate", "near_duplicate"]
    assert rows[2]["duplicate_of"] == "a" and rows[3]["duplicate_of"] == "a"
    assert 0.8 <= rows[2]["duplicate_similarity"] < 1.0
    assert rows[3]["duplicate_similarity"] == 1.0  # case and punctuation do not count
    assert "duplicate_of" not in rows[0] and "duplicate_of" not in rows[1]


def test_distinct_documents_are_all_kept():
    rows = [{"id": str(i), "text": doc()} for i in range(300)]
    st = documents()
    assert run(st, rows) == [None] * 300
    assert st.kept == 300


def test_the_earliest_kept_row_is_named_when_several_match():
    base = doc()
    rows = [{"id": "x", "text": doc()}, {"id": "first", "text": base}, {"id": "second", "text": one_word_changed(base, 10)},
            {"id": "third", "text": one_word_changed(base, 90)}]
    assert run(documents(), rows) == [None, None, "near_duplicate", "near_duplicate"]
    assert rows[2]["duplicate_of"] == rows[3]["duplicate_of"] == "first"


def test_threshold_and_ngram_are_settings():
    base = doc(40)
    edited = " ".join(w if i % 8 else "EDIT" for i, w in enumerate(base.split()))  # every 8th word changed
    strict, loose = documents(threshold=0.95), documents(threshold=0.3, ngram=1)
    assert run(strict, [{"id": "a", "text": base}, {"id": "b", "text": edited}]) == [None, None]
    assert run(loose, [{"id": "a", "text": base}, {"id": "b", "text": edited}]) == [None, "near_duplicate"]
    assert strict.settings() != loose.settings()
    assert documents().settings()["field"] == "text" and "enabled" not in documents().settings()


def test_instructions_near_duplicates():
    rows = [{"id": "1", "instruction": "What are the health benefits of drinking green tea every day?"},
            {"id": "2", "instruction": "What are the health benefits of drinking green tea each day?"},
            {"id": "3", "instruction": "what are the health benefits of drinking green tea every day"},
            {"id": "4", "instruction": "How do I repot a snake plant without damaging its roots?"},
            {"id": "5", "instruction": "How can I tell whether my sourdough starter is ready to use?"}]
    assert run(instructions(), rows) == [None, "near_duplicate", "near_duplicate", None, None]
    assert rows[1]["duplicate_of"] == rows[2]["duplicate_of"] == "1"


def test_rows_without_words_are_kept_and_not_indexed():
    st = instructions()
    rows = [{"id": "a", "instruction": ""}, {"id": "b"}, {"id": "c", "instruction": "?!"}]
    assert run(st, rows) == [None, None, None]
    assert st.kept == 0


def test_resume_via_observe_keeps_the_state():
    texts = [doc() for _ in range(5)]
    done = [{"id": f"d{i}", "text": t} for i, t in enumerate(texts)]
    first = documents()
    assert run(first, done) == [None] * 5
    resumed = documents()  # a new process: the kept rows of the stage file are observed again
    for row in done:
        resumed.observe(row)
    later = [{"id": "n1", "text": one_word_changed(texts[3])}, {"id": "n2", "text": doc()}]
    assert run(resumed, later) == ["near_duplicate", None]
    assert later[0]["duplicate_of"] == "d3"
    fresh = documents()  # without observe the duplicate would slip through
    assert run(fresh, [dict(later[0])]) == [None]


def test_verification_keeps_pairs_that_lsh_only_happens_to_bucket_together():
    local = random.Random(3)
    base = [f"w{i}" for i in range(60)]
    caught = 0
    for _ in range(150):  # pairs at Jaccard ~0.7: LSH (b=9, r=13) makes ~8% of them candidates
        ws = list(base)
        for i in local.sample(range(60), 10):
            ws[i] = f"x{local.randrange(10**6)}"
        pair = [{"id": "a", "text": " ".join(base)}, {"id": "b", "text": " ".join(ws)}]
        if run(NearDedup(NearDedupConfig(ngram=1, verify=False), name="d", field="text"), [dict(r) for r in pair])[1]:
            verified = NearDedup(NearDedupConfig(ngram=1), name="d", field="text")
            m = verified.signature(pair[1]["text"])
            verified.observe(pair[0])
            estimate = float((verified._sigs[0] == m.hashvalues).mean())
            assert run(verified, [pair[1]]) == [None if estimate < 0.8 else "near_duplicate"]
            caught += estimate < 0.8
    assert caught >= 1


def test_many_rows_grow_the_signature_store():
    st = instructions()
    rows = [{"id": str(i), "instruction": f"question number {i} about topic {i * 7919 % 10007} and {i}"} for i in range(1500)]
    reasons = run(st, rows)
    assert st.kept + reasons.count("near_duplicate") == 1500
    assert st._sigs.shape[0] >= st.kept


@pytest.mark.parametrize("bad", [{"threshold": 0}, {"threshold": 0.99}, {"ngram": 0}, {"num_perm": 4}, {"colour": 1}])
def test_config_is_validated(bad):
    with pytest.raises(ValueError):
        DedupDocumentsConfig(**bad)


# --- the index against brute force, growth and resume -------------------------------------------------

def planted(n: int, seed: int = 11) -> list[str]:
    """`n` texts of 30 distinct words; about a third are copies of an earlier text (itself maybe a copy)
    with k words replaced, k = 0..8: word Jaccard 1.0, 0.94, 0.88, 0.82, 0.76, 0.71, 0.67, 0.62, 0.58."""
    local = random.Random(seed)
    vocab = [f"v{i}" for i in range(20000)]
    made: list[list[str]] = []
    for _ in range(n):
        if made and local.random() < 0.35:
            ws = list(local.choice(made))
            for i in local.sample(range(len(ws)), local.randrange(9)):
                ws[i] = local.choice(vocab)
        else:
            ws = local.sample(vocab, 30)
        made.append(ws)
    return [" ".join(ws) for ws in made]


def brute_force(st: NearDedup, texts: list[str]) -> list[tuple[str | None, str | None]]:
    """LSH semantics over all pairs: a kept row is a candidate when it equals the new row on every hash
    of at least one band; with verify the earliest candidate whose estimate reaches the threshold wins."""
    from backforth.pipeline.stages.band_index import lsh_params

    b, r = lsh_params(st.cfg.threshold, st.cfg.num_perm)
    kept: list[tuple[str, object]] = []
    out = []
    for i, text in enumerate(texts):
        sig = st.signature(text).hashvalues
        match = None
        for kid, ksig in kept:
            if any((sig[j * r:(j + 1) * r] == ksig[j * r:(j + 1) * r]).all() for j in range(b)):
                if not st.cfg.verify or (sig == ksig).mean() >= st.cfg.threshold:
                    match = kid
                    break
        if match is None:
            kept.append((f"t{i}", sig))
        out.append(("near_duplicate" if match else None, match))
    return out


def test_the_index_finds_exactly_the_duplicates_that_all_pairs_do():
    texts = planted(400)
    dropped = {}
    for verify in (True, False):
        st = instructions(verify=verify)
        rows = [{"id": f"t{i}", "instruction": t} for i, t in enumerate(texts)]
        got = [(reason, row.get("duplicate_of")) for reason, row in zip(run(st, rows), rows)]
        assert got == brute_force(instructions(verify=verify), texts)
        dropped[verify] = sum(reason is not None for reason, _ in got)
        assert st.kept == 400 - dropped[verify]
    assert 30 <= dropped[True] < dropped[False]  # verification kept some candidates below the threshold
    sims = [row["duplicate_similarity"] for row in rows if "duplicate_similarity" in row]
    assert sims and all(s is None for s in sims)  # without verify: no estimate


def test_the_candidates_are_datasketchs():
    from datasketch import MinHashLSH

    from backforth.pipeline.stages.band_index import lsh_params

    st = instructions()
    lsh = MinHashLSH(num_perm=128, params=lsh_params(0.8, 128))
    for i, text in enumerate(planted(300, seed=5)):
        m = st.signature(text)
        hv = st.hashvalues(text)
        assert sorted(set(st._index.candidates(st._index.band_hashes(hv)))) == sorted(lsh.query(m))
        lsh.insert(i, m)
        st._insert(f"t{i}", hv)


def test_growth_past_the_first_block_and_merges_changes_nothing(monkeypatch):
    from backforth.pipeline.stages import band_index

    texts = planted(700, seed=3)
    rows = [{"id": f"t{i}", "instruction": t} for i, t in enumerate(texts)]
    expected_rows = [dict(r) for r in rows]
    expected = run(instructions(), expected_rows)  # no merge, no signature written to the scratch file
    monkeypatch.setattr(band_index, "_BLOCK", 64)  # signatures written 64 at a time, a merge every 50
    monkeypatch.setattr(band_index, "_MERGE_AT", 50)
    st = instructions()
    assert run(st, rows) == expected and rows == expected_rows
    assert st._sig_rows.written > 5 * 64 and st._index.n_recent < 50 and len(st._index.hashes[0]) >= 500
    assert st.kept == expected.count(None)


def test_resume_through_observe_across_merges_gives_the_uninterrupted_result(monkeypatch):
    from backforth.pipeline.stages import band_index

    monkeypatch.setattr(band_index, "_BLOCK", 64)
    monkeypatch.setattr(band_index, "_MERGE_AT", 50)
    texts = planted(600, seed=9)
    rows = [{"id": f"t{i}", "instruction": t} for i, t in enumerate(texts)]
    whole = [dict(r) for r in rows]
    expected = run(instructions(), whole)
    first = [dict(r) for r in rows[:350]]
    assert run(instructions(), first) == expected[:350]
    resumed = instructions()
    for row, reason in zip(first, expected[:350]):
        if reason is None:  # the runner observes the rows the stage file holds as done
            resumed.observe(row)
    rest = [dict(r) for r in rows[350:]]
    assert run(resumed, rest) == expected[350:] and rest == whole[350:]
    assert resumed.kept == expected.count(None)


def test_release_drops_the_index_and_keeps_the_count():
    st = documents()
    run(st, [{"id": "a", "text": doc()}, {"id": "b", "text": doc()}])
    st.release()
    assert st.kept == 2 and st._index is None and st._sig_rows is None


def test_release_deletes_the_scratch_file_of_the_signatures(tmp_path, monkeypatch):
    from backforth.pipeline.stages import band_index

    monkeypatch.setattr(band_index, "_BLOCK", 4)
    monkeypatch.setenv("BACKFORTH_TMPDIR", str(tmp_path))
    st = documents()
    run(st, [{"id": str(i), "text": doc()} for i in range(10)])
    f = st._sig_rows.file
    assert st.spill_nbytes() == os.fstat(f.fileno()).st_size == 8 * 128 * 4  # 2 rows still in RAM
    if os.path.exists(f"/proc/self/fd/{f.fileno()}"):  # Linux: in BACKFORTH_TMPDIR, and without a name
        target = os.readlink(f"/proc/self/fd/{f.fileno()}")
        assert target.startswith(str(tmp_path)) and target.endswith("(deleted)")
    assert list(tmp_path.iterdir()) == []
    st.release()
    assert f.closed and st._sig_rows is None and st.kept == 10


def test_the_scratch_file_goes_with_the_stage_object(monkeypatch):
    import gc

    from backforth.pipeline.stages import band_index

    monkeypatch.setattr(band_index, "_BLOCK", 2)
    st = documents()
    run(st, [{"id": str(i), "text": doc()} for i in range(5)])
    f = st._sig_rows.file
    del st
    gc.collect()
    assert f.closed


def test_without_verify_there_is_no_scratch_file():
    st = documents(verify=False)
    run(st, [{"id": str(i), "text": doc()} for i in range(5)])
    assert st._sig_rows is None and st.spill_nbytes() == 0


def test_the_spilled_signatures_are_the_signatures_and_give_the_brute_force_result(monkeypatch):
    from backforth.pipeline.stages import band_index

    monkeypatch.setattr(band_index, "_BLOCK", 8)  # candidates both in the file and in the unwritten tail
    reads = []
    monkeypatch.setattr(band_index, "_pread", lambda fd, n, at: reads.append(at) or os.pread(fd, n, at))
    texts = planted(400, seed=13)
    st = instructions()
    rows = [{"id": f"t{i}", "instruction": t} for i, t in enumerate(texts)]
    got = [(reason, row.get("duplicate_of")) for reason, row in zip(run(st, rows), rows)]
    assert reads and all(at % 512 == 0 for at in reads)  # candidates read from the file
    assert got == brute_force(instructions(), texts)
    kept = [t for t, (reason, _) in zip(texts, got) if reason is None]
    assert 0 < st._sig_rows.written < st.kept == len(kept) and st._sig_rows.written % 8 == 0
    assert (st._sigs == [st.hashvalues(t) for t in kept]).all()
    sims = [row["duplicate_similarity"] for row in rows if "duplicate_similarity" in row]
    assert sims and all(0.8 <= s <= 1.0 for s in sims)


def test_signatures_are_datasketchs_bit_for_bit():
    """Our vectorised signature is datasketch's MinHash (affine32) of the same shingles, bit for bit."""
    from datasketch import MinHash

    from backforth.pipeline.stages.minhash import SCHEME, MinHasher

    hasher = MinHasher(ngram=3, num_perm=64, seed=7)
    for text in ("one two", "a b c d e f g h i j k l", "Glass recycling starts with sorting by colour " * 3):
        ds = MinHash(num_perm=64, seed=7, scheme=SCHEME)
        ds.update_batch(shingles(text, 3))
        assert (hasher.hashvalues(text) == ds.hashvalues).all()

"""dedup: near-duplicate documents and instructions (MinHash LSH), first seen wins, resume state."""

from __future__ import annotations

import random

import pytest

from backforth.config import DedupDocumentsConfig, DedupInstructionsConfig, NearDedupConfig
from backforth.pipeline.dedup import NearDedup, shingles

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

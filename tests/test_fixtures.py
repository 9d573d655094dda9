"""The labelled real-document fixtures under benchmarks/data/ (issue 22) are well formed: they parse,
ids are unique, every row has its fields, labels are valid, and every injected page comes from a clean
page of the same set. Fast, no models."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from backforth.config import InputConfig
from backforth.corpus import read_documents

DATA = Path(__file__).resolve().parent.parent / "benchmarks" / "data"
TYPES = {"pydoc-topic", "python-howto", "python-tutorial", "python-library", "python-nav", "package-description",
         "man-page", "licence-text", "changelog", "web-junk"}
DOC_FIELDS = ("id", "type", "source", "licence", "label", "why", "text")
INJ_FIELDS = ("id", "base_id", "kind", "injected", "injection", "position", "wording", "split", "target", "text")


def rows(name: str) -> list[dict]:
    with open(DATA / name, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


@pytest.fixture(scope="module")
def docs() -> list[dict]:
    return rows("real_documents.jsonl")


@pytest.fixture(scope="module")
def injection() -> list[dict]:
    return rows("injection_pages.jsonl")


@pytest.mark.parametrize("name", ["real_documents.jsonl", "real_corpus.jsonl", "injection_pages.jsonl",
                                  "real_documents_labels.jsonl", "web_junk.jsonl", "injection_wordings.jsonl",
                                  "prefilter_labels.jsonl", "prefilter_labels_paper.jsonl"])
def test_each_file_parses_and_ids_are_unique(name):
    found = rows(name)
    key = "wording" if name == "injection_wordings.jsonl" else "id"
    ids = [r[key] for r in found]
    assert found and all(isinstance(i, str) and i for i in ids)
    assert [i for i, n in Counter(ids).items() if n > 1] == []


def test_labelled_documents_have_every_field_and_a_valid_label(docs):
    for d in docs:
        assert all(isinstance(d.get(f), str) and d[f].strip() for f in DOC_FIELDS), d["id"]
        assert d["type"] in TYPES, d["id"]
        assert d["label"] in ("good", "junk"), d["id"]
        assert 300 <= len(d["text"]) <= 6000, (d["id"], len(d["text"]))
    assert all(d["label"] == "junk" and d["licence"] == "Apache-2.0" and d["source"] == "written for backforth"
               for d in docs if d["type"] == "web-junk")


def test_the_labelled_set_is_big_and_mixed(docs):
    labels = Counter(d["label"] for d in docs)
    assert len(docs) >= 200
    assert labels["junk"] / len(docs) >= 0.35
    real = [d for d in docs if d["type"] != "web-junk"]
    assert len(real) >= 150
    assert Counter(d["type"] for d in docs)["web-junk"] >= 40
    assert len({d["text"] for d in docs}) == len(docs)  # no page twice


def test_every_real_document_has_its_written_label(docs):
    labels = {r["id"]: r for r in rows("real_documents_labels.jsonl")}
    real = {d["id"]: d for d in docs if d["type"] != "web-junk"}
    assert set(labels) == set(real)
    for i, d in real.items():
        assert (labels[i]["label"], labels[i]["why"]) == (d["label"], d["why"])


def test_corpus_rows_have_their_fields_and_no_labels():
    corpus = rows("real_corpus.jsonl")
    assert len(corpus) >= 450
    for r in corpus:
        assert all(isinstance(r.get(f), str) and r[f].strip() for f in ("id", "type", "source", "licence", "text")), r["id"]
        assert "label" not in r and "why" not in r
        assert r["type"] in TYPES
        assert 300 <= len(r["text"]) <= 6000, (r["id"], len(r["text"]))


def test_the_prefilter_labels_cover_the_corpus_that_reached_a_model():
    # benchmarks/prefilter.py's fixture: the demo's scorer on real_corpus.jsonl (a pre-filter run and
    # the run of what it skipped); every document that no earlier step (prepare, dedup) rejected
    corpus = {r["id"] for r in rows("real_corpus.jsonl")}
    labels = rows("prefilter_labels.jsonl")
    assert len(labels) >= 400 and {r["id"] for r in labels} <= corpus
    for r in labels:
        assert isinstance(r["kept"], bool) and isinstance(r["exported"], bool) and r["text"].strip()
        assert r["kept"] or not r["exported"], r["id"]  # only a kept pair is exported
        assert set(r["tokens"]) <= {"page_kind", "backtranslate", "curate", "rewrite"} and r["tokens"]["page_kind"] > 0
    assert 0.2 < sum(r["kept"] for r in labels) / len(labels) < 0.8  # something to learn, something to skip


def test_the_paper_rule_labels_cover_the_same_corpus_with_the_papers_share_kept():
    # the same corpus labelled by the paper's pipeline (no page kind, Humpback's rubric, the best 13.6%
    # by expected score kept; docs/prefilter.md), for `benchmarks/prefilter.py --labels`
    corpus = {r["id"] for r in rows("real_corpus.jsonl")}
    labels = rows("prefilter_labels_paper.jsonl")
    assert len(labels) >= 400 and {r["id"] for r in labels} <= corpus
    for r in labels:
        assert isinstance(r["kept"], bool) and isinstance(r["exported"], bool) and r["text"].strip()
        assert r["kept"] or not r["exported"], r["id"]
        assert set(r["tokens"]) <= {"backtranslate", "curate", "rewrite"} and r["tokens"]["backtranslate"] > 0  # no page kind
    assert 0.12 < sum(r["kept"] for r in labels) / len(labels) < 0.15


def test_the_fixtures_read_as_backforth_input():
    for name in ("real_documents.jsonl", "real_corpus.jsonl", "injection_pages.jsonl"):
        read = list(read_documents(InputConfig(path=str(DATA / name))))
        assert len(read) == len(rows(name))
        assert [r for r in read if r.get("_reject")] == []


def test_injected_pages_come_from_clean_pages_of_the_same_set(injection, docs):
    by_id = {r["id"]: r for r in injection}
    clean = {r["base_id"]: r for r in injection if not r["injected"]}
    doc_by_id = {d["id"]: d for d in docs}
    for r in injection:
        assert set(INJ_FIELDS) <= set(r), r["id"]
        assert r["kind"] in ("junk", "good") and r["split"] in ("dev", "heldout") and r["target"] in ("rater", "hijack")
        assert r["base_id"] in clean, r["id"]
        base = clean[r["base_id"]]
        assert base["kind"] == r["kind"] and by_id[base["id"]] is base
        assert doc_by_id[r["base_id"]]["label"] == r["kind"]
        assert base["text"] == doc_by_id[r["base_id"]]["text"]
        if r["injected"]:
            assert r["position"] in ("top", "middle", "bottom") and r["wording"] and r["injection"]
            assert r["injection"] in r["text"] and r["text"].replace(r["injection"], "").split() == base["text"].split()
            assert r["target"] == ("rater" if r["kind"] == "junk" else "hijack")
        else:
            assert r["injection"] is None and r["position"] is None and r["wording"] is None


def test_injection_covers_wordings_positions_and_a_heldout_share(injection):
    wordings = {w["wording"]: w for w in rows("injection_wordings.jsonl")}
    injected = [r for r in injection if r["injected"]]
    junk, good = [r for r in injected if r["kind"] == "junk"], [r for r in injected if r["kind"] == "good"]
    assert len({r["base_id"] for r in injection if r["kind"] == "junk"}) >= 12 and len(junk) >= 36
    assert len({r["base_id"] for r in injection if r["kind"] == "good"}) >= 12 and len(good) >= 24
    assert min(Counter(r["base_id"] for r in junk).values()) >= 3
    assert min(Counter(r["base_id"] for r in good).values()) >= 2
    assert len({r["wording"] for r in junk}) >= 10 and len({r["wording"] for r in good}) >= 6
    assert {r["position"] for r in junk} == {r["position"] for r in good} == {"top", "middle", "bottom"}
    for r in injected:
        w = wordings[r["wording"]]
        assert (w["text"], w["split"], w["target"]) == (r["injection"], r["split"], r["target"])
    heldout = sum(w["split"] == "heldout" for w in wordings.values()) / len(wordings)
    assert 0.25 <= heldout <= 0.45

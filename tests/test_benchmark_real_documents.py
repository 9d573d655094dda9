"""benchmarks/real_documents.py's reading of a run: a page cut into sections is one labelled page."""

import pytest
from benchmark_scripts import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("real_documents")


def outcome(exported, score=None, kind_p=None, stage=None, reason=None):
    return {"exported": exported, "score": score, "kind_p": kind_p, "stage": stage, "reason": reason,
            "instruction": None, "response": None, "kind": None, "injection_removed": None}


def test_a_page_is_exported_when_any_of_its_sections_is(bench):
    pages = bench.by_page({
        "howto#1": outcome(False, 3.9, 0.8, "grounding", "ungrounded"),
        "howto#2": outcome(True, 3.7, 0.6),
        "howto#3": outcome(False, None, 0.3, "page_kind", "unwanted_page_kind"),
        "licence": outcome(False, None, 0.1, "page_kind", "unwanted_page_kind"),
    })
    assert set(pages) == {"howto", "licence"}
    howto = pages["howto"]
    assert howto["exported"] and howto["reason"] is None  # the exported section speaks for the page
    assert (howto["score"], howto["kind_p"]) == (3.9, 0.8)  # the best of its sections
    assert (howto["sections"], howto["sections_exported"]) == (3, 1)
    assert pages["licence"]["reason"] == "unwanted_page_kind" and pages["licence"]["sections"] == 1


def test_a_page_with_no_exported_section_keeps_the_reason_of_its_furthest_section(bench):
    page = bench.by_page({"p#1": outcome(False, None, 0.4, "page_kind", "unwanted_page_kind"),
                          "p#2": outcome(False, 3.2, 0.7, "curate", "low_score")})["p"]
    assert not page["exported"] and (page["stage"], page["reason"]) == ("curate", "low_score")


def test_the_auc_counts_ties_half(bench):
    assert bench.auc([0.9, 0.5], [0.5, 0.1]) == pytest.approx(0.875)
    assert bench.auc([], [0.2]) is None

"""benchmarks/prefilter_ceiling.py: two draws of the scorer's keep compared, the rejected sample
weighted up to the whole corpus."""

import pytest
from benchmark_scripts import load_benchmark


def load():
    return load_benchmark("prefilter_ceiling")


def labels(n_kept, n_rejected):
    rows = {f"k{i}": {"kept": True, "exported": True, "tokens": {"backtranslate": 100, "curate": 100, "rewrite": 100}}
            for i in range(n_kept)}
    rows.update({f"r{i}": {"kept": False, "exported": False, "tokens": {"backtranslate": 100, "curate": 100}}
                 for i in range(n_rejected)})
    return rows


def test_a_keep_that_repeats_exactly_reaches_the_oracle():
    lab = labels(10, 90)
    first = {i: r["kept"] for i, r in lab.items()}
    sample = {i: (4.5 if r["kept"] else 3.0) for i, r in lab.items() if r["kept"] or i in {"r0", "r1", "r2"}}
    out = load().compare(first, sample, 4.0, lab, recalls=(0.9,))
    assert out["kept_again"] == 1.0 and out["rejected_then_kept"] == 0.0 and out["auc"] == 1.0
    (point,) = out["curve"]
    # every rejected document skipped (the 3 sampled ones stand for all 90): tokens of 10 kept ones only
    assert point["recall"] == 1.0 and point["skipped"] == pytest.approx(0.9)
    assert point["ratio"] == pytest.approx((10 * 300 / 10) / ((10 * 300 + 90 * 200) / 10), abs=1e-3)


def test_a_keep_that_does_not_repeat_is_a_coin():
    lab = labels(4, 4)
    first = {i: r["kept"] for i, r in lab.items()}
    again = {"k0": 4.5, "k1": 3.0, "k2": 4.5, "k3": 3.0, "r0": 4.5, "r1": 3.0, "r2": 4.5, "r3": 3.0}
    out = load().compare(first, again, 4.0, lab, recalls=(1.0,))
    assert out["kept_again"] == 0.5 and out["rejected_then_kept"] == 0.5 and out["auc"] == 0.5
    assert out["curve"][0]["skipped"] == 0.0  # to reach every kept document, nothing can be skipped


def test_the_subset_holds_every_kept_document_and_as_many_rejected(tmp_path):
    import json

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"d{i}", "text": "x"}) + "\n" for i in range(20)))
    first = {f"d{i}": i < 3 for i in range(18)}  # d18, d19 never reached the scorer
    dest = tmp_path / "subset.jsonl"
    assert load().write_subset(first, corpus, dest) == 6
    ids = {json.loads(x)["id"] for x in dest.read_text().splitlines()}
    assert {"d0", "d1", "d2"} <= ids and not ids & {"d18", "d19"}
    assert load().write_subset(first, corpus, tmp_path / "again.jsonl") == 6
    assert (tmp_path / "again.jsonl").read_text() == dest.read_text()  # seeded

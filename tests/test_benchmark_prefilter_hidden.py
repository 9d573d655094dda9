"""benchmarks/prefilter_hidden.py: the comparison on cached features (no model): a keep written in
the features is learned and its documents pass, the rest are skipped, and the pass's cost is counted."""

import json

import numpy as np
import pytest
from benchmark_scripts import load_benchmark


def test_a_keep_written_in_the_hidden_states_is_found_and_the_pass_is_paid_for(tmp_path, capsys):
    rng = np.random.default_rng(0)
    n, h = 80, 16
    kept = np.arange(n) % 4 == 0
    X = rng.normal(size=(n, 3 * h))
    X[kept, :h] += 3.0  # the middle layer's mean knows; the other two sets are noise
    labels = [{"id": f"d{i}", "text": "page", "kept": bool(k), "exported": bool(k),
               "tokens": {"backtranslate": 400, "curate": 300}} for i, k in enumerate(kept)]
    path, cache = tmp_path / "labels.jsonl", tmp_path / "hidden.npz"
    path.write_text("".join(json.dumps(r) + "\n" for r in labels))
    np.savez(cache, X=X, read=np.full(n, 70))
    assert load_benchmark("prefilter_hidden").main([str(path), "--cache", str(cache), "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "80 documents, kept 20 (25.0%); the pass reads 70 tokens a document, the run spent 700" in out
    rows = {line[:28].strip(): list(map(float, line[28:].split())) for line in out.splitlines()[2:]}
    auc, recall, skipped, ratio, paid = rows["middle layer, mean"]
    assert auc > 0.95 and recall >= 0.9 and skipped > 0.6 and ratio < 0.45
    # the pass reads 80 x 70 tokens; the run without a pre-filter spends 56,000 for 20 pairs
    assert paid - ratio == pytest.approx(80 * 70 / (recall * 20) / (56_000 / 20), abs=1e-3)
    assert rows["last layer, mean"][0] < 0.8  # noise ranks by chance

"""benchmarks/prefilter_features.py: each feature set is measured on held-out folds, and a signal in
the words is found where there is one."""

import json
import random

from benchmark_scripts import load_benchmark


def load():
    return load_benchmark("prefilter_features")


def test_a_keep_decided_by_the_words_is_learned_by_every_feature_set(tmp_path, capsys):
    rnd = random.Random(0)
    topics = {True: "The function returns a sorted list of the keys; call it with a dictionary and a key function.",
              False: "Accept all cookies to continue. Sign in or create an account. Limited offer, buy now."}
    rows = []
    for i in range(60):
        kept = i % 4 == 0
        words = topics[kept].split()
        rnd.shuffle(words)
        rows.append({"id": f"d{i}", "text": " ".join(words) + f" page {i}", "kept": kept, "exported": kept,
                     "tokens": {"backtranslate": 300 + i, "curate": 200}})
    labels = tmp_path / "labels.jsonl"
    labels.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert load().main([str(labels), "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    table = [line.split() for line in out.splitlines() if line.startswith("  ") and "AUC" not in line]
    assert len(table) == 4 and "kept 15 (25.0%)" in out
    for row in table:
        auc, recall, skipped = map(float, row[-4:-1])
        assert auc > 0.95 and recall >= 0.9 and skipped > 0.5, row  # the junk is skipped, the kept pass

"""The cross-run win-rate table (backforth.evaluate.compare), on hand-made judgements files."""

from __future__ import annotations

import csv
import json
import math

import pytest

from backforth.evaluate.compare import compare, summarize_judgements, to_markdown
from backforth.evaluate.data import EvalDataError


def judgements(path, prefs, model_len=20, ref_len=10):
    rows = [{"id": f"q{i}", "instruction": f"Q{i}?", "output_1": "r" * ref_len, "output_2": "m" * (model_len + i),
             "preference": p} for i, p in enumerate(prefs)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_summary_sets_aside_rows_without_verdict(tmp_path):
    path = judgements(tmp_path / "a.jsonl", [2, 2, 1, 1.5, None])
    s = summarize_judgements(path)
    assert s["win_rate"] == pytest.approx(62.5)  # shares 1, 1, 0, .5
    assert s["standard_error"] == pytest.approx(100 * math.sqrt(((.375**2) * 2 + .625**2 + .125**2) / 3) / 2)
    assert (s["n_total"], s["n_unjudged"], s["n_wins"], s["n_draws"]) == (4, 1, 2, 1)
    assert s["avg_length"] == pytest.approx((20 + 21 + 22 + 23) / 4)
    assert "lc_win_rate" in s and s["length_source"] == "characters"


def test_table_values_markdown_and_csv(tmp_path):
    a = judgements(tmp_path / "a.jsonl", [2, 2, 1, 1.5])
    b = judgements(tmp_path / "b.jsonl", [1, 1, 2, None], model_len=5)
    table = compare([("Dolma + filtering + rewriting", a, "12.8K"), ("ShareGPT", b, None)],
                    markdown_path=tmp_path / "t.md", csv_path=tmp_path / "t.csv")
    assert [r["dataset"] for r in table] == ["Dolma + filtering + rewriting", "ShareGPT"]
    first, second = table
    assert first["size"] == "12.8K" and second["size"] == ""
    assert first["win_rate"] == pytest.approx(62.5) and second["win_rate"] == pytest.approx(100 / 3)
    assert first["standard_error"] == pytest.approx(summarize_judgements(a)["standard_error"])
    assert first["lc_win_rate"] == pytest.approx(summarize_judgements(a)["lc_win_rate"])
    assert (first["avg_length"], second["avg_length"]) == (pytest.approx(21.5), pytest.approx(6.0))
    assert (first["n"], second["n"], second["n_unjudged"]) == (4, 3, 1)

    md = (tmp_path / "t.md").read_text()
    assert md == to_markdown(table)
    assert md.splitlines()[0] == "| Dataset | Size | Win rate (%) | LC win rate (%) | Avg. length | n |"
    assert f"| Dolma + filtering + rewriting | 12.8K | 62.50 ± {first['standard_error']:.2f} | " in md
    assert "| 3 (+1 unjudged) |" in md

    with open(tmp_path / "t.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["dataset", "size", "win_rate", "standard_error", "lc_win_rate", "avg_length", "n", "n_unjudged"]
    assert float(rows[0]["win_rate"]) == pytest.approx(62.5) and rows[1]["n_unjudged"] == "1"


def test_missing_lengths_and_single_row(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text(json.dumps({"preference": 2}) + "\n")
    (row,) = compare([("tiny", path, 1)])
    assert row["lc_win_rate"] is None and row["avg_length"] is None and math.isnan(row["standard_error"])
    assert "| tiny | 1 | 100.00 | – | – | 1 |" in to_markdown([row])


@pytest.mark.parametrize(("line", "match"), [
    ({"output_1": "a"}, r"x\.jsonl:2: no 'preference' field"),
    ({"preference": 7}, r"x\.jsonl:2: preference 7\.0 is outside"),
    ({"preference": "yes"}, r"x\.jsonl:2: preference 'yes' is not a number"),
])
def test_bad_rows_name_file_and_line(tmp_path, line, match):
    path = tmp_path / "x.jsonl"
    path.write_text(json.dumps({"preference": 2}) + "\n" + json.dumps(line) + "\n")
    with pytest.raises(EvalDataError, match=match):
        summarize_judgements(path)


def test_nothing_judged(tmp_path):
    path = judgements(tmp_path / "a.jsonl", [None, None])
    with pytest.raises(EvalDataError, match="none of its 2 rows has a verdict"):
        summarize_judgements(path)
    with pytest.raises(EvalDataError, match="at least one run"):
        compare([])

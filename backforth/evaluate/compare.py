"""Win-rate tables across runs, in the shape of the paper's Tables 1-2 (and Table 10's LC column).

One row per fine-tuning dataset: its name, training size, win rate ± standard error over the
reference, length-controlled win rate, and the model's average answer length (characters, as
AlpacaEval's leaderboard reports it). The paper prints no standard errors; we add them because on
805 questions (or our 32) differences of a point or two, like most of Table 1's, are within noise.

Judgements with no verdict (`preference: null`) are left out of the rates and counted in
`n_unjudged`, so a judge that cannot follow the format shows up instead of shrinking the denominator
silently.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

from .data import EvalDataError, read_records
from .winrate import PreferenceError, judgements_summary, win_rate

Run = tuple[str, str | Path, str | int | None]  # (dataset name, judgements file, training-set size)
COLUMNS = ["dataset", "size", "win_rate", "standard_error", "lc_win_rate", "avg_length", "n", "n_unjudged"]


def _has_verdict(pref: object) -> bool:
    return pref is not None and not (isinstance(pref, float) and math.isnan(pref))


def summarize_judgements(path: str | Path) -> dict:
    """`judgements_summary` of a judgements file, plus `n_unjudged` and `avg_length` (model answers, characters).

    Rows without a verdict are set aside first: `judgements_summary` rightly refuses them.
    """
    judged, n_rows = [], 0
    for where, row in read_records(path):
        n_rows += 1
        if "preference" not in row:
            raise EvalDataError(f"{where}: no 'preference' field; is this a judgements file (`backforth eval judge`)?")
        if _has_verdict(row["preference"]):
            try:
                win_rate([row["preference"]])
            except PreferenceError as err:
                raise EvalDataError(f"{where}: {str(err).removeprefix('row 0: ')}") from None
            judged.append(row)
    if not judged:
        raise EvalDataError(f"{path}: none of its {n_rows} rows has a verdict (every preference is null)")
    summary = judgements_summary(judged)
    summary["n_unjudged"] = n_rows - len(judged)
    outputs = [r.get("output_2") for r in judged]
    summary["avg_length"] = (sum(len(o) for o in outputs) / len(outputs)) if all(isinstance(o, str) for o in outputs) else None
    return summary


def compare(runs: Sequence[Run], markdown_path: str | Path | None = None, csv_path: str | Path | None = None) -> list[dict]:
    """The comparison table (one dict per run, keys `COLUMNS`); also written as markdown and csv when paths are given."""
    if not runs:
        raise EvalDataError("compare: give at least one run (name, judgements file, size)")
    table = []
    for name, path, size in runs:
        s = summarize_judgements(path)
        table.append({"dataset": name, "size": "" if size is None else size, "win_rate": s["win_rate"],
                      "standard_error": s["standard_error"], "lc_win_rate": s.get("lc_win_rate"),
                      "avg_length": s["avg_length"], "n": s["n_total"], "n_unjudged": s["n_unjudged"]})
    if markdown_path is not None:
        _write(markdown_path, to_markdown(table))
    if csv_path is not None:
        write_csv(table, csv_path)
    return table


def _pct(value: float | None, se: float | None = None) -> str:
    if value is None or math.isnan(value):
        return "–"
    if se is None or math.isnan(se):
        return f"{value:.2f}"
    return f"{value:.2f} ± {se:.2f}"


def to_markdown(table: Sequence[dict]) -> str:
    """The table as the paper prints it: win rates in percent over the reference."""
    lines = ["| Dataset | Size | Win rate (%) | LC win rate (%) | Avg. length | n |",
             "|---|---|---|---|---|---|"]
    for r in table:
        length = "–" if r["avg_length"] is None else f"{r['avg_length']:.0f}"
        n = f"{r['n']}" + (f" (+{r['n_unjudged']} unjudged)" if r["n_unjudged"] else "")
        lines.append(f"| {r['dataset']} | {r['size']} | {_pct(r['win_rate'], r['standard_error'])} | "
                     f"{_pct(r['lc_win_rate'])} | {length} | {n} |")
    return "\n".join(lines) + "\n"


def write_csv(table: Sequence[dict], path: str | Path) -> None:
    """Numbers unformatted, one column each, for plotting and spreadsheets."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        for r in table:
            writer.writerow({k: ("" if r.get(k) is None else r[k]) for k in COLUMNS})


def _write(path: str | Path, text: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text, encoding="utf-8")

"""An experiment's results: the paper's Table 1 for the user's datasets, and one HTML page.

`report.html` shows the response-level table (`response_table.md`, experiment/response_table.py: the
data judged head to head) and the fine-tuned table side by side, and says that they answer different
questions.

`table.md` / `table.csv`: dataset, size, win rate ± standard error over the reference, the
length-controlled win rate, the average answer length, with one line saying which differences lie
within two standard errors (at a few dozen questions most do: the table says so rather than
ranking noise). `report.html`: the table, a bar chart of the win rates with their error bars, the
analysis of the datasets' texts, the time per step, and links to the pipeline run's report.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from pathlib import Path

from ..evaluate.compare import compare, to_markdown
from .steps import time_table


def within_noise(table: Sequence[dict]) -> str:
    """The pairs of datasets whose win rates differ by less than two standard errors of the difference."""
    close, apart = [], []
    rows = [r for r in table if r["win_rate"] is not None and not math.isnan(r["win_rate"])]
    for i, a in enumerate(rows):
        for b in rows[i + 1:]:
            se = math.sqrt((a["standard_error"] or 0) ** 2 + (b["standard_error"] or 0) ** 2)
            (close if abs(a["win_rate"] - b["win_rate"]) < 2 * se or se == 0 else apart).append(
                f"{a['dataset']} vs {b['dataset']}")
    if not close:
        return "Every difference between two datasets is larger than two standard errors."
    line = "Within two standard errors (not told apart at this size): " + "; ".join(close) + "."
    return line + (" Apart: " + "; ".join(apart) + "." if apart else " No two datasets are told apart.")


def write_table(runs: Sequence[tuple[str, Path, int | None]], out: Path) -> list[dict]:
    table = compare(runs, csv_path=out / "table.csv")
    (out / "table.md").write_text(to_markdown(table) + "\n" + within_noise(table) + "\n", encoding="utf-8")
    return table


def _bars(table: Sequence[dict]) -> str:
    """The win rates with two-standard-error bars, as a base64 PNG (matplotlib, no pyplot state)."""
    import base64
    import io

    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 0.5 + 0.45 * len(table)))
    ax = fig.subplots()
    names = [r["dataset"] for r in table]
    rates = [r["win_rate"] or 0.0 for r in table]
    errs = [2 * (r["standard_error"] or 0.0) for r in table]
    ax.barh(names, rates, xerr=errs, color="#4a7ab7", capsize=3)
    ax.axvline(50, color="#999", lw=0.8, ls="--")
    ax.set_xlabel("win rate over the reference (%), bars: 2 standard errors")
    ax.set_xlim(0, 100)
    ax.invert_yaxis()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return base64.b64encode(buf.getvalue()).decode()


def _md_table_html(md: str) -> str:
    lines = [ln for ln in md.splitlines() if ln.startswith("|")]
    if not lines:
        return ""
    cells = [[html.escape(c.strip()) for c in ln.strip("|").split("|")] for ln in lines if not set(ln) <= set("|-: ")]
    head, *body = cells
    rows = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in body)
    return "<table><tr>" + "".join(f"<th>{c}</th>" for c in head) + "</tr>" + rows + "</table>"


TWO_QUESTIONS = ("The two tables answer different questions. The response-level table judges the data: each "
                 "dataset's own responses to the same instructions, head to head (and the datasets' instructions). "
                 "The fine-tuned table judges models: a base model trained on each dataset answers the eval set and "
                 "is judged against a reference. Better data need not make a better model at a given size and "
                 "training budget, and a judge that can rank responses may still be unable to rank small models' "
                 "answers; read each table for its own question.")


def _response_html(out: Path) -> list[str]:
    """The response-level table (response_table.md) as HTML: its judge check, then each section's table and notes."""
    md = (out / "response_table.md").read_text(encoding="utf-8")
    parts, block = [], []

    def flush() -> None:
        if block:
            parts.append(_md_table_html("\n".join(block)))
            block.clear()

    for line in md.splitlines()[1:]:
        if line.startswith("|"):
            block.append(line)
            continue
        flush()
        if line.startswith("## "):
            parts.append(f"<h3>{html.escape(line[3:])}</h3>")
        elif line.strip():
            parts.append(f"<p>{html.escape(line.lstrip('- '))}</p>")
    flush()
    return parts


def write_report(cfg, out: Path, record: dict, table: list[dict] | None) -> Path:
    parts = [f"<h1>Experiment: {html.escape(', '.join(cfg.names()))}</h1>"]
    response = (out / "response_table.md").is_file()
    side = []
    if response:
        side.append("<div class='col'><h2>Response level: the data (before any fine-tune)</h2>"
                    + "".join(_response_html(out)) + "</div>")
    if table is not None:
        md = (out / "table.md").read_text()
        side.append("<div class='col'><h2>Fine-tuned: the models. Win rates over the reference (the paper's Table 1)</h2>" + _md_table_html(md)
                    + f"<p>{html.escape(md.strip().splitlines()[-1])}</p>"
                    + f'<img alt="win rates" src="data:image/png;base64,{_bars(table)}"></div>')
    else:
        side.append("<div class='col'><p>No fine-tuning (<code>train: none</code>): no fine-tuned table.</p></div>")
    if response:
        parts.append(f"<p><b>{html.escape(TWO_QUESTIONS)}</b></p>")
    parts.append("<div class='side'>" + "".join(side) + "</div>")
    size = record.get("datasets", {}).get("result", {})
    if size:
        parts.append(f"<p>Each dataset: {size.get('size')} pairs (available before the cut: "
                     + html.escape(", ".join(f"{k} {v}" for k, v in size.get("available", {}).items())) + ").</p>")
    if (out / "analysis.md").is_file():
        parts += ["<h2>The datasets' texts (section 5)</h2>",
                  f"<pre>{html.escape((out / 'analysis.md').read_text())}</pre>"]
    parts += ["<h2>Where the time went</h2>", _md_table_html(time_table(record)),
              '<p>Runs: <a href="pipeline/report.html">the pipeline run\'s report</a> (funnel, rejects, examples); '
              "fine-tuned models under <code>train/</code>, answers under <code>answers/</code>, judgements under "
              "<code>judgements/</code>.</p>"]
    page = ("<!doctype html><meta charset='utf-8'><title>backforth experiment</title>"
            "<style>body{font:14px sans-serif;max-width:1280px;margin:2em auto}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}.side{display:flex;gap:2em;flex-wrap:wrap}"
            ".col{flex:1 1 440px;min-width:0}img{max-width:100%}</style>" + "".join(parts))
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    return path

"""One self-contained HTML page per run: `RUN_DIR/report.html`.

It is meant to be opened from disk, mailed or attached to a dataset, so everything is inline: CSS,
plain JS, figures as base64 PNG (matplotlib, no pyplot state). It shows the funnel, the curation
scores, length distributions, the analysis tables when `analysis.json` exists, and an example
browser with document | instruction | score | rewrite | distilled side by side, rejected rows too.

Every text in it comes from web documents or models, so none of it is trusted: static text goes
through `html.escape`; example data travels as JSON inside `<script type="application/json">` with
`<`, `>` and `&` written as `\\u003c`-style escapes (so `</script>` or `<!--` in a document cannot end
the block), and the page's script renders it with `textContent` only. A Content-Security-Policy
allows no network and no script but the page's own (by its sha256), as a second line of defence.

This module writes the page; what it shows (examples, word diffs, figures) is read in `report_data`,
and its stylesheet and script are in `report_assets`.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .report_assets import CSS, SCRIPT
from .report_data import (MAX_CHARS, MAX_EXAMPLES, curate_threshold, examples, funnel_figure, length_figure,
                          length_sets, score_figure, word_diff)
from .sets import load_stats, stage_order
from .tables import analysis_notes, comparison_table, set_table

__all__ = ["CSP", "MAX_CHARS", "MAX_EXAMPLES", "examples", "safe_json", "word_diff", "write_report"]

CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'sha256-{script_hash}'; "
       "base-uri 'none'; form-action 'none'")


def safe_json(data: Any) -> str:
    """JSON that cannot end or comment out the <script> block holding it (and stays valid JSON)."""
    text = json.dumps(data, ensure_ascii=False)
    return (text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


# ----------------------------------------------------------------------------------- html


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = lambda tag, row: "".join(f"<{tag}>{html.escape(str(c))}</{tag}>" for c in row)  # noqa: E731
    body = "".join(f"<tr>{cells('td', r)}</tr>" for r in rows)
    return f"<table><thead><tr>{cells('th', head)}</tr></thead><tbody>{body}</tbody></table>"


def _img(b64: str, alt: str) -> str:
    return f'<img class="fig" alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'


def overview_html(run_dir: Path, stats: dict) -> str:
    """The funnel, the score histogram, the length panels and the reject reasons."""
    from ..pipeline.advice import scoring

    curate = scoring(stats.get("stages", {}))
    reasons = [[s, r, n] for s, st in stats.get("stages", {}).items()
               for r, n in (st.get("rejected_by_reason") or {}).items()]
    figs = [_img(funnel_figure(stats.get("funnel", {})), "funnel: rows after each step"),
            _img(score_figure(curate.get("score_distribution"), curate_threshold(run_dir)), "curation score histogram")]
    return (f'<section id="overview"><h2>Run</h2><div class="figs">{"".join(figs)}</div>'
            f'<div class="figs">{_img(length_figure(length_sets(run_dir)), "length distributions")}</div>'
            f"<h3>Rejected rows by reason</h3>"
            f"{_table(['stage', 'reason', 'rows'], reasons) if reasons else '<p>None.</p>'}</section>")


def analysis_html(run_dir: Path) -> str:
    """The analysis tables, or how to make them."""
    path = run_dir / "analysis.json"
    if not path.is_file():
        return ('<section id="analysis"><h2>Analysis</h2><p>No analysis.json yet: run '
                f"<code>backforth analyze {html.escape(str(run_dir))}</code>, then this report again.</p></section>")
    result = json.loads(path.read_text(encoding="utf-8"))
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in analysis_notes(result))
    return (f'<section id="analysis"><h2>Analysis</h2><h3>How far apart the sets are (paper Table 3)</h3>'
            f"{_table(*comparison_table(result))}"
            f"<h3>Lengths, diversity, complexity per set (Table 6, Fig. 3, Table 4)</h3>{_table(*set_table(result))}"
            f"<ul class=notes>{notes}</ul></section>")


def examples_html(rows: list[dict], total: int) -> str:
    """The browser's controls and data; the page's script builds the cards from the data."""
    shown = f"the first {len(rows)} of {total} rows" if total > len(rows) else f"all {total} rows"
    return f"""<section id="examples"><h2>Examples</h2>
<p class="hint">Showing {shown}, in input order. In the rewrite column, <ins>highlighted</ins> words were
added by the rewriter and <del>struck</del> words were in the document but not in the rewrite.</p>
<div class="controls">
<input id="search" type="search" placeholder="Search text, instruction, id…" aria-label="search">
<select id="filter-status" aria-label="status"><option value="">any status</option></select>
<select id="filter-stage" aria-label="stage"><option value="">any stage</option></select>
<select id="filter-reason" aria-label="reason"><option value="">any reason</option></select>
<label><input id="show-deleted" type="checkbox" checked> show deleted words</label>
<span id="match-count"></span></div>
<div id="example-list"></div><button id="more" type="button">show more</button>
<script type="application/json" id="examples-data">{safe_json(rows)}</script></section>"""


def _csp() -> str:
    """The policy, allowing exactly the page's own script (by hash): an injected one would not run."""
    digest = base64.b64encode(hashlib.sha256(SCRIPT.encode("utf-8")).digest()).decode("ascii")
    return CSP.format(script_hash=digest)


def write_report(run_dir: str | Path, max_examples: int = MAX_EXAMPLES) -> Path:
    """Write RUN_DIR/report.html (one file, no external resources) and return its path."""
    run_dir = Path(run_dir)
    stats = load_stats(run_dir)
    rows, total = examples(run_dir, stage_order(run_dir, stats), max_examples)
    title = f"backforth report: {run_dir.resolve().name}"
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    page = (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{_csp()}">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"
            f"<header><h1>{html.escape(title)}</h1><p>{html.escape(str(run_dir))} · variant "
            f"{html.escape(str(stats.get('variant')))} · written {when}</p></header>"
            f"{overview_html(run_dir, stats)}{analysis_html(run_dir)}{examples_html(rows, total)}"
            f"<script>{SCRIPT}</script></body></html>")
    out = run_dir / "report.html"
    out.write_text(page, encoding="utf-8")
    return out

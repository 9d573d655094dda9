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
"""

from __future__ import annotations

import base64
import difflib
import hashlib
import html
import io
import json
import re
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .analyze import analysis_notes, comparison_table, iter_jsonl, load_stats, set_table, stage_order, stage_rows

MAX_EXAMPLES = 1000  # rows in the browser; a bigger run shows the first ones in input order
MAX_CHARS = 20000  # per text in the browser: keeps the page (and the diff) small on huge documents
_TOKEN = re.compile(r"\S+\s*")
CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'sha256-{script_hash}'; "
       "base-uri 'none'; form-action 'none'")


# ----------------------------------------------------------------------------------- data


def word_diff(document: str, rewrite: str, min_equal: int = 3) -> list[list[str]]:
    """[op, text] segments turning `document` into `rewrite`: "=" kept, "+" inserted, "-" deleted.

    Words are compared without their trailing whitespace, so a re-wrapped line is not a change, but
    each segment keeps the whitespace of the text it comes from, so paragraphs survive. A run of
    fewer than `min_equal` matching words between two changes ("the", "is a") is folded into the
    change around it: otherwise a rewritten paragraph reads as confetti of kept stop words.
    """
    a, b = _TOKEN.findall(document), _TOKEN.findall(rewrite)
    matcher = difflib.SequenceMatcher(None, [t.strip() for t in a], [t.strip() for t in b], autojunk=False)
    ops = matcher.get_opcodes()
    segments: list[list[str]] = []
    deleted = inserted = ""
    for k, (op, i1, i2, j1, j2) in enumerate(ops):
        if op == "equal" and (i2 - i1 >= min_equal or k in (0, len(ops) - 1)):
            _push(segments, "-", deleted)
            _push(segments, "+", inserted)
            deleted = inserted = ""
            _push(segments, "=", "".join(b[j1:j2]))
        else:
            deleted += "".join(a[i1:i2])
            inserted += "".join(b[j1:j2])
    _push(segments, "-", deleted)
    _push(segments, "+", inserted)
    return segments


def _push(segments: list[list[str]], op: str, text: str) -> None:
    if not text:
        return
    if segments and segments[-1][0] == op:
        segments[-1][1] += text
    else:
        segments.append([op, text])


def _kept_share(segments: list[list[str]]) -> float | None:
    """Share of the rewrite's words copied from the document (how close the rewrite stayed)."""
    kept = sum(len(t.split()) for op, t in segments if op == "=")
    total = kept + sum(len(t.split()) for op, t in segments if op == "+")
    return round(kept / total, 3) if total else None


def _cut(text: Any) -> str | None:
    if not isinstance(text, str):
        return None
    return text if len(text) <= MAX_CHARS else text[:MAX_CHARS] + f"\n[… cut at {MAX_CHARS} characters]"


def _example(row: dict, exported: set[str]) -> dict:
    """The browser's view of one row at the furthest stage it reached (`_stage`).

    Where a stage rejected the model's output, the raw output is shown instead (that is what a user
    tuning a threshold or a prompt needs to read).
    """
    rid = str(row["id"])
    rejected = row.get("_status") == "rejected"
    instruction = row.get("instruction") or row.get("instruction_raw")
    raw_instruction = row.get("instruction_raw")
    doc, response = _cut(row.get("text")) or "", _cut(row.get("response"))
    raw_response = row.get("response_raw") if not response else None
    diff = word_diff(doc, response) if response and doc else None
    return {
        "id": rid, "status": "rejected" if rejected else "exported" if rid in exported else "pending",
        "stage": row.get("stage") if rejected else row.get("_stage"), "reason": row.get("reason") if rejected else None,
        "url": row.get("url"), "document": doc, "instruction": _cut(instruction),
        "instruction_raw": _cut(raw_instruction) if raw_instruction and raw_instruction != instruction else None,
        "score": row.get("score"), "score_expected": row.get("score_expected"),
        "score_reason": _cut(row.get("score_reason")), "score_probs": row.get("score_probs"),
        "response": response, "response_raw": _cut(raw_response.strip()) if isinstance(raw_response, str) else None,
        "diff": diff, "kept_share": _kept_share(diff) if diff else None,
        "distilled": _cut(row.get("distilled")), "distill_reason": row.get("distill_reason"),
        "grounding": _grounding(row),
    }


def _grounding(row: dict) -> str | None:
    """One line on what the grounding check found unsupported in the rewrite, when it ran."""
    if row.get("unsupported_share") is None:
        return None
    parts = [f"{k}: {', '.join(map(str, row[f'unsupported_{k}']))}" for k in ("numbers", "names", "words")
             if isinstance(row.get(f"unsupported_{k}"), list) and row[f"unsupported_{k}"]]
    return f"unsupported share {row['unsupported_share']}" + ("; " + "; ".join(parts) if parts else "")


def examples(run_dir: Path, stages: Sequence[str], limit: int = MAX_EXAMPLES) -> tuple[list[dict], int]:
    """(the first `limit` rows in input order, how many rows the run has).

    Stage files are streamed twice: once for the ids in input order, once for those rows only, so
    a big run's report does not hold every document in memory.
    """
    order: dict[str, Any] = {}
    for stage in stages:
        for rid, row in stage_rows(run_dir, stage, ("_index",)).items():
            order.setdefault(rid, row["_index"])
    ids = sorted(order, key=lambda i: (order[i] is None, order[i] or 0))
    chosen = set(ids[:limit])
    latest: dict[str, dict] = {}
    for stage in stages:
        for rid, row in stage_rows(run_dir, stage, ids=chosen).items():
            latest[rid] = dict(row, _stage=stage)
    sft = run_dir / "sft.jsonl"
    exported = {str(r.get("id")) for r in iter_jsonl(sft)} if sft.is_file() else set()
    return [_example(latest[i], exported) for i in ids[:limit]], len(ids)


def safe_json(data: Any) -> str:
    """JSON that cannot end or comment out the <script> block holding it (and stays valid JSON)."""
    text = json.dumps(data, ensure_ascii=False)
    return (text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


# ----------------------------------------------------------------------------------- figures


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(width: float, height: float, ncols: int = 1) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    return fig, fig.subplots(1, ncols) if ncols > 1 else fig.subplots()


def funnel_figure(funnel: dict[str, int]) -> str:
    """Rows left after each step, top to bottom."""
    fig, ax = _figure(5.5, 0.45 * max(3, len(funnel)) + 0.6)
    names, counts = list(funnel)[::-1], list(funnel.values())[::-1]
    bars = ax.barh(names, counts, color="#4c78a8")
    ax.bar_label(bars, padding=3, fontsize=8)
    ax.set_xlabel("rows")
    ax.set_title("Funnel", loc="left", fontsize=10)
    ax.spines[["top", "right"]].set_visible(False)
    ax.set_xlim(0, max(counts + [1]) * 1.15)
    return _png(fig)


def score_figure(scores: dict[str, int] | None, threshold: float | None) -> str:
    """The scorer's 1-5 distribution; the kept scores are drawn darker."""
    fig, ax = _figure(4.2, 2.8)
    values = [int((scores or {}).get(str(s), 0)) for s in range(1, 6)]
    colours = ["#54a24b" if threshold is not None and s >= threshold else "#bab0ac" for s in range(1, 6)]
    bars = ax.bar(range(1, 6), values, color=colours)
    ax.bar_label(bars, padding=2, fontsize=8)
    ax.set_xticks(range(1, 6))
    ax.set_xlabel("score" + (f" (kept: ≥ {threshold:g}, green)" if threshold is not None else ""))
    ax.set_ylabel("rows")
    ax.set_title("Curation scores" if scores else "Curation scores (no curate stage)", loc="left", fontsize=10)
    ax.spines[["top", "right"]].set_visible(False)
    ax.set_ylim(0, max(values + [1]) * 1.2)
    return _png(fig)


def length_figure(sets: dict[str, Sequence[int]]) -> str:
    """Words per text for each set, one panel each (their scales differ by orders of magnitude)."""
    from matplotlib.ticker import MaxNLocator

    fig, axes = _figure(2.6 * len(sets), 2.6, ncols=len(sets))
    for ax, (name, counts) in zip(axes, sets.items()):
        if counts:
            low, high = min(counts), max(counts)
            ax.hist(counts, bins=min(20, max(3, len(counts))), color="#72b7b2",
                    range=(low, high) if high > low else (low - 5, high + 5))
            mean = sum(counts) / len(counts)
            ax.axvline(mean, color="#333", lw=1, ls="--")
            ax.set_title(f"{name} (n={len(counts)}, mean {mean:.0f})", fontsize=9)
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        else:
            ax.text(0.5, 0.5, "no texts", ha="center", va="center", transform=ax.transAxes, color="#888")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{name} (n=0)", fontsize=9)
        ax.set_xlabel("words", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.spines[["top", "right"]].set_visible(False)
    return _png(fig)


def length_sets(run_dir: Path) -> dict[str, list[int]]:
    """Words per text for each kind, from the stage that made it (documents: after prepare)."""
    def words(stage: str, key: str) -> list[int]:
        rows = stage_rows(run_dir, stage, (key,)).values()
        return [len(r[key].split()) for r in rows
                if r["_status"] == "done" and isinstance(r[key], str) and r[key].strip()]

    return {"documents": words("prepare", "text"), "instructions": words("backtranslate", "instruction"),
            "rewrites": words("rewrite", "response"), "distilled": words("distill", "distilled")}


# ----------------------------------------------------------------------------------- html


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = lambda tag, row: "".join(f"<{tag}>{html.escape(str(c))}</{tag}>" for c in row)  # noqa: E731
    body = "".join(f"<tr>{cells('td', r)}</tr>" for r in rows)
    return f"<table><thead><tr>{cells('th', head)}</tr></thead><tbody>{body}</tbody></table>"


def _img(b64: str, alt: str) -> str:
    return f'<img class="fig" alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'


def _threshold(run_dir: Path) -> float | None:
    """curate.threshold from config.yaml, when the run has one (to colour the kept scores)."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        return None
    import yaml

    try:
        value = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("curate", {}).get("threshold")
    except yaml.YAMLError:
        return None
    return float(value) if isinstance(value, (int, float)) else None


def overview_html(run_dir: Path, stats: dict) -> str:
    """The funnel, the score histogram, the length panels and the reject reasons."""
    curate = stats.get("stages", {}).get("curate", {})
    reasons = [[s, r, n] for s, st in stats.get("stages", {}).items()
               for r, n in (st.get("rejected_by_reason") or {}).items()]
    figs = [_img(funnel_figure(stats.get("funnel", {})), "funnel: rows after each step"),
            _img(score_figure(curate.get("score_distribution"), _threshold(run_dir)), "curation score histogram")]
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
    digest = base64.b64encode(hashlib.sha256(_JS.encode("utf-8")).digest()).decode("ascii")
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
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
            f"<header><h1>{html.escape(title)}</h1><p>{html.escape(str(run_dir))} · variant "
            f"{html.escape(str(stats.get('variant')))} · written {when}</p></header>"
            f"{overview_html(run_dir, stats)}{analysis_html(run_dir)}{examples_html(rows, total)}"
            f"<script>{_JS}</script></body></html>")
    out = run_dir / "report.html"
    out.write_text(page, encoding="utf-8")
    return out


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;max-width:1500px;padding:0 20px 40px;color:#222}
header{border-bottom:2px solid #4c78a8;margin-bottom:8px}header p{color:#666;margin-top:0}
h1{font-size:22px;margin:18px 0 4px}h2{font-size:18px;margin:26px 0 8px;border-bottom:1px solid #ddd}h3{font-size:14px;margin:16px 0 6px}
.figs{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}.fig{max-width:100%;height:auto}
table{border-collapse:collapse;font-size:13px}th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f3f5f8}.notes{color:#555;font-size:12.5px}.hint{color:#555}
.controls{display:flex;flex-wrap:wrap;gap:8px;align-items:center;position:sticky;top:0;background:#fff;padding:8px 0;z-index:2;border-bottom:1px solid #eee}
#search{flex:1;min-width:240px;padding:6px 8px;font-size:14px}select{padding:5px}#match-count{color:#555}
.example{border:1px solid #d8dde5;border-radius:6px;margin:12px 0;overflow:hidden}
.ex-head{display:flex;flex-wrap:wrap;gap:10px;align-items:baseline;background:#f3f5f8;padding:6px 10px;font-size:13px}
.ex-id{font-weight:600;font-family:ui-monospace,monospace}.ex-url{color:#666;word-break:break-all}
.badge{border-radius:10px;padding:1px 8px;font-size:12px;color:#fff}.b-exported{background:#54a24b}.b-rejected{background:#e45756}.b-pending{background:#9d755d}
.ex-cols{display:grid;grid-template-columns:2fr 1.1fr 1fr 2fr 1.6fr}
.col{padding:6px 10px;border-left:1px solid #eee;min-width:0}.col:first-child{border-left:0}
.col h4{margin:0 0 4px;font-size:12px;text-transform:uppercase;letter-spacing:.04em;color:#4c78a8}
.txt{white-space:pre-wrap;overflow-wrap:anywhere;max-height:24em;overflow:auto;font-size:13px}
.muted{color:#999;font-style:italic}.raw{color:#8a5a00;font-size:12px}
.score{font-size:22px;font-weight:600}.probs{display:grid;grid-template-columns:1.2em 1fr 3em;gap:2px 6px;font-size:11px;margin:6px 0}
.bar{background:#4c78a8;height:9px;align-self:center}
ins{background:#c8f0c0;text-decoration:none}del{background:#fbd3d3;color:#8b1a1a}
body.hide-del del{display:none}
.unfold{font-size:11px;margin-left:4px;padding:0 6px;border:1px solid #d99;background:#fff;color:#8b1a1a;border-radius:8px;cursor:pointer}#more{margin:8px 0;padding:6px 14px}
@media (max-width:1000px){.ex-cols{grid-template-columns:1fr}.col{border-left:0;border-top:1px solid #eee}}
"""

_JS = r"""
(function () {
  "use strict";
  var PAGE = 25;
  var data = JSON.parse(document.getElementById("examples-data").textContent);
  var list = document.getElementById("example-list");
  var search = document.getElementById("search");
  var selects = {status: document.getElementById("filter-status"),
                 stage: document.getElementById("filter-stage"),
                 reason: document.getElementById("filter-reason")};
  var more = document.getElementById("more");
  var count = document.getElementById("match-count");
  var shown = PAGE;

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function haystack(ex) {
    return [ex.id, ex.url, ex.document, ex.instruction, ex.instruction_raw, ex.score_reason, ex.response,
            ex.response_raw, ex.distilled, ex.stage, ex.reason, ex.grounding].filter(Boolean).join("\n").toLowerCase();
  }
  data.forEach(function (ex) { ex._hay = haystack(ex); });

  function fillSelect(select, key) {
    var values = [];
    data.forEach(function (ex) { if (ex[key] && values.indexOf(ex[key]) < 0) values.push(ex[key]); });
    values.sort().forEach(function (v) {
      var n = data.filter(function (ex) { return ex[key] === v; }).length;
      var opt = el("option", null, v + " (" + n + ")");
      opt.value = v;
      select.appendChild(opt);
    });
  }
  Object.keys(selects).forEach(function (key) { fillSelect(selects[key], key); });

  function column(title, body) {
    var col = el("div", "col");
    col.appendChild(el("h4", null, title));
    col.appendChild(body);
    return col;
  }

  function textBox(text, emptyNote) {
    return text ? el("div", "txt", text) : el("div", "txt muted", emptyNote);
  }

  function scoreBox(ex) {
    var box = el("div");
    if (ex.score === null || ex.score === undefined) {
      box.appendChild(el("div", "muted", "not scored"));
      return box;
    }
    box.appendChild(el("span", "score", ex.score));
    if (typeof ex.score_expected === "number") box.appendChild(el("span", null, "  expected " + ex.score_expected.toFixed(2)));
    if (ex.score_probs && typeof ex.score_probs === "object") {
      var grid = el("div", "probs");
      Object.keys(ex.score_probs).sort().forEach(function (k) {
        var p = Number(ex.score_probs[k]) || 0;
        grid.appendChild(el("span", null, k));
        var bar = el("div", "bar");
        bar.style.width = Math.max(1, Math.round(p * 100)) + "%";
        grid.appendChild(bar);
        grid.appendChild(el("span", null, p.toFixed(2)));
      });
      box.appendChild(grid);
    }
    if (ex.score_reason) box.appendChild(el("div", "txt", ex.score_reason));
    return box;
  }

  // A long deleted run (a paragraph the rewriter dropped) is folded to its first words, so the
  // rewrite itself stays in view; one click shows it all.
  var FOLD_WORDS = 24;
  function deleted(text) {
    var words = text.split(/(\s+)/);
    if (words.length <= 2 * FOLD_WORDS + 1) return el("del", null, text);
    var node = el("del", null, words.slice(0, 2 * FOLD_WORDS).join(""));
    var hidden = Math.floor((words.length - 2 * FOLD_WORDS) / 2);
    var more = el("button", "unfold", "… " + hidden + " more deleted words");
    more.type = "button";
    more.addEventListener("click", function () { node.textContent = text; });
    node.appendChild(more);
    return node;
  }

  function rewriteBox(ex) {
    if (ex.diff) {
      var wrap = el("div");
      var box = el("div", "txt");
      ex.diff.forEach(function (seg) {
        box.appendChild(seg[0] === "+" ? el("ins", null, seg[1]) : seg[0] === "-" ? deleted(seg[1])
                        : document.createTextNode(seg[1]));
      });
      wrap.appendChild(box);
      if (ex.grounding) wrap.appendChild(el("div", "raw", "grounding check: " + ex.grounding));
      return wrap;
    }
    if (ex.response_raw) {
      var raw = el("div");
      raw.appendChild(el("div", "raw", "raw model output (rejected):"));
      raw.appendChild(el("div", "txt", ex.response_raw));
      return raw;
    }
    return textBox(ex.response, "not rewritten");
  }

  function instructionBox(ex) {
    var box = el("div");
    box.appendChild(textBox(ex.instruction, "no instruction"));
    if (ex.instruction_raw) {
      box.appendChild(el("div", "raw", "raw model output:"));
      box.appendChild(el("div", "txt", ex.instruction_raw));
    }
    return box;
  }

  function card(ex) {
    var node = el("article", "example");
    node.dataset.id = ex.id;
    var head = el("div", "ex-head");
    head.appendChild(el("span", "ex-id", ex.id));
    head.appendChild(el("span", "badge b-" + ex.status, ex.status));
    if (ex.stage && ex.status !== "exported") head.appendChild(el("span", "ex-stage", (ex.status === "rejected" ? "at " : "last stage: ") + ex.stage));
    if (ex.reason) head.appendChild(el("span", "ex-reason", "reason: " + ex.reason));
    if (typeof ex.kept_share === "number") head.appendChild(el("span", null, Math.round(ex.kept_share * 100) + "% of the rewrite's words come from the document"));
    if (ex.url) head.appendChild(el("span", "ex-url", ex.url));
    node.appendChild(head);
    var cols = el("div", "ex-cols");
    cols.appendChild(column("Document", textBox(ex.document, "empty")));
    cols.appendChild(column("Instruction", instructionBox(ex)));
    cols.appendChild(column("Score and rationale", scoreBox(ex)));
    cols.appendChild(column("Rewrite (changes vs document)", rewriteBox(ex)));
    cols.appendChild(column("Distilled", textBox(ex.distilled, ex.distill_reason ? "distill failed: " + ex.distill_reason : "not distilled")));
    node.appendChild(cols);
    return node;
  }

  function matching() {
    var q = search.value.trim().toLowerCase();
    return data.filter(function (ex) {
      for (var key in selects) if (selects[key].value && ex[key] !== selects[key].value) return false;
      return !q || ex._hay.indexOf(q) >= 0;
    });
  }

  function render() {
    var rows = matching();
    var frag = document.createDocumentFragment();
    rows.slice(0, shown).forEach(function (ex) { frag.appendChild(card(ex)); });
    list.replaceChildren(frag);
    count.textContent = rows.length + " of " + data.length + " rows match";
    more.hidden = rows.length <= shown;
  }

  function reset() { shown = PAGE; render(); }
  search.addEventListener("input", reset);
  Object.keys(selects).forEach(function (key) { selects[key].addEventListener("change", reset); });
  more.addEventListener("click", function () { shown += PAGE; render(); });
  document.getElementById("show-deleted").addEventListener("change", function (e) {
    document.body.classList.toggle("hide-del", !e.target.checked);
  });
  render();
})();
"""

"""The analysis as tables: analysis.md, and the same rows for the HTML report (`report`).

Every cell is a string, formatted once here, so analysis.md and report.html show the same numbers;
an empty cell (a metric not computed on a set too small, a skipped analysis) is "—", and
`analysis_notes` says why.
"""

from __future__ import annotations

from typing import Any

from .sets import MIN_ITEMS


def _num(x: Any, digits: int = 3) -> str:
    if x is None:
        return "—"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def comparison_table(result: dict) -> tuple[list[str], list[list[str]]]:
    """Table 3 rows as strings (shared by analysis.md and the HTML report)."""
    head = ["comparison", "MAUVE", "classifier accuracy", "n", "buckets", "note"]
    rows = [[c["comparison"], _num(c["mauve"]), _num(c["accuracy"]),
             f"{c['n_a']} / {c['n_b']}" if "n_a" in c else "—", _num(c.get("num_buckets")), c.get("note") or ""]
            for c in result["comparisons"]]
    return head, rows


def _tags_cell(cx: dict, name: str, col: str) -> str:
    if "sets" not in cx:
        return "—"
    cell = cx["sets"].get(name, {}).get(col)
    return _num(cell["mean"], 1) if cell else "—"


def _trigram_cell(div: dict, name: str) -> str:
    cell = div["sets"].get(name)
    return _num(cell["unique_trigrams"]) if cell else "—"


def set_table(result: dict) -> tuple[list[str], list[list[str]]]:
    """Per set: size, Table 6 lengths, Fig. 3 trigrams at equal size, Table 4 tags."""
    di, dr = result["diversity"]["instructions"], result["diversity"]["responses"]
    head = ["set", "n", "instruction tokens", "response tokens",
            f"instruction trigrams (n={_num(di['sample_size'])})", f"response trigrams (n={_num(dr['sample_size'])})",
            "tags / instruction", "tags / response"]
    rows = []
    for name, info in result["sets"].items():
        ln = result["lengths"][name]
        rows.append([name, str(info["n"]), _num(ln["instruction"], 1), _num(ln["response"], 1),
                     _trigram_cell(di, name), _trigram_cell(dr, name),
                     _tags_cell(result["complexity"], name, "instructions"),
                     _tags_cell(result["complexity"], name, "responses")])
    return head, rows


def analysis_notes(result: dict) -> list[str]:
    """Why cells are empty, and what the numbers are measured with."""
    if result["embedder"]:
        first = (f"MAUVE and the classifier use {result['embedder']} embeddings of the responses; compare rows with "
                 "each other, not with the paper's GPT-2 numbers (Table 3). Classifier accuracy 0.5 = indistinguishable.")
    else:
        first = f"MAUVE and the classifier were not computed: no two response sets have {MIN_ITEMS} texts or more."
    notes = [first, f"Tokens: {result['tokenizer']}."]
    for col, div in result["diversity"].items():
        notes += [f"{col} trigrams, {n}: {why}" for n, why in div["notes"].items()]
    cx = result["complexity"]
    if "skipped" in cx:
        notes.append(f"Tags: skipped ({cx['skipped']}).")
    else:
        cells = [c for s in cx["sets"].values() for c in s.values() if c]
        failed, untagged = sum(c["failed"] for c in cells), sum(c["untagged"] for c in cells)
        notes.append(f"Tags by {cx['model']} with prompt tag.jinja on up to {cx['samples_per_set']} pairs per set "
                     f"(texts cut at {cx['max_chars']} characters); not comparable with InsTag's numbers (Table 4). "
                     f"{untagged} of {sum(c['n'] for c in cells)} tagged texts got no usable tag (an echo of the "
                     f"text, or only sentences) and count as 0; {failed} failed requests are left out.")
    return notes


def _md_table(head: list[str], rows: list[list[str]]) -> str:
    esc = lambda s: str(s).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(map(esc, head)) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(map(esc, r)) + " |" for r in rows])


def to_markdown(result: dict) -> str:
    """analysis.md: the run summary, the comparison table, the per-set table and the notes."""
    run = result["run"]
    funnel = " → ".join(f"{k} {v}" for k, v in run["funnel"].items())
    scores = ", ".join(f"{k}: {v}" for k, v in (run["scores"] or {}).items()) or "—"
    rejected = ", ".join(f"{r['stage']}/{r['reason']} {r['rows']}" for r in run["rejected"]) or "none"
    parts = [f"# Analysis of {result['run_dir']}", "",
             f"Variant: {run['variant']}. Funnel: {funnel}.", f"Scores: {scores}. Rejected: {rejected}.", "",
             "## How far apart the sets are (paper Table 3)", "", _md_table(*comparison_table(result)), "",
             "## Lengths, diversity, complexity per set (Table 6, Fig. 3, Table 4)", "",
             _md_table(*set_table(result)), "", "## Notes", ""]
    parts += [f"- {n}" for n in analysis_notes(result)]
    return "\n".join(parts) + "\n"

"""What the report shows, read from a run dir: the example browser's rows and the figures.

An example is a row at the furthest stage it reached, with a word diff of its rewrite against its
document; texts are cut at MAX_CHARS and the browser holds the first MAX_EXAMPLES rows in input
order, so a huge run still makes a page a browser opens. Figures are drawn with matplotlib's
object API (no pyplot state) and come back as base64 PNG, to be inlined in the page.
"""

from __future__ import annotations

import base64
import difflib
import io
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .sets import iter_jsonl, stage_rows

MAX_EXAMPLES = 1000  # rows in the browser; a bigger run shows the first ones in input order
MAX_CHARS = 20000  # per text in the browser: keeps the page (and the diff) small on huge documents
_TOKEN = re.compile(r"\S+\s*")


# ----------------------------------------------------------------------------------- examples


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
        "unsupported": _unsupported(row),
    }


def _unsupported(row: dict) -> str | None:
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


LENGTH_PANELS = {"documents": "documents", "instructions": "instructions", "rewrites": "rewritten",
                 "distilled": "distilled"}  # panel -> the kind of text (`Stage.texts`)


def length_sets(run_dir: Path) -> dict[str, list[int]]:
    """Words per text for each kind, from the stage that made it (documents: once cleaned)."""
    from ..pipeline.registry import text_source

    def words(kind: str) -> list[int]:
        stage, key = text_source(kind)
        rows = stage_rows(run_dir, stage, (key,)).values()
        return [len(r[key].split()) for r in rows
                if r["_status"] == "done" and isinstance(r[key], str) and r[key].strip()]

    return {panel: words(kind) for panel, kind in LENGTH_PANELS.items()}


def curate_threshold(run_dir: Path) -> float | None:
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

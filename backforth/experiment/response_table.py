"""The datasets judged head to head before any fine-tune: their responses, and their instructions.

The fine-tuned table (`table.md`) asks what a model trained on each dataset is worth; it costs a
fine-tune per dataset and, at a demo's size, says nothing. This table asks what the data is worth,
at the cost of judging it:

* **responses**: for every two compared datasets that share instructions (`filter`, `filter+rewrite`
  and `distill` hold the same instructions with the document, its rewrite and the distilled answer as
  the response), the judge compares the two responses to each shared instruction, both orders. Shared
  instructions whose two responses are identical (`rewrite` and `filter+rewrite` share their rewrites)
  are counted, not judged. Win rate of the later dataset (in `datasets` order) over the earlier one,
  ± SE, n, both sides' average length and the length-controlled win rate (`evaluate.winrate`'s GLM);
* **instructions** (the paper's §5.2 question, read by a judge instead of by fine-tunes): every two
  instruction sources, i.e. the compared datasets grouped by the instructions they hold, the seed
  data's and any external dataset's, paired at random (the i-th of each in the shared order, leaving
  out instructions they both hold), judged on a written rubric (`evaluate.instructions`).

Each row names the judge check that applies to it (`evaluate.judge_check`): a row with `filter` (the
raw document as a response) the "document vs rewrite" one, the other response rows the "invented
fact" one, instruction rows the instruction one. A row whose check failed is marked, and the table
says that its win rate is what this judge prefers, not which data is better. Judgements are cached
(`evaluate.judge`), and each comparison's store resumes.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..evaluate.compare import summarize_judgements
from ..evaluate.data import instruction_key
from ..evaluate.instructions import InstructionJudge, instruction_pair
from ..evaluate.judge import judge_pairs
from ..evaluate.judge_check import KINDS, verdict_line
from .datasets import order_key

log = logging.getLogger(__name__)

DOCUMENT_DATASETS = ("filter",)  # datasets whose response is the raw document
COLUMNS = ["table", "comparison", "first", "second", "win_rate", "standard_error", "lc_win_rate", "n", "n_unjudged",
           "n_identical", "avg_length_first", "avg_length_second", "check", "check_agreement", "check_passed"]


@dataclass
class Comparison:
    table: str  # "responses" | "instructions"
    first: str  # the side whose win rate is reported (output_2)
    second: str  # the baseline (output_1)
    pairs: list[dict]
    n_identical: int = 0
    check: str = ""
    summary: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.first} vs {self.second}"


class LazyEngine:
    """One judge engine for every comparison, built on the first request that misses the cache."""

    def __init__(self, make: Callable[[], object]):
        self._make, self._engine = make, None

    @property
    def engine(self):
        if self._engine is None:
            self._engine = self._make()
        return self._engine

    def __getattr__(self, name: str):
        return getattr(self.engine, name)

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
            self._engine = None


def _sample(ids: list[str], limit: int | None, seed: int) -> list[str]:
    ranked = sorted(ids, key=lambda i: order_key(seed, i))
    return ranked if limit is None else ranked[:limit]


def response_comparisons(datasets: dict[str, list[dict]], limit: int | None, seed: int) -> tuple[list[Comparison], list[str]]:
    """Every two datasets that share instructions (by text): their responses to those, later vs earlier.
    Also the lines saying which pairs had nothing to judge (identical responses)."""
    names, out, skipped = list(datasets), [], []
    by_text = {n: {} for n in names}
    for n in names:
        for r in datasets[n]:
            by_text[n].setdefault(instruction_key(r["instruction"]), r)
    for i, second in enumerate(names):
        for first in names[i + 1:]:
            shared = [k for k in by_text[second] if k in by_text[first]]
            if not shared:
                continue
            differ = [k for k in shared if by_text[first][k]["response"].strip() != by_text[second][k]["response"].strip()]
            identical = len(shared) - len(differ)
            if not differ:
                skipped.append(f"{first} vs {second} (their {identical} shared instructions have identical responses)")
                continue
            keyed = {by_text[second][k]["id"]: k for k in differ}
            chosen = _sample(list(keyed), limit, seed)
            pairs = [{"id": rid, "instruction": by_text[first][keyed[rid]]["instruction"],
                      "output": by_text[first][keyed[rid]]["response"], "generator": first,
                      "reference_output": by_text[second][keyed[rid]]["response"], "reference_generator": second}
                     for rid in chosen]
            check = "document_vs_rewrite" if {first, second} & set(DOCUMENT_DATASETS) else "invented_fact"
            out.append(Comparison("responses", first, second, pairs, identical, check))
    return out, skipped


def instruction_sources(datasets: dict[str, list[dict]], seed_rows: list[dict] | None) -> dict[str, list[dict]]:
    """The distinct instruction sets: datasets holding the same instructions are one source
    (`filter = filter+rewrite = distill`), then the seed data's."""
    groups: list[tuple[list[str], list[dict]]] = []
    for name, rows in datasets.items():
        texts = sorted(instruction_key(r["instruction"]) for r in rows)
        for members, g_rows in groups:
            if sorted(instruction_key(r["instruction"]) for r in g_rows) == texts:
                members.append(name)
                break
        else:
            groups.append(([name], rows))
    sources = {" = ".join(members): [{"id": r["id"], "instruction": r["instruction"]} for r in rows] for members, rows in groups}
    if seed_rows:
        sources["seed"] = [{"id": str(r.get("id") or f"seed-{i}"), "instruction": r["instruction"]} for i, r in enumerate(seed_rows)]
    return sources


def instruction_comparisons(sources: dict[str, list[dict]], limit: int | None, seed: int) -> list[Comparison]:
    """Every two sources, later vs earlier: the i-th instruction of each in the shared order, leaving out the
    instructions both hold, at most `limit` pairs."""
    names, out = list(sources), []
    for i, second in enumerate(names):
        for first in names[i + 1:]:
            keys = {n: {instruction_key(r["instruction"]) for r in sources[n]} for n in (first, second)}
            a = [r for r in sources[first] if instruction_key(r["instruction"]) not in keys[second]]
            b = [r for r in sources[second] if instruction_key(r["instruction"]) not in keys[first]]
            a.sort(key=lambda r: order_key(seed, r["id"]))
            b.sort(key=lambda r: order_key(seed, r["id"]))
            n = min(len(a), len(b), limit or len(a))
            if n == 0:
                continue
            pairs = [instruction_pair(f"{x['id']}|{y['id']}", x["instruction"], y["instruction"], first, second)
                     for x, y in zip(a[:n], b[:n])]
            out.append(Comparison("instructions", first, second, pairs, check="instructions"))
    return out


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name.replace("+", "_plus_").replace(" = ", "_eq_"))


def run_comparisons(comparisons: list[Comparison], judge, folder: Path, engine) -> None:
    """Judge every comparison (a store per comparison under `folder`, resumable; every call cached)."""
    for c in comparisons:
        path = folder / c.table / f"{_slug(c.first)}__vs__{_slug(c.second)}.jsonl"
        stage = InstructionJudge(judge.model, judge.method, judge.both_orders, 0.0, judge.max_tokens) \
            if c.table == "instructions" else None
        stats = judge_pairs(c.pairs, judge.model, path, judge.method, judge.both_orders, stage=stage,
                            max_tokens=judge.max_tokens, engine=engine)
        if stats.errors:
            from ..errors import UserError

            raise UserError(f"{len(stats.errors)} pairs of {c.name} could not be judged (first: "
                            f"{stats.errors[0]['error']}); run the same command again to retry them")
        c.summary = summarize_judgements(path)
        c.summary["avg_length_second"] = _mean_len(path)
        log.info(f"experiment: {c.table} {c.name}: win rate {c.summary['win_rate']:.1f} over {c.summary['n_total']} "
            f"pairs ({stats.judge_calls} judge calls, {stats.cached_calls} cached)")


def _mean_len(path: Path) -> float | None:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = [r for r in rows if r.get("preference") is not None]
    return sum(len(r["output_1"]) for r in rows) / len(rows) if rows else None


# ---------------------------------------------------------------------------------------------- table


def _pct(value, se=None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.2f}" if se is None or math.isnan(se) else f"{value:.2f} ± {se:.2f}"


def _check_cell(c: Comparison, check: dict | None) -> tuple[str, float | None, bool | None]:
    s = (check or {}).get("kinds", {}).get(c.check)
    if s is None:
        return "not checked", None, None
    label = KINDS[c.check]
    return (f"{'✓' if s['passed'] else '✗'} {label} {s['agreement']:.2f}", s["agreement"], s["passed"])


def _apart(comparisons: list[Comparison]) -> str:
    apart, close = [], []
    for c in comparisons:
        s = c.summary
        se = s.get("standard_error")
        far = se is not None and not math.isnan(se) and abs(s["win_rate"] - 50) > 2 * se
        (apart if far else close).append(c.name)
    parts = []
    if apart:
        parts.append("Further than two standard errors from 50%: " + "; ".join(apart) + ".")
    if close:
        parts.append("Within two standard errors of 50% (no preference shown at this size): " + "; ".join(close) + ".")
    return " ".join(parts)


def _section(title: str, comparisons: list[Comparison], check: dict | None) -> list[str]:
    lines = [f"## {title}", "", "| Comparison | Win rate (%) | LC win rate (%) | n | Avg. length (first / second) | Judge check |",
             "|---|---|---|---|---|---|"]
    failed = False
    for c in comparisons:
        s = c.summary
        cell, _agreement, passed = _check_cell(c, check)
        failed |= passed is False
        n = f"{s['n_total']}" + (f" (+{s['n_unjudged']} unjudged)" if s.get("n_unjudged") else "")
        first = "–" if s.get("avg_length") is None else f"{s['avg_length']:.0f}"
        second = "–" if s.get("avg_length_second") is None else f"{s['avg_length_second']:.0f}"
        lines.append(f"| {c.name} | {_pct(s['win_rate'], s['standard_error'])} | {_pct(s.get('lc_win_rate'))} | {n} | "
                     f"{first} / {second} | {cell} |")
    lines += ["", _apart(comparisons)]
    if failed:
        lines += ["", "✗: the judge FAILED the check that applies to this row (see above): its win rate says what "
                  "this judge prefers, not which data is better."]
    return lines


def write_table(comparisons: list[Comparison], skipped: list[str], check: dict | None, judge, out: Path) -> list[dict]:
    """`response_table.md` and `.csv` in `out`; returns the csv's rows."""
    responses = [c for c in comparisons if c.table == "responses"]
    instructions = [c for c in comparisons if c.table == "instructions"]
    orders = "both orders" if judge.both_orders else "one order per pair"
    lines = ["# The datasets judged head to head, before any fine-tune", "",
             f"Judge: {judge.model.model} by {judge.method}, {orders}. This table judges the data itself (each "
             "dataset's responses to the same instructions; the datasets' instructions); the fine-tuned table "
             "(table.md) judges models trained on the data. They answer different questions.", ""]
    if check is None:
        lines += ["Judge check: not run (`response_table.judge_check: false`): nothing says this judge can tell "
                  "these datasets apart.", ""]
    else:
        lines += ["Judge check (labelled pairs of this task, both orders; backforth/data/judge_check):", ""]
        lines += [f"- {verdict_line(k, s)}" for k, s in check["kinds"].items()] + [""]
    if responses:
        lines += _section("Responses to the same instructions", responses, check)
        lines += ["", "Win rate: the share of the judge's preference for the first dataset's response over the "
                  "second's, to the same instruction (50 = no preference), ± one standard error; LC: the same with "
                  "the length difference controlled (the GLM of table.md). Lengths in characters."]
    if skipped:
        lines += ["", "Not compared: " + "; ".join(skipped) + "."]
    if not responses and not skipped:
        lines += ["No two compared datasets share instructions: no response-level comparison."]
    if instructions:
        lines += [""] + _section("Instruction quality (rubric: clear, self-contained, answerable, useful)", instructions, check)
        lines += ["", "Each instruction judged alone, without its answer, against one from the other source (paired "
                  "at random, instructions both hold left out); win rate of the first source."]
    (out / "response_table.md").write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    rows = []
    for c in comparisons:
        s = c.summary
        _cell, agreement, passed = _check_cell(c, check)
        rows.append({"table": c.table, "comparison": c.name, "first": c.first, "second": c.second,
                     "win_rate": s["win_rate"], "standard_error": s["standard_error"], "lc_win_rate": s.get("lc_win_rate"),
                     "n": s["n_total"], "n_unjudged": s.get("n_unjudged", 0), "n_identical": c.n_identical,
                     "avg_length_first": s.get("avg_length"), "avg_length_second": s.get("avg_length_second"),
                     "check": c.check, "check_agreement": agreement, "check_passed": passed})
    with open(out / "response_table.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: ("" if r.get(k) is None else r[k]) for k in COLUMNS})
    return rows

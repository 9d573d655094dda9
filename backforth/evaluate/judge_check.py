"""Can this judge tell the data apart? Its agreement on labelled pairs of the response-level task.

The response-level table (`experiment.response_table`) asks a judge which of two responses to the
same instruction is better: a raw web document against its rewrite, a rewrite against a distilled
answer. A judge that prefers good answers to bad ones (benchmarks/judge_agreement.py) may still be
unable to do this: a document that contains the answer looks complete, and an invented fact reads as
well as a true one. So the judge is checked on this task before its figures are read, on pairs
written for it (`data/judge_check/`, README there):

* `document_vs_rewrite`: a real page (Python's documentation from `pydoc_data.topics`, installed
  packages' PyPI descriptions) against a faithful rewrite of it into an answer to an instruction;
  the rewrite is the better side;
* `invented_fact`: the faithful rewrite against the same text with one fact changed into a false
  one; the faithful side is the better one (the judge sees no document: it has to know);
* `instructions`: a good instruction against one that points at an unseen text, is vague, is not a
  request, or cannot be answered (`evaluate.instructions`' rubric).

Each pair is judged in both orders (a judge that always picks one slot scores 0.5). Reported per
kind: agreement (the share of pairs where the judge prefers the better side; a draw or no verdict
counts half), how often both orders agree, the share of verdicts that named the first slot
(position bias), how often the judge picked the longer side, and the agreement of the two length
rules "always the shorter side" and "always the longer side". A kind passes when the agreement
reaches `min_agreement` and beats both length rules: a judge no better than a length rule shows
nothing about quality.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..config import ModelConfig
from ..engines import Engine
from .instructions import InstructionJudge, instruction_pair
from .judge import MODEL_FIRST, REFERENCE_FIRST, Method, judge_pairs

CHECK_DIR = Path(__file__).parent.parent / "data" / "judge_check"
RESPONSE_PAIRS = CHECK_DIR / "response_pairs.jsonl"
INSTRUCTION_PAIRS = CHECK_DIR / "instruction_pairs.jsonl"
KINDS = {
    "document_vs_rewrite": "raw document vs its faithful rewrite",
    "invented_fact": "faithful answer vs one with an invented fact",
    "instructions": "good instruction vs a flawed one",
}
MIN_AGREEMENT = 0.8


def read_pairs(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def data_identity() -> str:
    """A hash of the labelled pairs: in the experiment step's fingerprint."""
    import hashlib

    return hashlib.sha256(RESPONSE_PAIRS.read_bytes() + INSTRUCTION_PAIRS.read_bytes()).hexdigest()[:12]


def check_judge(judge_cfg: ModelConfig, method: Method, out_dir: str | Path, *, min_agreement: float = MIN_AGREEMENT,
                engine: Engine | None = None, use_cache: bool = True, cache_path: str | Path | None = None,
                response_pairs: Path = RESPONSE_PAIRS, instruction_pairs: Path = INSTRUCTION_PAIRS) -> dict:
    """Judge the labelled pairs (both orders, the better side as `output_2`); write the judgements and
    `judge_check.json` to `out_dir`; return the summary per kind (`summarize`)."""
    out_dir = Path(out_dir)
    responses, instructions = read_pairs(response_pairs), read_pairs(instruction_pairs)
    common = dict(method=method, both_orders=True, engine=engine, use_cache=use_cache, cache_path=cache_path,
                  max_tokens=96)
    judge_pairs([{"id": r["id"], "instruction": r["instruction"], "output": r["better"], "reference_output": r["worse"],
                  "generator": "better", "reference_generator": "worse"} for r in responses],
                judge_cfg, out_dir / "responses.jsonl", **common)
    judge_pairs([instruction_pair(r["id"], r["better"], r["worse"], "better", "worse") for r in instructions],
                judge_cfg, out_dir / "instructions.jsonl", stage=InstructionJudge(judge_cfg, method, True), **common)
    kind = {r["id"]: r["kind"] for r in responses} | {r["id"]: "instructions" for r in instructions}
    sub = {r["id"]: r["kind"] for r in instructions}
    judged = read_pairs(out_dir / "responses.jsonl") + read_pairs(out_dir / "instructions.jsonl")
    summary = {"judge": judged[0]["judge"] if judged else None, "method": method, "min_agreement": min_agreement,
               "kinds": {}}
    for k in KINDS:
        rows = [r for r in judged if kind.get(r["id"]) == k]
        if rows:
            summary["kinds"][k] = summarize(rows, min_agreement)
    summary["kinds"]["instructions"]["by_kind"] = {
        s: round(_mean([_right(r) for r in judged if sub.get(r["id"]) == s]), 3) for s in sorted(set(sub.values()))}
    (out_dir / "judge_check.json").write_text(json.dumps(summary, indent=2))
    return summary


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def _right(row: dict) -> float:
    """1 when the judge prefers the better side (output_2), 0 when the worse, 0.5 for a draw or no verdict."""
    p = row.get("preference")
    return 0.5 if p is None or p == 1.5 else float(p > 1.5)


def summarize(rows: list[dict], min_agreement: float = MIN_AGREEMENT) -> dict:
    """Agreement and its diagnostics over judged labelled pairs (the better side is `output_2`)."""
    right = [_right(r) for r in rows]
    both = [r["preference_by_order"] for r in rows if None not in (r["preference_by_order"] or {}).values()
            and len(r["preference_by_order"] or {}) == 2]
    # P(the first slot) per verdict: model (better) first -> its share; reference first -> 1 - its share
    first = [v - 1 for b in both for o, v in b.items() if o == MODEL_FIRST] + \
            [2 - v for b in both for o, v in b.items() if o == REFERENCE_FIRST]
    longer = [(len(r["output_2"]) > len(r["output_1"])) for r in rows if len(r["output_2"]) != len(r["output_1"])]
    picks_longer = [float((r["preference"] > 1.5) == (len(r["output_2"]) > len(r["output_1"])))
                    for r in rows if r.get("preference") not in (None, 1.5) and len(r["output_2"]) != len(r["output_1"])]
    better_longer = [x for r, x in zip(rows, right) if len(r["output_2"]) > len(r["output_1"])]
    better_shorter = [x for r, x in zip(rows, right) if len(r["output_2"]) < len(r["output_1"])]
    shorter_rule = _mean([0.0 if lo else 1.0 for lo in longer] + [0.5] * (len(rows) - len(longer)))
    longer_rule = 1.0 - shorter_rule
    agreement = _mean(right)
    return {
        "n": len(rows),
        "min_agreement": min_agreement,
        "agreement": round(agreement, 3),
        "both_orders_agree": round(_mean([float((b[MODEL_FIRST] > 1.5) == (b[REFERENCE_FIRST] > 1.5)) for b in both]), 3),
        "first_slot": round(_mean(first), 3),
        "picks_longer": round(_mean(picks_longer), 3),
        "agreement_better_longer": [round(_mean(better_longer), 3), len(better_longer)],
        "agreement_better_shorter": [round(_mean(better_shorter), 3), len(better_shorter)],
        "shorter_rule": round(shorter_rule, 3),
        "longer_rule": round(longer_rule, 3),
        "passed": bool(agreement >= min_agreement and agreement > max(shorter_rule, longer_rule)),
    }


def verdict_line(kind: str, s: dict) -> str:
    """One line for a table or a log: what the check says about reading this judge's figures."""
    what = KINDS.get(kind, kind)
    rule = max(s["shorter_rule"], s["longer_rule"])
    if s["passed"]:
        return f"{what}: agreement {s['agreement']:.2f} on {s['n']} labelled pairs (length rule {rule:.2f}): passed"
    why = (f"below {s.get('min_agreement', MIN_AGREEMENT):.2f}" if s["agreement"] < s.get("min_agreement", MIN_AGREEMENT)
           else f"no better than the length rule {rule:.2f}")
    return (f"{what}: agreement {s['agreement']:.2f} on {s['n']} labelled pairs ({why}): FAILED, "
            "this judge cannot tell these apart")

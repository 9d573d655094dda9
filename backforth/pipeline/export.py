"""Writing a run's outputs from its store: sft.parquet/.jsonl, distilled.parquet, rejects, stats, card.

Everything here is derived from the stage shards, so it can be written again at any time (a resumed
run re-exports from scratch) and always agrees with them. Rows come out in input order. Nothing
here names a stage: the registry's stages say what they contribute (funnel labels, provenance
columns, their own figures), and a row's final verdict is the last stage that saw it.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from ..config import ModelConfig, RunConfig
from . import registry
from .card import write_card
from .stage import DONE, REJECTED, Stage
from .store import RunStore
from .tokens import run_tokens, stage_tokens


def sft_row(row: dict, cfg: RunConfig, provenance: Sequence[str]) -> dict:
    response = row["response"] if "response" in row else row["text"]
    user = row["instruction"] + (f" {cfg.export.tag}" if cfg.export.tag else "")
    out = {
        "id": row["id"],
        "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": response}],
        "instruction": row["instruction"],
        "instruction_source": row.get("instruction_source", "backtranslated"),
        "response": response,
        "variant": cfg.variant,
        "score": row.get("score"),
        "score_expected": row.get("score_expected"),
        "score_method": row.get("score_method"),
        "score_round1": row.get("score_round1"),
        "score_reason": row.get("score_reason"),
        "distilled": row.get("distilled"),
        "unsupported_share": row.get("unsupported_share"),
        "url": row.get("url"),
        "source": row.get("source"),
        "title": row.get("title"),
        "language": row.get("language"),
        "source_id": row.get("source_id"),
        "section": row.get("section"),
    }
    out["provenance"] = {k: row.get(k) for k in provenance}
    return out


def _parquet_schema(provenance: Sequence[str]):
    import pyarrow as pa

    s = pa.string()
    return pa.schema([
        ("id", s), ("messages", pa.list_(pa.struct([("role", s), ("content", s)]))), ("instruction", s),
        ("instruction_source", s), ("response", s), ("variant", s), ("score", pa.int64()),
        ("score_expected", pa.float64()), ("score_method", s), ("score_round1", pa.int64()), ("score_reason", s),
        ("distilled", s), ("unsupported_share", pa.float64()), ("url", s), ("source", s),
        ("title", s), ("language", s), ("source_id", s), ("section", pa.int64()),
        ("provenance", pa.struct([(k, s) for k in provenance])),
    ])


JSONL_COLUMNS = ("id", "messages", "instruction", "response", "score")  # the training file; parquet has every column


DISTILLED = "distilled.parquet"


def stage_summary(run: RunStore, st: type[Stage] | Stage) -> dict:
    """One stage's stats.json entry: rows in, kept, rejected by reason (from the shards' plain
    columns), tokens and seconds (from their metadata), and the stage's own figures."""
    store = run.stage(st.name)
    kept, reasons = 0, Counter()
    for _i, _x, status, reason in store.keys():
        if status == DONE:
            kept += 1
        else:
            reasons[reason] += 1
    counters, seconds, _n = store.totals()
    n = kept + sum(reasons.values())
    summary = {"in": n, "kept": kept, "rejected": sum(reasons.values()), "rejected_by_reason": dict(reasons.most_common()),
               **stage_tokens(counters),
               "seconds": round(seconds, 2), "rows_per_s": round(n / seconds, 3) if seconds else None}
    st.summarize(counters, summary)
    return summary


def reconsidered(run: RunStore, before: type[Stage] | Stage, st: type[Stage] | Stage, summary: dict) -> None:
    """Move the rejects of `before` that the next stage `st` takes up again (a second draw of a
    rewrite, Humpback's second scoring round) out of `before`'s rejects: the later stage gives their
    verdict. They stay counted, under `reconsidered` (reason -> rows) and `reconsidered_by`, so that
    `in` = `kept` + `rejected` + the reconsidered rows, and each row is rejected once across stages."""
    if st.continues != before.name:
        return
    taken = Counter(reason for _i, _x, status, reason in run.stage(before.name).keys()
                    if status != DONE and st.accepts(status, reason))
    if not taken:
        return
    left = Counter(summary["rejected_by_reason"]) - taken
    summary.update(rejected=sum(left.values()), rejected_by_reason=dict(left.most_common()),
                   reconsidered=dict(taken.most_common()), reconsidered_by=st.name)


def funnel(stages: Sequence[type[Stage] | Stage], per_stage: dict[str, dict], n_sft: int) -> dict:
    """Rows left after each step, in the method's words, as each stage labels them."""
    out: dict[str, int] = {}
    for st in stages:
        out.update(st.funnel_steps(per_stage[st.name]))
    out["exported"] = n_sft
    return out


class _Parquet:
    """Rows written to one parquet file in batches (the whole table is never in memory)."""

    def __init__(self, path: Path, schema):
        import pyarrow.parquet as pq

        self.schema, self.batch, self.n = schema, [], 0
        self.writer = pq.ParquetWriter(path, schema, compression="zstd")

    def add(self, row: dict) -> None:
        self.batch.append(row)
        self.n += 1
        if len(self.batch) >= 1000:
            self.flush()

    def flush(self) -> None:
        import pyarrow as pa

        self.writer.write_table(pa.Table.from_pylist(self.batch, schema=self.schema))
        self.batch = []

    def close(self) -> int:
        self.flush()
        self.writer.close()
        return self.n


def _distilled_schema():
    import pyarrow as pa

    s = pa.string()
    return pa.schema([("id", s), ("messages", pa.list_(pa.struct([("role", s), ("content", s)]))),
                      ("instruction", s), ("response", s)])


def export_run(cfg: RunConfig, out: Path, stages: Sequence[Stage], fps: dict,
               model_of: Callable[[str], ModelConfig] | None = None) -> dict:
    """One pass over every stage's shards: each row ends in sft (kept by the last stage), in rejects
    (rejected by the last stage that saw it; a row rejected by one stage but taken up by the next,
    as Humpback's round 2 takes round 1's low scores, is not final), or nowhere (not finished).
    `model_of(role)` names the model of each stage in the card (default: the config's)."""
    run = RunStore(out)
    names = [st.name for st in stages]
    provenance = registry.provenance_columns(stages)
    sft = _Parquet(out / "sft.parquet", _parquet_schema(provenance))
    distilled = _Parquet(out / DISTILLED, _distilled_schema()) if cfg.distill.enabled else None
    tag = f" {cfg.export.tag}" if cfg.export.tag else ""
    n_rejects, languages = 0, Counter()
    with open(out / "sft.jsonl", "w", encoding="utf-8") as fj, open(out / "rejects.jsonl", "w", encoding="utf-8") as fr:
        for r, last in run.final(names):
            if r["_status"] == DONE and last == names[-1]:
                row = sft_row(r, cfg, provenance)
                fj.write(json.dumps({k: row[k] for k in JSONL_COLUMNS}, ensure_ascii=False) + "\n")
                row["url"], row["source"], row["title"] = (None if row[k] is None else str(row[k])
                                                           for k in ("url", "source", "title"))
                languages[row["language"] or "und"] += 1
                sft.add(row)
                if distilled is not None and r.get("distilled"):
                    distilled.add({"id": r["id"], "messages": [{"role": "user", "content": r["instruction"] + tag},
                                                               {"role": "assistant", "content": r["distilled"]}],
                                   "instruction": r["instruction"], "response": r["distilled"]})
            elif r["_status"] == REJECTED:
                first = {"id": r["id"], "stage": r["stage"], "reason": r["reason"]}
                rest = {k: v for k, v in r.items() if k not in first and k != "_status"}
                fr.write(json.dumps({**first, **rest}, ensure_ascii=False, default=str) + "\n")
                n_rejects += 1
    n_sft = sft.close()
    n_distilled = distilled.close() if distilled is not None else 0
    per_stage = {st.name: stage_summary(run, st) for st in stages}
    for before, st in zip(stages, stages[1:]):
        reconsidered(run, before, st, per_stage[before.name])
    for st in stages:
        per_stage[st.name].update(st.outcome(run, stages) or {})
    stats = {
        "variant": cfg.variant,
        "funnel": funnel(stages, per_stage, n_sft),
        "stages": per_stage,
        "outputs": {"sft": n_sft, "distilled": n_distilled, "rejects": n_rejects},
        "languages": dict(languages.most_common()),  # of the exported pairs
        "tokens": run_tokens(per_stage, n_sft),
        "fingerprints": {n: fp["hash"] for n, fp in fps.items()},
    }
    (out / "stats.json").write_text(json.dumps(stats, indent=2))
    write_card(cfg, out, stats, fps, stages, model_of)
    return stats

"""Writing a run's outputs from its stage files: sft.jsonl/.parquet, distilled.jsonl, rejects, stats, card.

Everything here is derived from the append-only stage files (jsonl, or parquet shards with executor
ray: `shards.open_stage`), so it can be written again at any time (a resumed run re-exports from
scratch) and always agrees with them. Rows come out in input order.
"""

from __future__ import annotations

import json
from array import array
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from ..config import RunConfig
from .card import write_card
from .shards import ShardStore, open_stage
from .store import DONE, REJECTED, StageFile

PROVENANCE_COLUMNS = (
    "backtranslate_model", "backtranslate_prompt", "curate_model", "curate_prompt", "rewrite_model",
    "rewrite_prompt", "distill_model", "distill_prompt")


def _in_input_order(sf: StageFile | ShardStore, status: str) -> Iterator[dict]:
    """Rows of one status sorted by `_index`, holding only (index, offset) pairs in memory."""
    import numpy as np

    if isinstance(sf, ShardStore):  # its rows come merged by `_index` already
        yield from sf.rows(status)
        return
    keys, offsets = array("q"), array("q")  # 16 bytes a row, not two Python ints
    if not sf.exists():
        return
    with open(sf.path, "rb") as fh:
        pos = 0
        for line in fh:
            if line.endswith(b"\n"):
                row = json.loads(line)
                if row.get("_status") == status:
                    keys.append(row.get("_index", 0))
                    offsets.append(pos)
            pos += len(line)
    order = np.argsort(np.frombuffer(keys, dtype=np.int64), kind="stable")
    with open(sf.path, "rb") as fh:
        for i in order:
            fh.seek(offsets[i])
            yield json.loads(fh.readline())


def sft_row(row: dict, cfg: RunConfig) -> dict:
    response = row.get("response") if "rewrite" in cfg.variant else row["text"]
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
    }
    out["provenance"] = {k: row.get(k) for k in PROVENANCE_COLUMNS}
    return out


def _parquet_schema():
    import pyarrow as pa

    s = pa.string()
    return pa.schema([
        ("id", s), ("messages", pa.list_(pa.struct([("role", s), ("content", s)]))), ("instruction", s),
        ("instruction_source", s), ("response", s), ("variant", s), ("score", pa.int64()), ("score_expected", pa.float64()), ("score_round1", pa.int64()),
        ("score_method", s), ("score_reason", s), ("distilled", s), ("unsupported_share", pa.float64()), ("url", s), ("source", s),
        ("provenance", pa.struct([(k, s) for k in PROVENANCE_COLUMNS])),
    ])


def _write_sft(rows: Iterator[dict], jsonl: Path, parquet: Path) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema, n, batch = _parquet_schema(), 0, []
    with open(jsonl, "w", encoding="utf-8") as fj, pq.ParquetWriter(parquet, schema) as fp:
        for row in rows:
            fj.write(json.dumps(row, ensure_ascii=False) + "\n")
            for k in ("url", "source"):
                row[k] = None if row[k] is None else str(row[k])
            batch.append(row)
            n += 1
            if len(batch) >= 1000:
                fp.write_table(pa.Table.from_pylist(batch, schema=schema))
                batch = []
        if batch:
            fp.write_table(pa.Table.from_pylist(batch, schema=schema))
    return n


def _stage_stats(sf: StageFile | ShardStore, name: str) -> dict:
    kept, reasons, tokens = 0, Counter(), Counter()
    scores, unparsed, distilled_none = Counter(), 0, Counter()
    for row in sf.rows():
        if row["_status"] == DONE:
            kept += 1
        elif row.get("stage") == name or (name == "prepare" and row.get("stage") == "input"):
            reasons[row["reason"]] += 1
        tokens["prompt"] += row.get(f"{name}_prompt_tokens") or 0
        tokens["completion"] += row.get(f"{name}_completion_tokens") or 0
        if name.startswith("curate"):
            if row.get("score") is not None:
                scores[str(row["score"])] += 1
            elif row.get("reason") == "unparsed_score":
                unparsed += 1
        if name == "distill" and row.get("distill_reason"):
            distilled_none[row["distill_reason"]] += 1
        if name == "backtranslate" and row["_status"] == DONE and row.get("instruction_source") == "input":
            tokens["given"] += 1
    n = kept + sum(reasons.values())
    seconds = sf.seconds()
    stats = {"in": n, "kept": kept, "rejected": sum(reasons.values()), "rejected_by_reason": dict(reasons.most_common()),
             "prompt_tokens": tokens["prompt"], "completion_tokens": tokens["completion"],
             "seconds": round(seconds, 2), "rows_per_s": round(n / seconds, 3) if seconds else None}
    if name.startswith("curate"):
        parsed = sum(scores.values())
        stats["score_distribution"] = {k: scores[k] for k in "12345"}
        stats["parse_rate"] = round(parsed / (parsed + unparsed), 4) if parsed + unparsed else None
        stats["parse_failures"] = unparsed
    if name == "distill":
        stats["distill_failed_by_reason"] = dict(distilled_none)
    if name == "backtranslate":
        stats["instructions_from_input"] = tokens["given"]
    if name == "grounding":
        stats["ungrounded_rate"] = round(reasons.get("ungrounded", 0) / n, 4) if n else None
    return stats


def export_run(cfg: RunConfig, out: Path, stage_names: list[str], fingerprints: dict) -> dict:
    files = {n: open_stage(out, n, cfg.runner.executor) for n in stage_names}
    final = files[stage_names[-1]]
    n_sft = _write_sft((sft_row(r, cfg) for r in _in_input_order(final, DONE)), out / "sft.jsonl", out / "sft.parquet")
    n_distilled = 0
    if cfg.distill.enabled:
        with open(out / "distilled.jsonl", "w", encoding="utf-8") as fh:
            for r in _in_input_order(final, DONE):
                if r.get("distilled"):
                    user = r["instruction"] + (f" {cfg.export.tag}" if cfg.export.tag else "")
                    fh.write(json.dumps({"id": r["id"], "messages": [
                        {"role": "user", "content": user}, {"role": "assistant", "content": r["distilled"]}],
                        "instruction": r["instruction"], "response": r["distilled"]}, ensure_ascii=False) + "\n")
                    n_distilled += 1
    n_rejects = 0
    with open(out / "rejects.jsonl", "w", encoding="utf-8") as fh:
        for name, sf in files.items():
            for r in sf.rows(status=REJECTED):
                if name == "curate" and "curate_m1" in files and r.get("reason") == "low_score":
                    continue  # not final: M1 scored this row again in round 2
                if r.get("stage") in (name, "input"):
                    first = {"id": r["id"], "stage": r["stage"], "reason": r["reason"]}
                    rest = {k: v for k, v in r.items() if k not in first and k != "_status"}
                    fh.write(json.dumps({**first, **rest}, ensure_ascii=False) + "\n")
                    n_rejects += 1
    per_stage = {n: _stage_stats(sf, n) for n, sf in files.items()}
    stats = {
        "variant": cfg.variant,
        "funnel": _funnel(per_stage, n_sft),
        "stages": per_stage,
        "outputs": {"sft": n_sft, "distilled": n_distilled, "rejects": n_rejects},
        "fingerprints": {n: fp["hash"] for n, fp in fingerprints.items()},
    }
    (out / "stats.json").write_text(json.dumps(stats, indent=2))
    write_card(cfg, out, stats, fingerprints)
    return stats


def _funnel(per_stage: dict, n_sft: int) -> dict:
    """Rows left after each step, in the method's words (stages absent from the run are skipped)."""
    kept = {name: st["kept"] for name, st in per_stage.items()}
    funnel = {"documents_in": per_stage["prepare"]["in"], "prepared": kept["prepare"]}
    if "dedup_documents" in kept:
        funnel["unique_documents"] = kept["dedup_documents"]
    funnel["instructions"] = kept["backtranslate"]
    if per_stage["backtranslate"].get("instructions_from_input"):
        funnel["instructions_from_input"] = per_stage["backtranslate"]["instructions_from_input"]
    for stage, step in (("dedup_instructions", "unique_instructions"), ("decontaminate", "uncontaminated")):
        if stage in kept:
            funnel[step] = kept[stage]
    if "curate" in per_stage:
        reasons = per_stage["curate"]["rejected_by_reason"]
        funnel["scored"] = per_stage["curate"]["in"] - reasons.get("unparsed_score", 0) - reasons.get("engine_error", 0)
        funnel["kept"] = kept["curate"]
    if "curate_m1" in kept:
        funnel["kept_by_m1"] = kept["curate_m1"]
    if "top_share" in kept:
        funnel["kept_top_share"] = kept["top_share"]
    if "rewrite" in kept:
        funnel["rewritten"] = kept["rewrite"]
    if "grounding" in kept:
        funnel["grounded"] = kept["grounding"]
    funnel["exported"] = n_sft
    return funnel

"""What a finished run prints: its funnel, scores and rejects, and, when little was exported, why and what to change."""

from __future__ import annotations

from pathlib import Path

from . import registry


def summary(stats: dict, out: Path, cfg=None) -> tuple[list[str], str | None]:
    """The lines a finished run prints, and a warning for an empty input or a yield under 10%."""
    lines = ["\nfunnel: " + "  ->  ".join(f"{k} {v}" for k, v in stats["funnel"].items())]
    cur = stats["stages"].get("curate")
    if cur:
        lines.append(f"scores: {cur['score_distribution']}  parse rate {cur['parse_rate']}")
    reasons = {f"{s}:{r}": n for s, st in stats["stages"].items() for r, n in st["rejected_by_reason"].items()}
    if reasons:
        lines.append("rejected: " + ", ".join(f"{k} {v}" for k, v in reasons.items()))
    lines.append(f"wrote {out / 'sft.jsonl'} ({stats['outputs']['sft']} pairs), {out / 'README.md'}, {out / 'stats.json'}")
    n_in, n_out = stats["funnel"].get("documents_in", 0), stats["outputs"]["sft"]
    where = f" ({cfg.input.path})" if cfg is not None else ""
    if not n_in:
        return lines, f"note: the input had no documents{where}, so nothing was exported; check input.path."
    if n_out < 0.1 * n_in:
        return lines, low_yield(stats, cfg, n_in, n_out)
    return lines, None


def low_yield(stats: dict, cfg, n_in: int, n_out: int) -> str:
    """Why under 10% of the documents were exported, and the knobs that move it."""
    lines = [f"\nonly {n_out} of {n_in} documents ({100 * n_out / n_in:.1f}%) were exported."]
    for name in ("curate", "curate_m1"):
        st = stats["stages"].get(name)
        if st and "score_distribution" in st:
            dist = "  ".join(f"{k}: {v}" for k, v in st["score_distribution"].items())
            lines.append(f"  {name} scores  {dist}  (parse rate {st.get('parse_rate')})")
    reasons = sorted(((n, s, r) for s, st in stats["stages"].items() for r, n in st["rejected_by_reason"].items()),
                     reverse=True)[:4]
    if reasons:
        lines.append("  main rejects  " + ", ".join(f"{s}:{r} {n}" for n, s, r in reasons))
    curation = ("curate", "curate_m1", "top_share")
    knobs = cfg is not None and "filter" in cfg.variant and any(s in curation for _n, s, _r in reasons)
    for _n, s, r in reasons:
        if knobs and s in curation:
            continue  # the knobs below, with their values
        try:
            told = getattr(registry.by_name(s), "rejects", {}).get(r, "")
        except KeyError:  # not a stage: the input's own rejects
            from .. import corpus

            told = getattr(corpus, "INPUT_REJECTS", {}).get(r, "") if s == "input" else ""
        if "Try:" in told:
            lines.append(f"  {s}:{r}: try{told.split('Try:', 1)[1].rstrip('.')}.")
    if knobs:
        c = cfg.curate
        lines += [
            "what moves the share kept by curation:",
            f"  curate.threshold (now {c.threshold:g}): lower it to keep lower scores, e.g. --set curate.threshold=4",
            f"  curate.threshold_on (now {c.threshold_on}): `expected` compares the threshold to the expected score "
            "(logprobs), which small scorers put on 5 less rarely",
            f"  curate.keep_share (now {c.keep_share}): keep the best share instead, e.g. --set curate.keep_share=0.3",
            f"  a stronger scorer: models.scorer.model (now {cfg.models.scorer.model})",
            "  variant: rewrite (--set variant=rewrite) has no score filter",
        ]
    lines.append("  docs/rejects.md explains every reject reason and the setting that moves it.")
    return "\n".join(lines)

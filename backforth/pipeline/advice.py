"""What to try when a run exported little: one function, shown after a run and written into the card.

Under a tenth of the documents exported says why (the scores, the main reject reasons) and names the
settings that move it, with their current values: the knobs of the keep rule when the stages that
apply it (`Stage.applies_keep_rule`) rejected most, and each other reason's own "Try:" from its stage.
"""

from __future__ import annotations

from . import registry

LOW_YIELD = 0.1  # under this share of the documents exported, a run says why


def scoring(per_stage: dict[str, dict]) -> dict:
    """The summary of a run's first scoring stage (the one that reports a score distribution), or {}."""
    return next((st for st in per_stage.values() if "score_distribution" in st), {})


def low_yield(stats: dict, cfg=None) -> list[str]:
    """Why under 10% of the documents were exported, and the knobs that move it; [] when the yield is
    higher (or nothing came in: the caller says that)."""
    n_in, n_out = stats["funnel"].get("documents_in", 0), stats["outputs"]["sft"]
    if not n_in or n_out >= LOW_YIELD * n_in:
        return []
    lines = [f"only {n_out} of {n_in} documents ({100 * n_out / n_in:.1f}%) were exported."]
    for name, st in stats["stages"].items():
        if "score_distribution" in st:
            dist = "  ".join(f"{k}: {v}" for k, v in st["score_distribution"].items())
            lines.append(f"  {name} scores  {dist}  (parse rate {st.get('parse_rate')})")
    reasons = sorted(((n, s, r) for s, st in stats["stages"].items() for r, n in st["rejected_by_reason"].items()),
                     reverse=True)[:4]
    if reasons:
        lines.append("  main rejects  " + ", ".join(f"{s}:{r} {n}" for n, s, r in reasons))
    curation = registry.keep_rule_stages()
    knobs = cfg is not None and "filter" in cfg.variant and any(s in curation for _n, s, _r in reasons)
    for _n, s, r in reasons:
        if knobs and s in curation:
            continue  # the knobs below, with their values
        told = _told(s, r)
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
    return lines


def _told(stage: str, reason: str) -> str:
    """What the stage documents about a reject reason ("... Try: ..."); the input's own for `input`."""
    try:
        return registry.by_name(stage).rejects.get(reason, "")
    except KeyError:  # not a stage of the method: the input's rejects, or a user's own stage
        from ..corpus import INPUT_REJECTS

        return INPUT_REJECTS.get(reason, "") if stage == "input" else ""

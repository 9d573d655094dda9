"""What a finished run prints: its funnel, scores and rejects, and, when little was exported, why and what to change."""

from __future__ import annotations

from pathlib import Path

from .advice import low_yield, scoring
from .tokens import summary_line


def summary(stats: dict, out: Path, cfg=None) -> tuple[list[str], str | None]:
    """The lines a finished run prints, and a warning for an empty input or a yield under 10%."""
    lines = ["\nfunnel: " + "  ->  ".join(f"{k} {v}" for k, v in stats["funnel"].items())]
    scored = scoring(stats["stages"])
    if scored:
        lines.append(f"scores: {scored['score_distribution']}  parse rate {scored['parse_rate']}")
    reasons = {f"{s}:{r}": n for s, st in stats["stages"].items() for r, n in st["rejected_by_reason"].items()}
    if reasons:
        lines.append("rejected: " + ", ".join(f"{k} {v}" for k, v in reasons.items()))
    if tokens := summary_line(stats):
        lines.append(tokens)
    lines.append(f"wrote {out / 'sft.jsonl'} ({stats['outputs']['sft']} pairs), {out / 'README.md'}, {out / 'stats.json'}")
    where = f" ({cfg.input.path})" if cfg is not None else ""
    if not stats["funnel"].get("documents_in", 0):
        return lines, f"note: the input had no documents{where}, so nothing was exported; check input.path."
    advice = low_yield(stats, cfg)
    return lines, ("\n" + "\n".join(advice)) if advice else None

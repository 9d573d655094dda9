"""What a run spent on models: prompt and completion tokens per stage, and per exported pair.

Every model call is counted where the runner hands a chunk's results back to its stage
(`chunks.finish_chunk`), so a stage cannot forget to count and a user's own stage is counted like
ours. The counts are the engines' own: the transformers engine's tokenized lengths, the `usage` of
an OpenAI-compatible reply, vLLM's token ids. A reply served from a cache (`Result.cached`) cost no
model time now: it is counted apart (`cached_*`), not in the run's tokens. The counters go into
each chunk's shard metadata with the chunk's rows, so a resumed run's totals include what the
earlier part spent.

The run's figure is **LLM tokens per exported pair**: every prompt and completion token the run's
models processed (the rejected documents' too), divided by the pairs exported.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ..engines.base import Result

COUNTERS = ("requests", "prompt_tokens", "completion_tokens",
            "cached_requests", "cached_prompt_tokens", "cached_completion_tokens")


def count_results(count, results: Iterable[Result]) -> None:
    """Add a chunk's results to a stage's counters (`count(key, n)`, `Stage.count`)."""
    for res in results:
        pre = "cached_" if res.cached else ""
        count(f"{pre}requests", 1)
        count(f"{pre}prompt_tokens", int(res.prompt_tokens or 0))
        count(f"{pre}completion_tokens", int(res.completion_tokens or 0))


def stage_tokens(counters: Mapping[str, int]) -> dict[str, int]:
    """A stage's token figures for stats.json (every key, 0 when the stage called no model)."""
    return {k: int(counters.get(k, 0)) for k in COUNTERS}


def run_tokens(per_stage: Mapping[str, Mapping], exported: int) -> dict:
    """The run's totals over its stages' stats.json entries, and tokens per exported pair (None
    when nothing was exported)."""
    total = {k: sum(int(st.get(k, 0) or 0) for st in per_stage.values()) for k in COUNTERS}
    llm = total["prompt_tokens"] + total["completion_tokens"]
    return {**total, "total_tokens": llm,
            "per_exported_pair": round(llm / exported, 1) if exported else None}


def model_stages(per_stage: Mapping[str, Mapping]) -> dict[str, Mapping]:
    """The stages that asked a model (sent or served from a cache), in order."""
    return {n: st for n, st in per_stage.items() if st.get("requests") or st.get("cached_requests")}


def summary_line(stats: Mapping) -> str | None:
    """`tokens: backtranslate 1200+300, curate ...; 4500 in all, 562.5 per exported pair` (None: no model call)."""
    tok = stats.get("tokens")
    used = model_stages(stats.get("stages", {}))
    if not tok or not used:
        return None
    parts = [f"{n} {st['prompt_tokens']}+{st['completion_tokens']}" for n, st in used.items()]
    per = tok["per_exported_pair"]
    line = (f"tokens (prompt+completion): {', '.join(parts)}; {tok['total_tokens']} in all, "
            f"{per if per is not None else 'n/a (no pair exported)'} per exported pair")
    if tok["cached_requests"]:
        line += (f"; {tok['cached_requests']} requests from a cache "
                 f"({tok['cached_prompt_tokens'] + tok['cached_completion_tokens']} tokens, not counted above)")
    return line


def card_section(stats: Mapping) -> list[str]:
    """The card's token table and the run's tokens per exported pair, as markdown lines."""
    tok = stats.get("tokens")
    used = model_stages(stats.get("stages", {}))
    if not tok or not used:
        return []
    rows = ["| stage | requests | prompt tokens | completion tokens | from a cache (requests) |", "|---|---|---|---|---|"]
    rows += [f"| {n} | {st['requests']} | {st['prompt_tokens']} | {st['completion_tokens']} | {st['cached_requests']} |"
             for n, st in used.items()]
    per = tok["per_exported_pair"]
    return ["## Model tokens", "", *rows, "",
            f"All stages: {tok['total_tokens']} LLM tokens ({tok['prompt_tokens']} prompt, "
            f"{tok['completion_tokens']} completion) for {stats['outputs']['sft']} exported "
            f"{'pair' if stats['outputs']['sft'] == 1 else 'pairs'}: "
            + (f"**{per} tokens per exported pair**." if per is not None else "no pair was exported.")
            + (f" {tok['cached_requests']} requests were answered from a cache and are not counted in these tokens."
               if tok["cached_requests"] else ""), ""]

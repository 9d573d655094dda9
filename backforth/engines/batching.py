"""Packing requests into batches by tokens, for the in-process engines that pad a batch.

A left-padded batch costs its rows times its longest prompt (plus, for generation, the new tokens
every row may add to the KV cache), whatever the other rows' lengths. With fixed batches of
`batch_size`, one 4,500-token web page makes fifteen short neighbours pay for 4,500 tokens each,
and attention grows with the square of that. So requests are sorted by length and packed greedily
into batches whose padded size stays under `max_tokens`, with at most `max_rows` rows: short
prompts go many to a batch, long ones few, and one longer than the budget runs alone (it is the
model's context, not this budget, that decides whether a prompt may run at all).
"""

from __future__ import annotations

from collections.abc import Sequence


def padded_size(rows: int, longest: int, extra: int) -> int:
    """Tokens a left-padded batch holds: every row as long as the longest, plus `extra` new ones."""
    return rows * (longest + extra)


def pack_by_tokens(lengths: Sequence[int], extra: int, max_tokens: int, max_rows: int) -> list[list[int]]:
    """Indices into `lengths`, grouped into batches (shortest first) whose `padded_size` is at most
    `max_tokens` and whose rows are at most `max_rows`. A request over the budget gets a batch of
    its own. Every index appears exactly once."""
    if max_tokens < 1 or max_rows < 1:
        raise ValueError("max_tokens and max_rows must be at least 1")
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        # sorted ascending: the newcomer is the batch's longest row
        if current and (len(current) >= max_rows or padded_size(len(current) + 1, lengths[i], extra) > max_tokens):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches

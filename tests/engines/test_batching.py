"""Packing requests into batches by tokens: order, budget, oversized requests alone."""

import random

import pytest

from backforth.engines.batching import pack_by_tokens, padded_size


def _check(lengths, extra, budget, rows):
    batches = pack_by_tokens(lengths, extra, budget, rows)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))  # every request exactly once
    for b in batches:
        assert len(b) <= rows
        longest = max(lengths[i] for i in b)
        assert len(b) == 1 or padded_size(len(b), longest, extra) <= budget
    return batches


def test_every_request_once_and_under_the_budget():
    rng = random.Random(0)
    for _ in range(200):
        lengths = [int(rng.lognormvariate(5, 1.2)) + 1 for _ in range(rng.randint(1, 60))]
        _check(lengths, rng.choice([0, 1, 64]), rng.choice([256, 2048, 16384]), rng.choice([1, 4, 16]))


def test_short_prompts_share_a_batch_and_a_long_one_runs_alone():
    lengths = [100] * 15 + [4500]
    batches = _check(lengths, 64, 16384, 16)
    assert [15] in batches  # the long page is alone
    assert sorted(len(b) for b in batches) == [1, 15]


def test_a_request_over_the_budget_is_alone_not_dropped():
    batches = _check([50, 9000, 60], 0, 1000, 16)
    assert [1] in batches and sorted(map(len, batches)) == [1, 2]


def test_batch_size_caps_rows():
    batches = _check([10] * 40, 0, 10 ** 6, 16)
    assert [len(b) for b in batches] == [16, 16, 8]


def test_new_tokens_count_towards_the_budget():
    # 4 rows x (100 + 156) = 1024 fits; a fifth does not
    assert [len(b) for b in pack_by_tokens([100] * 8, 156, 1024, 16)] == [4, 4]


def test_bad_budget_is_refused():
    with pytest.raises(ValueError):
        pack_by_tokens([1], 0, 0, 1)

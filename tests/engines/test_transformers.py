"""The transformers engine on the real embedded model: token batching, last-position scoring, devices."""

import pytest
import torch

from backforth.engines import EngineError, Request
from backforth.engines.device import resolve_device
from backforth.engines.transformers import TransformersEngine

CHOICES = ["1", "2", "3", "4", "5"]


@pytest.fixture(scope="module")
def engine():
    return TransformersEngine(model="embedded:smollm2-135m", batch_size=16, max_batch_tokens=4096, device="cpu")


def _long_text(n_words: int) -> str:
    import argparse
    import inspect

    words = inspect.getsource(argparse).split()
    return " ".join(words[:n_words])


def test_last_position_logprobs_equal_the_full_logits_ones(engine):
    """logits_to_keep=1 reads the same next-token distribution as the full logits did, padded rows included."""
    prompts = ["Score: ", "The capital of France is", _long_text(300) + "\nScore:"]
    seqs = [engine.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    fast = engine.next_token_logprobs(seqs)
    ids, mask = engine._pad(seqs)
    with torch.inference_mode():
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        full = engine.model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
    assert full.shape[1] == ids.shape[1] > 1  # the old path really computed every position
    slow = torch.log_softmax(full[:, -1, :].float(), dim=-1)
    assert torch.allclose(fast, slow, atol=1e-4)


def test_choice_scores_match_the_full_distribution(engine):
    req = Request(messages=[{"role": "user", "content": "Rate this answer from 1 to 5."}], assistant_prefix="Score:",
                  choices=CHOICES, max_tokens=1, temperature=0.0)
    res = engine.generate([req])[0]
    seq = engine.tokenizer(engine.render(req), add_special_tokens=False)["input_ids"]
    row = engine.next_token_logprobs([seq])[0]
    for c in CHOICES:
        assert res.choice_logprobs[c] == pytest.approx(float(torch.logsumexp(row[engine._choice_ids(c)], 0)), abs=1e-5)
    assert res.text == max(res.choice_logprobs, key=res.choice_logprobs.get)


def test_one_very_long_prompt_among_short_ones_returns_every_result_in_order(engine):
    long_req = Request(prompt=_long_text(1500), max_tokens=4, temperature=0.0, key="long")
    short = [Request(prompt=f"Question {i}: what is {i} plus {i}?", max_tokens=4, temperature=0.0, key=f"s{i}")
             for i in range(12)]
    requests = short[:5] + [long_req] + short[5:]
    seqs = [len(engine.tokenizer(engine.render(r), add_special_tokens=False)["input_ids"]) for r in requests]
    assert max(seqs) + 4 > engine.max_batch_tokens // 2  # the long one cannot share a batch with many
    results = engine.generate(requests)
    assert [r.key for r in results] == [r.key for r in requests]
    assert all(r.ok and r.finish_reason in {"stop", "length"} for r in results)
    assert results[5].completion_tokens > 0
    assert results[5].prompt_tokens == max(seqs)
    # the same requests one at a time give the same greedy text: packing changes nothing but speed
    alone = [engine.generate([r])[0].text for r in (requests[0], requests[5])]
    assert alone == [results[0].text, results[5].text]


def test_scoring_packs_by_tokens_too(engine):
    reqs = [Request(prompt=_long_text(n) + "\nScore:", choices=CHOICES, max_tokens=1, temperature=0.0, key=str(n))
            for n in (20, 3000, 40)]
    results = engine.generate(reqs)
    assert [r.key for r in results] == ["20", "3000", "40"] and all(r.ok for r in results)


def test_model_runs_on_the_chosen_device_in_its_dtype(engine):
    p = next(engine.model.parameters())
    assert p.device.type == "cpu" and engine.device == "cpu"
    assert p.dtype == engine.dtype
    assert engine.model.config._attn_implementation == "sdpa"


def test_device_selection():
    assert resolve_device("auto", cuda_available=False) == "cpu"
    assert resolve_device("auto", cuda_available=True) == "cuda"
    assert resolve_device("cpu", cuda_available=True) == "cpu"
    assert resolve_device("cuda:1", cuda_available=True) == "cuda:1"
    with pytest.raises(EngineError, match="no CUDA GPU"):
        resolve_device("cuda", cuda_available=False)
    with pytest.raises(EngineError, match="expected auto"):
        resolve_device("tpu", cuda_available=True)


def test_device_setting_reaches_the_engine_and_fails_plainly_without_a_gpu():
    from backforth.config import build_config
    from backforth.engines import build_engine

    cfg = build_config({"models": {"scorer": {"device": "cuda"}}})
    assert cfg.models.scorer.device == "cuda" and cfg.models.backward.device == "auto"
    if not torch.cuda.is_available():
        with pytest.raises(EngineError, match="no CUDA GPU"):
            build_engine(cfg.models.scorer)


def test_prompt_lookup_keeps_greedy_output_token_for_token(engine):
    """Prompt-lookup decoding (batch 1) writes what plain decoding (batch 1) writes, greedy, while
    really accepting drafted tokens: speculation changes the speed, not the output."""
    from transformers.generation.candidate_generator import PromptLookupCandidateGenerator

    texts = [_long_text(n)[-600:] for n in (120, 260, 400)]
    reqs = [Request(messages=[{"role": "user", "content": "Copy this text word for word:\n\n" + t}],
                    max_tokens=40, temperature=0.0, key=str(i)) for i, t in enumerate(texts)]
    plain = [engine.generate([r])[0] for r in reqs]  # one at a time: the numerics of batch 1
    drafted, original = [], PromptLookupCandidateGenerator.get_candidates

    def counting(gen, input_ids, *a, **kw):
        ids, logits = original(gen, input_ids, *a, **kw)
        drafted.append(ids.shape[1] - input_ids.shape[1])
        return ids, logits

    engine.prompt_lookup_tokens = 10
    PromptLookupCandidateGenerator.get_candidates = counting
    try:
        spec = engine.generate(reqs)
    finally:
        engine.prompt_lookup_tokens = None
        PromptLookupCandidateGenerator.get_candidates = original
    assert [r.text for r in spec] == [r.text for r in plain] and all(r.ok for r in spec)
    assert [r.completion_tokens for r in spec] == [r.completion_tokens for r in plain]
    steps, tokens = len(drafted), sum(r.completion_tokens for r in spec)
    assert sum(drafted) > 0 and steps < tokens  # drafts were proposed and some accepted: fewer steps than tokens


def test_requests_with_different_budgets_share_one_batch_and_each_keeps_its_own(engine, monkeypatch):
    """rewrite.page_budget gives each page its own max_tokens. Those requests were each a batch of one
    (the budget was part of the batch's signature), which made a budgeted rewrite of 8 long pages
    take 30 minutes instead of a few; now they share a batch and each row is cut at its own budget."""
    prompt = "Write the numbers from one to fifty in words, separated by commas:"
    reqs = [Request(prompt=prompt, max_tokens=n, temperature=0.0, key=str(n)) for n in (3, 12, 40)]
    calls = []
    original = engine._generate_batch
    monkeypatch.setattr(engine, "_generate_batch", lambda rs, seqs: calls.append(len(rs)) or original(rs, seqs))
    results = engine.generate(reqs)
    assert calls == [3]  # one batch
    assert [r.key for r in results] == ["3", "12", "40"]
    assert [r.completion_tokens for r in results][:2] == [3, 12] and results[2].completion_tokens <= 40
    assert [r.finish_reason for r in results][:2] == ["length", "length"]
    assert results[2].text.startswith(results[1].text) and results[1].text.startswith(results[0].text)  # greedy: one text, cut
    alone = engine.generate([reqs[1]])[0]
    assert (alone.text, alone.completion_tokens, alone.finish_reason) == (results[1].text, 12, "length")

"""Stage page_kind: the scorer's letter probabilities -> the page's kind, kept or rejected."""

from __future__ import annotations

import math

import pytest

from backforth.config import PAGE_KINDS, CurateConfig, PageKindConfig, RunConfig
from backforth.engines.base import Result
from backforth.pipeline.stages.curate import Curate
from backforth.pipeline.stages.page_kind import LETTERS, PageKind, kind_probabilities


def page(**kw) -> dict:
    return {"id": "p1", "text": "The for statement iterates over the items of any sequence.", **kw}


def answer(**probs: float) -> Result:
    return Result(text="A", finish_reason="length", choice_logprobs={k: math.log(v) for k, v in probs.items()})


def test_the_prompt_lists_the_kinds_in_the_letters_order():
    """The letters the request asks for and the kinds they stand for come from one list, in the prompt's order."""
    st = PageKind(PageKindConfig())
    [req] = st.requests(page())
    assert req.choices == LETTERS == list("ABCDEFGHIJ") and req.max_tokens == 1 and req.assistant_prefix == "Answer: "
    prompt = req.messages[-1]["content"]
    assert "The for statement iterates" in prompt
    order = [prompt.index(f"\n{letter}: ") for letter in LETTERS]
    assert order == sorted(order)
    assert [prompt[i + 4:].split()[0].lower().strip(",") for i in order][:3] == ["an", "reference", "a"]
    assert len(PAGE_KINDS) == len(LETTERS)


def test_kind_probabilities_normalise_over_the_letters():
    probs = kind_probabilities({"A": math.log(0.2), "B": math.log(0.6), "G": math.log(0.2), "Z": 0.0})
    assert probs["reference"] == pytest.approx(0.6) and probs["legal"] == pytest.approx(0.2)
    assert set(probs) == set(PAGE_KINDS) and sum(probs.values()) == pytest.approx(1.0)
    assert kind_probabilities({}) == {} and kind_probabilities({"Z": 0.0}) == {}


def test_a_page_of_a_kept_kind_goes_on_and_records_its_kind():
    st = PageKind(PageKindConfig())
    row = page()
    assert st.apply(row, [answer(A=0.3, B=0.3, G=0.4)]) is None  # legal is the likeliest, but A+B = 0.6 >= 0.5
    assert (row["page_kind"], row["page_kind_p"], row["page_kind_keep"]) == ("legal", 0.6, True)
    assert st.take_counters()["kind:legal"] == 1


def test_a_licence_is_rejected_with_its_kind():
    st = PageKind(PageKindConfig())
    row = page()
    assert st.apply(row, [answer(A=0.1, B=0.1, G=0.8)]) == "unwanted_page_kind"
    assert row["page_kind"] == "legal" and row["page_kind_p"] == pytest.approx(0.2)


def test_keep_and_min_p_move_the_decision():
    row = page()
    assert PageKind(PageKindConfig(keep=["legal"], min_p=0.7)).apply(row, [answer(A=0.1, B=0.1, G=0.8)]) is None
    assert PageKind(PageKindConfig(min_p=0.1)).apply(page(), [answer(A=0.1, B=0.1, G=0.8)]) is None


def test_pairs_in_are_not_classified():
    st = PageKind(PageKindConfig())
    row = page(instruction_given="What does for do?")
    assert st.requests(row) == [] and st.apply(row, []) is None and "page_kind" not in row


def test_no_letter_or_a_failed_request_is_a_reject_of_its_own():
    st = PageKind(PageKindConfig())
    assert st.apply(page(), [Result(text="", finish_reason="length", choice_logprobs={"5": -0.1})]) == "unclassified_page"
    failed = page()
    assert st.apply(failed, [Result(text="", finish_reason="error", error="400: too long")]) == "unclassified_page"
    assert failed["page_kind_error"] == "400: too long"


def test_without_the_filter_the_decision_is_recorded_and_curation_keeps_the_page_out():
    """curate.filter: false (the experiment): nothing is rejected, and the keep column still says no."""
    st = PageKind(PageKindConfig(), filter=False)
    row = page(instruction="What does the licence allow?")
    assert st.apply(row, [answer(A=0.1, B=0.1, G=0.8)]) is None and row["page_kind_keep"] is False
    curate = Curate(CurateConfig(rubric="humpback", threshold=1, filter=False))
    assert curate.apply(row, [Result(text="Score: 5", finish_reason="stop")]) is None
    assert row["score"] == 5 and row["keep"] is False


def test_on_by_default_for_the_filtering_variants_only():
    from backforth.pipeline import registry

    assert "page_kind" in registry.names(RunConfig())
    assert "page_kind" not in registry.names(RunConfig(variant="rewrite"))
    assert "page_kind" not in registry.names(RunConfig(page_kind={"enabled": False}))
    assert PageKind(PageKindConfig()).settings() == {"keep": ["explanation", "reference"], "min_p": 0.5, "max_chars": 2000}


def test_the_scorer_reads_the_head_of_a_long_page():
    """A long page is cut at a line break before `max_chars`; the prompt says that it goes on. A short page and
    `max_chars: null` give the whole text."""
    text = "\n".join(f"Line {i}: the for statement iterates over the items of any sequence." for i in range(200))
    [req] = PageKind(PageKindConfig(max_chars=1000)).requests(page(text=text))
    prompt = req.messages[-1]["content"]
    assert "Line 0:" in prompt and "Line 13:" in prompt and "Line 14:" not in prompt
    assert "[... the page goes on]" in prompt
    [whole] = PageKind(PageKindConfig(max_chars=None)).requests(page(text=text))
    assert "Line 199:" in whole.messages[-1]["content"] and "goes on" not in whole.messages[-1]["content"]
    [short] = PageKind(PageKindConfig(max_chars=1000)).requests(page())
    assert "goes on" not in short.messages[-1]["content"]

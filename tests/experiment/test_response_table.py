"""The comparisons of the response-level table (experiment.response_table), on plain rows."""

from __future__ import annotations

from backforth.experiment import response_table as rt


def rows(prefix: str, n: int, response: str, start: int = 0) -> list[dict]:
    return [{"id": f"d{i}", "instruction": f"Question {i}?", "response": f"{response} {i}"} for i in range(start, start + n)]


def test_datasets_sharing_instructions_are_compared_later_vs_earlier_and_identical_responses_are_counted():
    datasets = {"filter": rows("f", 6, "doc"), "filter+rewrite": rows("r", 6, "rewrite"),
                "rewrite": rows("r", 6, "rewrite", start=3),  # shares d3-d5 with the others, same rewrites
                "ext": [{"id": "e1", "instruction": "Question 1?", "response": "theirs"},
                        {"id": "e9", "instruction": "Another?", "response": "x"}]}
    comps, skipped = rt.response_comparisons(datasets, limit=None, seed=0)
    names = {c.name: c for c in comps}
    assert set(names) == {"filter+rewrite vs filter", "rewrite vs filter", "ext vs filter", "ext vs filter+rewrite"}
    assert skipped == ["rewrite vs filter+rewrite (their 3 shared instructions have identical responses)"]
    c = names["filter+rewrite vs filter"]
    assert len(c.pairs) == 6 and c.check == "document_vs_rewrite"
    assert {p["output"].split()[0] for p in c.pairs} == {"rewrite"} and {p["reference_output"].split()[0] for p in c.pairs} == {"doc"}
    assert names["ext vs filter+rewrite"].check == "invented_fact" and len(names["ext vs filter+rewrite"].pairs) == 1
    limited, _ = rt.response_comparisons(datasets, limit=2, seed=0)
    assert all(len(c.pairs) <= 2 for c in limited)


def test_instruction_sources_group_datasets_that_hold_the_same_instructions():
    datasets = {"filter": rows("f", 4, "doc"), "distill": rows("d", 4, "answer"), "rewrite": rows("r", 4, "rw", start=2)}
    seed = [{"id": "s1", "instruction": "How do I boil an egg?", "response": "..."},
            {"id": "s2", "instruction": "Question 0?", "response": "..."}]
    sources = rt.instruction_sources(datasets, seed)
    assert list(sources) == ["filter = distill", "rewrite", "seed"]
    comps = {c.name: c for c in rt.instruction_comparisons(sources, limit=None, seed=0)}
    # instructions both sources hold are left out; the rest paired one to one, up to the smaller side
    assert len(comps["rewrite vs filter = distill"].pairs) == 2  # d4, d5 against d0, d1
    assert len(comps["seed vs filter = distill"].pairs) == 1  # "Question 0?" is in both
    assert all(c.table == "instructions" and c.check == "instructions" for c in comps.values())
    assert rt.instruction_sources(datasets, None).keys() == {"filter = distill", "rewrite"}

"""grounding: numbers, names and content words a rewrite adds to its document; the optional LLM judge."""

from __future__ import annotations

import pytest

from backforth.engines.base import InProcessEngine, Request, Result
from backforth.pipeline.stages.grounding import (
    Grounding, GroundingConfig, check, load_judge_template, names, numbers, parse_verdict, stem)

DOC = ("Preheat the oven to 180 degrees. Mix three eggs with 250 g of flour and a cup of milk. Bake the cake for "
       "35 minutes until golden. The recipe comes from Maria's bakery in Lyon, which has sold 1,500,000 cakes since "
       "1999. Prices start at $4.50.")
INSTR = "How do I bake the cake from Maria's bakery?"
COPY = ("Here is how to bake the cake:\n\n1. Preheat the oven to 180°C.\n2. Mix 3 eggs with 250g of flour and a cup of "
        "milk.\n3. Bake for 35 minutes, until the cake is golden.\n\nThis recipe comes from Maria's bakery in Lyon, which "
        "has sold 1.5 million cakes since 1999, with prices starting at $4.50.")


def row(response: str, text: str = DOC, instruction: str = INSTR) -> dict:
    return {"id": "r1", "text": text, "instruction": instruction, "response": response}


def judge(row_: dict, **cfg) -> tuple[str | None, dict]:
    st = Grounding(GroundingConfig(**cfg))
    assert st.requests(row_) == []  # no model call without the judge
    return st.apply(row_, []), row_


def test_a_rewrite_that_copies_the_document_passes():
    reason, r = judge(row(COPY))
    assert reason is None
    assert r["unsupported_numbers"] == [] and r["unsupported_names"] == [] and r["unsupported_words"] == []
    assert r["unsupported_share"] == 0.0
    assert judge(row(DOC))[0] is None


@pytest.mark.parametrize("added, number, name", [
    (" The cake was first made in 1987.", "1987", None),
    (" A whole cake costs $450.", "450", None),
    (" Dr. Smith recommends it.", None, "Dr. Smith"),
    (" Bakers like Dr. Smith made it famous in 1987 for $450.", "1987", "Dr. Smith"),
])
def test_added_numbers_and_names_are_listed(added, number, name):
    reason, r = judge(row(COPY + added))
    assert (number in r["unsupported_numbers"]) if number else r["unsupported_numbers"] == []
    assert (name in r["unsupported_names"]) if name else r["unsupported_names"] == []
    assert 0 < r["unsupported_share"] < 0.5
    assert reason == ("ungrounded" if number else None)  # default: any new number rejects; names are listed only


def test_thresholds():
    smith = row(COPY + " Dr. Smith recommends it.")
    assert judge(dict(smith), max_unsupported_names=0)[0] == "ungrounded"
    assert judge(dict(smith), max_unsupported_names=1)[0] is None
    year = row(COPY + " It dates from 1987.")
    assert judge(dict(year))[0] == "ungrounded"
    assert judge(dict(year), max_unsupported_numbers=1)[0] is None
    assert judge(dict(year), max_unsupported_numbers=None)[0] is None
    unrelated = row("Volcanoes erupt when magma pressure rises beneath tectonic plates, releasing ash and lava.")
    reason, r = judge(unrelated)
    assert reason == "ungrounded" and r["unsupported_share"] > 0.5 and r["unsupported_numbers"] == []
    assert judge(dict(unrelated), max_unsupported_share=None)[0] is None
    assert judge(dict(unrelated), max_unsupported_share=1.0)[0] is None


def test_an_assistant_framing_stays_under_the_share_limit():
    framed = ("Great question! Baking this cake is easy. Follow these simple steps:\n\n- Preheat your oven to 180 "
              "degrees.\n- Mix three eggs, 250 g of flour and a cup of milk.\n- Bake it for 35 minutes until golden.\n\n"
              "Enjoy your delicious homemade cake!")
    reason, r = judge(row(framed))
    assert reason is None and r["unsupported_share"] < 0.5 and r["unsupported_numbers"] == []


def test_the_instruction_supports_what_it_asks_about():
    reason, r = judge(row("Here are 5 tips for Lisbon: walk, eat, rest, look, listen.", text="Walk, eat, rest, look and listen.",
                          instruction="Give me 5 tips for a day in Lisbon."))
    assert reason is None and r["unsupported_numbers"] == [] and r["unsupported_names"] == []


def test_numbers_are_compared_by_value():
    assert [w for w, _ in numbers("It costs $450, or 1,000 USD; 5km, 50%, 3.50, mp3, v2.0, 1.5 million")] == [
        "450", "1,000", "5", "50", "3.50", "1.5 million"]
    assert numbers("1. first\n 2) second\nstep 3", skip_list_markers=True)[0][0] == "3"
    doc = "It weighs 3.5 kg, costs 1,200 dollars, serves twenty-five people and a dozen more, with 2 million fans."
    r = check("It weighs 3.50kg and costs $1200 for 25 people, 12 more and 2,000,000 fans.", doc)
    assert r["unsupported_numbers"] == []
    assert check("It weighs 4 kg.", doc)["unsupported_numbers"] == ["4"]


def test_names_skip_sentence_starts_lists_and_headings():
    text = ("Dr. Smith said so. According to NASA, Paris is big. I think Monday works.\n- Fresh Basil Leaves\n"
            "## Step One\n**Note:** Call John Smith, then Mary. See e.g. Rome.")
    assert names(text) == ["Dr. Smith", "NASA", "Paris", "Monday", "John Smith", "Mary", "Rome"]
    assert check("The cake is from Lyon. Maria bakes it.", DOC)["unsupported_names"] == []
    assert check("The cake is from LYON, says maria.", DOC)["unsupported_names"] == []  # case-insensitive


def test_stems_match_inflections():
    assert stem("baking") == stem("baked") == stem("bakes") == stem("bake")
    assert stem("running") == stem("run") and stem("easily") == stem("easy") and stem("studies") == stem("study")


@pytest.mark.parametrize("text, verdict", [
    ("SUPPORTED", True), ("UNSUPPORTED", False), ("Verdict: **Unsupported**", False), ("The answer is not supported.", False),
    ("It looked unsupported at first, but on reflection: SUPPORTED", True), ("supported.", True),
    ("Yes, it adds a year.", False), ("No.", True), ("I cannot tell.", None), ("", None),
])
def test_parse_verdict(text, verdict):
    assert parse_verdict(text) is verdict


class TinyJudge(InProcessEngine):
    """An engine that answers every request with the next canned verdict."""

    name = "tiny-judge"
    context_length = None

    def __init__(self, *answers: "str | Result"):
        self.answers, self.requests = list(answers), []

    def generate(self, requests: list[Request]) -> list[Result]:
        self.requests.extend(requests)
        out = []
        for _ in requests:
            a = self.answers.pop(0)
            out.append(a if isinstance(a, Result) else Result(text=a, finish_reason="stop", prompt_tokens=50, completion_tokens=2))
        return out

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def close(self) -> None:
        pass


def run_judged(rows: list[dict], engine: TinyJudge, **cfg) -> list[str | None]:
    st = Grounding(GroundingConfig(judge=True, **cfg))
    assert st.role == "judge"
    st.model_name = engine.name
    st.setup(engine)
    out = []
    for r in rows:
        reqs = st.requests(r)
        out.append(st.apply(r, engine.generate(reqs) if reqs else []))
    return out


def test_the_llm_judge_path():
    engine = TinyJudge("SUPPORTED", "Verdict: UNSUPPORTED", "hmm", Result(error="boom", finish_reason="error"))
    rows = [row(COPY), row(COPY + " It is sold in Paris."), row(COPY), row(COPY), row(COPY + " Since 1987.")]
    assert run_judged(rows, engine) == [None, "judged_unsupported", "unparsed_judgement", "engine_error", "ungrounded"]
    assert len(engine.requests) == 4  # the row the checks rejected cost no judge call
    req = engine.requests[0]
    assert req.key == "r1" and req.temperature == 0.0 and req.max_tokens == 32
    [msg] = req.messages
    assert msg["role"] == "user" and DOC in msg["content"] and COPY in msg["content"] and INSTR in msg["content"]
    assert "SUPPORTED" in msg["content"] and "UNSUPPORTED" in msg["content"]
    assert rows[0]["grounding_verdict"] == "SUPPORTED" and rows[0]["grounding_model"] == "tiny-judge"
    assert rows[0]["grounding_prompt"].startswith("grounding_judge@1#")
    assert rows[1]["grounding_verdict"] == "UNSUPPORTED" and rows[1]["grounding_raw"] == "Verdict: UNSUPPORTED"
    assert rows[2]["grounding_verdict"] is None and rows[2]["grounding_raw"] == "hmm"


def test_judge_prompt_keeps_documents_as_data():
    t = load_judge_template()
    [msg] = t.render(document="a page quoting \x00answer\x00 and {{ answer }}", instruction="q?", answer="THE ANSWER").messages
    assert msg["content"].count("THE ANSWER") == 1 and "{{ answer }}" in msg["content"]


def test_settings_and_role():
    off = Grounding(GroundingConfig())
    assert off.role is None and off.template is None
    assert "judge_max_tokens" not in off.settings()
    on = Grounding(GroundingConfig(judge=True))
    assert on.fingerprint(None)["prompt"].startswith("grounding_judge@1#")
    assert off.settings() != Grounding(GroundingConfig(max_unsupported_share=0.3)).settings()


# Python's "An introduction to the ipaddress module" how-to (python3-doc), as prepare writes it, and a
# rewrite made from it by the demo's rewriter: the example copied with one output changed. Every
# number of the rewrite is on the page (6 is addr6's version), so only the session check sees it.
IPADDRESS = ("Extracting the IP version:\n\n```\n>>> addr4 = ipaddress.ip_address('192.0.2.1')\n"
             ">>> addr6 = ipaddress.ip_address('2001:db8::1')\n>>> addr6.version\n6\n>>> addr4.version\n4\n```\n\n"
             "Finding out how many individual addresses are in a network:\n\n```\n"
             ">>> net4 = ipaddress.ip_network('192.0.2.0/24')\n>>> net4.num_addresses\n256\n```")
IP_INSTR = "How can I extract the version of an IP address in Python?"
IP_REWRITE = ("You can do this with the `version` attribute:\n\n```python\n>>> addr4 = ipaddress.ip_address('192.0.2.1')\n"
              ">>> addr4.version\n{v4}\n>>> addr6 = ipaddress.ip_address('2001:db8::1')\n>>> addr6.version\n6\n```\n\n"
              "In the above example, `addr4.version` will return `{said}`, the IP version.")


def test_an_example_whose_output_was_changed_is_ungrounded():
    reason, r = judge(row(IP_REWRITE.format(v4=6, said=6), IPADDRESS, IP_INSTR))
    assert r["unsupported_numbers"] == []  # 6 is on the page: the number check cannot see it
    assert r["altered_outputs"] == ["addr4.version -> 6 (document: 4)"]
    assert reason == "ungrounded"
    # the prose alone, with the session right
    reason, r = judge(row(IP_REWRITE.format(v4=4, said=6), IPADDRESS, IP_INSTR))
    assert r["altered_outputs"] == ["addr4.version -> 6 (document: 4)"] and reason == "ungrounded"
    # copied faithfully, and an input the page never ran: nothing to compare
    reason, r = judge(row(IP_REWRITE.format(v4=4, said=4) + "\n\n>>> net4.prefixlen\n24", IPADDRESS, IP_INSTR))
    assert r["altered_outputs"] == [] and reason is None
    assert judge(row(IP_REWRITE.format(v4=6, said=6), IPADDRESS, IP_INSTR), max_altered_outputs=None)[0] is None

"""The parsers that turn what models really write into instructions, scores and responses."""

from __future__ import annotations

import math

import pytest

from backforth.pipeline.stages.parsing import (
    clean_instruction,
    copied_share,
    degenerate_reason,
    extract_response,
    is_refusal,
    only_points_elsewhere,
    parse_score,
    placeholder,
    score_from_logprobs,
    strip_scaffolding,
    words,
)

EGG = "How do I boil an egg?"


# ---- clean_instruction -------------------------------------------------------------------------

@pytest.mark.parametrize("raw", [
    EGG,
    # chat preambles
    "Sure! Here is the instruction:\nHow do I boil an egg?",
    "Sure! Here is the instruction:\n\nHow do I boil an egg?",
    "Certainly.\nHow do I boil an egg?",
    "Certainly. How do I boil an egg?",
    "Of course! Here's the question: How do I boil an egg?",
    "Okay! Instruction: How do I boil an egg?",
    "Sure, here's a possible instruction: \"How do I boil an egg?\"",
    "Sure thing, here you go:\n**Instruction:** \"How do I boil an egg?\"",
    "Here is the request:\n\n\"How do I boil an egg?\"",
    "Absolutely. How do I boil an egg?",
    # labels
    "Instruction: How do I boil an egg?",
    "instruction:How do I boil an egg?",
    "**Question:** How do I boil an egg?",
    "__Request__: How do I boil an egg?",
    "User: How do I boil an egg?",
    "User's question: How do I boil an egg?",
    "The instruction: How do I boil an egg?",
    "Question 1: How do I boil an egg?",
    "Prompt - How do I boil an egg?",
    "Query – How do I boil an egg?",
    # quotes of every kind
    '"How do I boil an egg?"',
    "'How do I boil an egg?'",
    "“How do I boil an egg?”",
    "‘How do I boil an egg?’",
    "«How do I boil an egg?»",
    "`How do I boil an egg?`",
    # markdown
    "# How do I boil an egg?",
    "> How do I boil an egg?",
    "- How do I boil an egg?",
    "**How do I boil an egg?**",
    "## Instruction\nHow do I boil an egg?",
    "### Instruction:\nHow do I boil an egg?",
    "# Question: How do I boil an egg?",
    "**Instruction**\nHow do I boil an egg?",
    "Here is the instruction:\n## Instruction\nHow do I boil an egg?",
    # the tag sentences echoed back
    "How do I boil an egg? Answer with knowledge from web search.",
    "How do I boil an egg? Answer in the style of an AI Assistant.",
    "How do I boil an egg? answer with knowledge from web search",
    # an answer (or a second candidate) after a blank line
    "How do I boil an egg?\n\nBoil water, add the egg and wait eight minutes.",
    "Instruction: How do I boil an egg?\n\nInstruction: How do I fry an egg?",
    # whitespace
    "   How   do I\tboil an\negg?  ",
])
def test_clean_instruction_strips_wrapping(raw: str):
    assert clean_instruction(raw) == EGG


@pytest.mark.parametrize("raw", ["", "   ", "\n\n\t", '""', "**  **", "Instruction:", "Sure! Here is the instruction:",
                                 "Here is the request:\n\n", "Certainly! Here's a possible question:"])
def test_clean_instruction_of_nothing_is_empty(raw: str):
    assert clean_instruction(raw) == ""


@pytest.mark.parametrize("instruction", [
    "Great Lakes: how did they form?",
    "OK Computer: when was it released and who produced it?",
    "User-friendly alternatives to Vim?",
    "Questions to ask a landlord before renting?",
    "Explain 3 ways to cook rice.",
    "Sure-fire ways to save money on groceries?",
    "What does 'idempotent' mean?",
])
def test_clean_instruction_keeps_genuine_instructions(instruction: str):
    # Words that open preambles or labels ("Great", "OK", "User", "Question") can start a real
    # instruction: only their preamble/label forms may be stripped.
    assert clean_instruction(instruction) == instruction


def test_clean_instruction_keeps_inner_quotes_and_only_the_first_paragraph():
    raw = 'Sure! Here is the instruction:\nWhat does "mise en place" mean in cooking?\n\nIt means...'
    assert clean_instruction(raw) == 'What does "mise en place" mean in cooking?'


# ---- copied_share ------------------------------------------------------------------------------

def test_copied_share():
    doc = "The quick brown fox jumps over the lazy dog near the river bank."
    assert copied_share("the quick brown fox jumps over", doc) == 1.0
    assert copied_share("Why does a fox jump over dogs?", doc) == 0.0
    # 4 trigrams, 2 of them in the document
    assert copied_share("the lazy dog sleeps a lot", doc) == pytest.approx(1 / 4)
    assert copied_share("THE QUICK, brown... FOX!", doc) == 1.0  # case and punctuation do not hide a copy
    assert copied_share("lazy dog", doc) == 1.0  # fewer words than n: whole-phrase containment
    assert copied_share("lazy cat", doc) == 0.0
    assert copied_share("", doc) == 0.0
    assert copied_share("the quick brown", "") == 0.0
    assert words("Héllo, wörld 42!") == ["héllo", "wörld", "42"]


# ---- parse_score -------------------------------------------------------------------------------

@pytest.mark.parametrize("text, score", [
    ("Score: 5", 5),
    ("score:5", 5),
    ("SCORE: 2", 2),
    ("**Score:** 4", 4),
    ("**Score**: 3", 3),
    ("Score: 4/5", 4),
    ("Score: 4 / 5", 4),
    ("Score = 3", 3),
    ("The score is 4", 4),
    ("Score: [4]", 4),
    ("Final score: 1", 1),
    ("The answer is great.\nScore: 5", 5),
    ("Score: 2\nScore: 4", 4),
    ("Score: 3\nActually Score: 5", 5),
    ("Score: 5\nScore: 9", 5),  # the last *valid* one
    ("Score: 4\nScore: 8/10", 4),
    ("Scores: 1-5 scale, where 5 is best... Score: 2", 2),
    ("Score: 8/10", None),
    ("Score: 10", None),
    ("Score: 4.5", None),
    ("Score: 0", None),
    ("Score: 6", None),
    ("Score: 5/10", None),
    ("I'd give it a 5", None),
    ("Rating: 4", 4),
    ("**Rating:** 3", 3),
    ("**Score**: 5/5", 5),
    ("I would give this a score of 4.", 4),
    ("Therefore, the rating is 4 out of 5.", 4),
    ("I would rate this answer 2 out of 5.", 2),
    ("I'd rate it a 3/5", 3),
    ("Score: 4 out of 10", None),
    ("1. The answer is incomplete.\n5. The answer is a perfect AI assistant answer.", None),  # list items
    ("Score 5: The answer is a perfect AI assistant answer", None),  # a rubric line quoted back
    ("Score: 4\n\nThe answer is a perfect AI assistant answer: written on purpose for this instruction.", 4),
    ("Rating: N, where N is 1, 2, 3, 4 or 5", None),  # the format instruction echoed
    ("Scoring rubric... Rating: 2\nScore: 5", 5),
    ("Score: 5\nRating: 2", 2),  # the last one written wins, whichever keyword
    ("5", None),
    ("Score:", None),
    ("", None),
    (None, None),
])
def test_parse_score(text, score):
    assert parse_score(text) == score


def test_parse_score_on_real_scorer_outputs():
    """Rationales the embedded scorers really wrote (benchmarks/curation.py --dump-raw), scores read by hand:
    the 1.5B ends "Rating: N" or "the rating is N out of 5", the 0.5B writes "Score: N" first and then
    quotes the rubric's 5 line, SmolLM2 enumerates the rubric as a list (no score at all)."""
    import json
    from pathlib import Path

    rows = [json.loads(line) for line in (Path(__file__).parent / "data" / "scorer_outputs.jsonl").open()]
    assert len(rows) >= 30 and {r["model"] for r in rows} >= {"embedded:qwen2.5-coder-1.5b", "embedded:smollm2-135m"}
    for r in rows:
        assert parse_score(r["raw"]) == r["score"], (r["model"], r["id"], r["raw"][-120:])
    assert sum(r["score"] is not None for r in rows if r["model"] == "embedded:qwen2.5-coder-1.5b") == \
        sum(r["model"] == "embedded:qwen2.5-coder-1.5b" for r in rows)


# ---- score_from_logprobs -----------------------------------------------------------------------

def test_score_from_logprobs_argmax_and_expected_value():
    lp = {k: math.log(p) for k, p in {"1": 0.1, "2": 0.1, "3": 0.2, "4": 0.2, "5": 0.4}.items()}
    score, expected, probs = score_from_logprobs(lp)
    assert score == 5
    assert expected == pytest.approx(1 * 0.1 + 2 * 0.1 + 3 * 0.2 + 4 * 0.2 + 5 * 0.4)
    assert probs == pytest.approx({"1": 0.1, "2": 0.1, "3": 0.2, "4": 0.2, "5": 0.4})


def test_score_from_logprobs_renormalises_over_the_five_labels():
    # Log-probabilities of a real model do not sum to 1 over 1..5 (other tokens take mass).
    score, expected, probs = score_from_logprobs({"2": math.log(0.03), "4": math.log(0.01), "Score": -0.01})
    assert score == 2
    assert probs == pytest.approx({"1": 0.0, "2": 0.75, "3": 0.0, "4": 0.25, "5": 0.0})
    assert expected == pytest.approx(2 * 0.75 + 4 * 0.25)
    assert sum(probs.values()) == pytest.approx(1.0)


def test_score_from_logprobs_with_minus_inf_entries():
    score, expected, probs = score_from_logprobs({"1": -math.inf, "2": -math.inf, "3": -1.0, "4": -math.inf, "5": -3.0})
    assert score == 3 and probs["1"] == 0.0 and probs["4"] == 0.0
    assert 3 < expected < 5 and expected == pytest.approx(3 * probs["3"] + 5 * probs["5"])


@pytest.mark.parametrize("lp", [{}, {k: -math.inf for k in "12345"}, {"Score": -0.1, "6": -0.5}])
def test_score_from_logprobs_without_any_label_is_none(lp):
    assert score_from_logprobs(lp) == (None, None, {})


def test_score_from_logprobs_tie_is_deterministic():
    assert score_from_logprobs({"2": -1.0, "4": -1.0})[:2] == (2, 3.0)


# ---- is_refusal --------------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "I'm sorry, but I can't help with that.",
    "I am sorry, I cannot do this.",
    "Sorry, I can't provide that information.",
    "I apologize, but that is not something I can do.",
    "I cannot help with that request.",
    "I can't assist with that.",
    "I am unable to answer this.",
    "I'm not able to comply.",
    "As an AI language model, I cannot browse the web.",
    "As an AI, I don't have opinions.",
    "   i'm sorry, no.",
])
def test_is_refusal(text):
    assert is_refusal(text)


@pytest.mark.parametrize("text", [
    "Boil water, then add the egg.",
    "Sorry about the wait! Here is the recipe: boil water.",  # not "Sorry," opening a refusal
    "I can't wait to show you: first, boil water.",
    "The apology letter should start with I'm sorry.",
    "",
])
def test_is_not_refusal(text):
    assert not is_refusal(text)


# ---- extract_response --------------------------------------------------------------------------

@pytest.mark.parametrize("text, finish, opened, expected", [
    ("[RES]Boil the egg.[/RES]", "stop", False, ("Boil the egg.", None)),
    ("Here is my answer:\n[RES]\n  Boil the egg.  \n[/RES]\nHope it helps!", "stop", False, ("Boil the egg.", None)),
    ("[res]Boil the egg.[/res]", "stop", False, ("Boil the egg.", None)),
    ("[ RES ]Boil the egg.[ /RES ]", "stop", False, ("Boil the egg.", None)),
    ("[RES]Boil the egg.[/ RES]", "stop", False, ("Boil the egg.", None)),
    # closed answer even though the turn ran out afterwards
    ("[RES]Boil the egg.[/RES] and more text", "length", False, ("Boil the egg.", None)),
    # the prompt's own words echoed, then the answer: the last opened section is the answer
    ("Write your answer between [RES] and [/RES].\n[RES]Boil the egg.[/RES]", "stop", False, ("Boil the egg.", None)),
    ("[RES]draft[/RES]\n[RES]Boil the egg.[/RES]", "stop", False, ("Boil the egg.", None)),
    # missing delimiters
    ("Boil the egg.", "stop", False, (None, "missing_delimiters")),
    ("[RES]Boil the egg.", "stop", False, (None, "missing_delimiters")),
    ("Boil the egg.[/RES]", "stop", False, (None, "missing_delimiters")),
    ("", "stop", False, (None, "missing_delimiters")),
    (None, "stop", False, (None, "missing_delimiters")),
    # truncated: no closing delimiter and the token budget ran out
    ("[RES]Boil the egg and then", "length", False, (None, "truncated_rewrite")),
    ("Let me think about the draft first and", "length", False, (None, "truncated_rewrite")),
    # empty and refusals
    ("[RES]   \n [/RES]", "stop", False, (None, "empty_response")),
    ("[RES][/RES]", "stop", False, (None, "empty_response")),
    ("[RES]I'm sorry, but I can't help with that.[/RES]", "stop", False, (None, "refusal")),
    # opened=True: the engine started the answer with [RES] and stops at [/RES]
    ("Boil the egg.", "stop", True, ("Boil the egg.", None)),
    ("  Boil the egg.\n", "stop", True, ("Boil the egg.", None)),
    ("Boil the egg.[/RES] trailing chatter", "stop", True, ("Boil the egg.", None)),
    ("[RES]Boil the egg.[/RES]", "stop", True, ("Boil the egg.", None)),  # the model repeated the opener
    (" [RES] Boil the egg.", "stop", True, ("Boil the egg.", None)),
    ("Boil the egg and then", "length", True, (None, "truncated_rewrite")),
    ("", "stop", True, (None, "empty_response")),
    ("[/RES]", "stop", True, (None, "empty_response")),
    ("I cannot help with that.", "stop", True, (None, "refusal")),
])
def test_extract_response(text, finish, opened, expected):
    assert extract_response(text, finish, opened=opened) == expected


def test_extract_response_never_leaks_a_delimiter():
    for text, opened in [("[RES] outer [RES] inner [/RES]", False), ("[RES][RES]x[/RES][/RES]", True),
                         ("[RES]a[/RES] [RES]b[/RES]", False), ("[RES] [RES] y", True)]:
        answer, reason = extract_response(text, "stop", opened=opened)
        assert reason is None and answer and "RES" not in answer, (text, answer)


# ---- scaffolding and degenerate answers --------------------------------------------------------

@pytest.mark.parametrize("answer, instruction, cleaned", [
    ("[Question]\nWhat is the product?\n\n[Answer]\nIt is a steel bottle that keeps drinks cold.", "What is the product?",
     "It is a steel bottle that keeps drinks cold."),
    ("Question: What is the product?\nAnswer: It is a steel bottle.", "What is the product?", "It is a steel bottle."),
    ("**Answer:** It is a steel bottle.", "What is the product?", "It is a steel bottle."),
    ("What is the product?\nIt is a steel bottle.", "What is the product?", "It is a steel bottle."),
    # a real rewrite of Python's heapq page began so: the question, then the answer on the same line
    ("How can I create a min heap in Python? To create a min heap, use the `heapq` module.",
     "How can I create a min heap in Python?", "To create a min heap, use the `heapq` module."),
    ("How can I create a min heap in Python?", "How can I create a min heap in Python?",
     "How can I create a min heap in Python?"),
    ("How can I create a min heap in Python is a common question.", "How can I create a min heap in Python",
     "How can I create a min heap in Python is a common question."),
    ("The answer depends on the oven.\nBake for 20 minutes.", "How long?", "The answer depends on the oven.\nBake for 20 minutes."),
    ("Answering a question: start with the answer.", "How do I write well?", "Answering a question: start with the answer."),
])
def test_strip_scaffolding(answer, instruction, cleaned):
    assert strip_scaffolding(answer, instruction) == cleaned


def test_the_question_restated_as_a_title_is_no_answer():
    # a demo run exported this pair: the rewriter gave back the page's title and nothing else
    q = "How can I repot a root-bound houseplant?"
    assert degenerate_reason("How to Repot a Root-Bound Houseplant", q) == "echoed_prompt"
    assert degenerate_reason("Repotting Guide: How to Repot a Root-Bound Houseplant", q) is None  # a new word
    assert degenerate_reason("Repot it in spring.", q) is None
    assert degenerate_reason("How to repot a root-bound houseplant\n\nWater it the day before, then ...", q) is None


def test_an_answer_of_links_only_is_empty():
    # a demo run exported this pair from blinker's PyPI description
    q = "What is the documentation for Blinker?"
    assert degenerate_reason("Documentation: https://blinker.readthedocs.io/", q) == "empty_response"
    assert degenerate_reason("The documentation is at https://blinker.readthedocs.io/ and covers signals.", q) is None


def test_an_answer_that_announces_what_never_came_is_unfinished():
    # the 0.5B rewriter's answers in a run of the labelled real pages (benchmarks/real_documents.py
    # --sections): each stopped where the page's code block or structure began, and was exported
    assert degenerate_reason("To install msgpack for Python, you can use pip:", "How to install msgpack for Python?") \
        == "unfinished_response"
    assert degenerate_reason("Networkx can find paths.\n\nFind the shortest path between two nodes in an undirected "
                             "graph:", "How do I use NetworkX?") == "unfinished_response"
    assert degenerate_reason("Each successful read(2) returns a buffer containing one or more of the following "
                             "structures:  \n", "What is the inotify API?") == "unfinished_response"
    # a colon inside the answer is fine, and so is the code that followed it
    assert degenerate_reason("Install it with pip:\n\n```\npip install msgpack\n```", "How to install msgpack?") is None
    assert degenerate_reason("Note: the key function runs once per element.", "What does key do?") is None


OPENSSL_LIST = ("OPENSSL-LIST(1SSL)\n\nNAME\n       openssl-list - list algorithms and features\n\nSYNOPSIS\n"
                "       openssl list [-help] [-verbose] [-select name] [-1] [-commands]\n\n"
                "       -1  List the commands, digest-commands, or cipher-commands in a single column.")


@pytest.mark.parametrize("answer", [
    # the 0.5B rewriter's answer for `openssl list` in a run of the labelled real pages (docs/curation.md)
    "The `openssl list` command lists the algorithms:\n\n[ALGORITHM1, ALGORITHM2, ...]",
    "Best regards,\n[Your Name]",
    "Here is an example: <insert example here>. It prints the list.",
    "[INSERT X] lists the digest algorithms.",
    "The command prints {placeholder} for each algorithm it finds.",
    "{{ placeholder }} is printed for each algorithm.",
    "Contact [Company Name] for the list of algorithms.",
    "Call XXX-XXX-XXXX for a list of the algorithms.",
    "The digest algorithms are:\n[...]\nand the ciphers follow.",
    "The command lists [Feature 1], [Feature 2] and more.",
    "To list them, run:\n\n```\nopenssl list <insert command here>\n```\n\nIt prints one per line.",
])
def test_a_template_placeholder_the_page_lacks_is_no_answer(answer):
    q = "How do I list the algorithms OpenSSL supports?"
    assert placeholder(answer, OPENSSL_LIST) is not None
    assert degenerate_reason(answer, q, page=OPENSSL_LIST) == "placeholder_response"
    assert degenerate_reason(answer, q) is None  # without the page (the distiller's answers) nothing is checked


@pytest.mark.parametrize("answer, page", [
    # code's brackets are no placeholder, in a code block or in prose
    ("Slice it with `a[1:3]`: numpy returns the second and third elements, a[1:3] is a view.", "numpy arrays"),
    ("Annotate it as `def f(xs: list[int]) -> dict[str, Any]:`, or list[int] in prose.", "typing"),
    ("```c\n#include <stdio.h>\nint main(void) { return 0; }\n```\nIt includes <stdio.h>.", "C programs"),
    ("```python\nxs = [1, 2, 3]\nd = {}\nmy_list = [x1, x2, ..., xn]\n```", "Python lists"),
    ("The points [X1, X2, ..., Xn] are sorted; so are Level 1, Level 2, ... up to Level 9.", "sorting"),
    # a usage line or format string the page itself has
    ("Run openssl list [-help] [-1] to print them.", OPENSSL_LIST),
    ("Run `openssl list -1` to print them one per line.", OPENSSL_LIST),
    ('Write "{name}" in the template and render it with name="x".', 'Jinja: {{ "{name}" }} renders "{name}"'),
    ("Greet them with [Your Name] at the end.", "Sign the letter: [Your Name]"),
    ("The logger named XXX has no handlers.", "No handlers could be found for logger XXX"),
    # an elision in a quote, a link, a command's own slot, mkstemp's template, an HTML attribute
    ('The page says "lists algorithms [...] and features".', "lists algorithms and disabled features"),
    ("More on [click here](https://www.openssl.org/docs/) and [the docs][1].", "docs"),
    ("Clone it with `git clone https://github.com/<your-username>/repo` and set `[your-key]`.", "git"),
    ('mkstemp("/tmp/fooXXXXXX") fills in the X characters.', "mkstemp"),
    ('<input placeholder="Name"> shows a hint.', "HTML forms"),
    ("Use [Phone number] or [options] as you like.", "options"),
])
def test_brackets_of_code_usage_lines_and_the_page_are_no_placeholder(answer, page):
    assert placeholder(answer, page) is None
    assert degenerate_reason(answer, "How do I use it?", page=page) is None


@pytest.mark.parametrize("answer, instruction, reason", [
    ("", "What is the product?", "echoed_prompt"),
    ("What is the product?", "What is the product?", "echoed_prompt"),
    ('What is the correct answer to the question: "What is the answer to the question "What is the answer to the '
     'question, "Why is the sky blue?"?"', "What is the correct answer?", "repetitive_response"),
    ("1. Use a sharp knife with a sharp blade.\n2. Use a sharp knife with a sharp blade.\n"
     "3. Use a sharp knife with a sharp blade.", "How do I sharpen a knife?", "repetitive_response"),  # a real distilled answer
    ("Bake at 200 C for 20 minutes. Then bake at 200 C for 10 more minutes until golden. Serve warm.", "Scones?", None),
    ("Seasons are caused by the tilt of Earth's axis, about 23.4 degrees.", "What causes the seasons?", None),
    # a real distilled answer (Qwen2.5-Coder-0.5B, make experiment-demo): a question back, not an answer
    ("How can I create a Python virtual environment?", "Describe how to create a Python virtual environment.", "echoed_prompt"),
    ("Is it safe? Yes: below 4 C bacteria barely grow, so the soup keeps for three days.", "Can I keep soup?", None),
])
def test_degenerate_reason(answer, instruction, reason):
    assert degenerate_reason(strip_scaffolding(answer, instruction), instruction) == reason


# make demo (at 140a0bd, a 2-core AVX2 CPU) exported this pair from Python's documentation home page.
POINTING_ELSEWHERE = [
    ("You can find Python 3.11.2 documentation at the official Python website.",
     "Where can I find Python 3.11.2 documentation?"),
    ("For more information, please visit the Babel web site:\n\nhttps://babel.pocoo.org/", "What is Babel?"),
    ("Please refer to the official documentation.", "How do I configure logging?"),
    ("- See the project's GitHub repository.\n- Details can be found on the PyPI page.", "What does it do?"),
]
# Answers that point elsewhere as well as answering, or name a file rather than a place to read.
ANSWERING = [
    ("The configuration can be found in /etc/ssh/sshd_config.", "Where is sshd configured?"),
    ("Use `pip install foo` to install it. See the documentation for the options.", "How do I install foo?"),
    ("PyYAML is a YAML parser and emitter for Python. For more information, see the PyYAML website.", "What is PyYAML?"),
    ("You can find the logs in /var/log/syslog.", "Where are the logs?"),
    ("Visit each node once, then see the page table for the mapping.", "How does the walk work?"),
]


@pytest.mark.parametrize("answer, instruction", POINTING_ELSEWHERE)
def test_an_answer_that_only_points_elsewhere_is_no_answer(answer, instruction):
    assert only_points_elsewhere(answer)
    assert degenerate_reason(answer, instruction) == "pointer_response"


@pytest.mark.parametrize("answer, instruction", ANSWERING)
def test_an_answer_with_a_pointer_beside_its_content_is_kept(answer, instruction):
    assert not only_points_elsewhere(answer)
    assert degenerate_reason(answer, instruction) is None

"""Turning raw model text into instructions, scores and responses, tolerant of what models really write.

Every parser returns the cleaned value or `None`; the stage decides the reject reason. Small and
large models alike wrap answers in chat preambles, labels, quotes and markdown; scorers write
"Score: 4/5", "**Score:** 5" or several scores (we take the last valid one, as the rubric asks for
the score on the final line).
"""

from __future__ import annotations

import math
import re

from ...language import UNSPACED, count_words

# "Sure," / "Okay!" are preambles only with their punctuation: "Great Lakes: ..." is an instruction.
_PREAMBLE = re.compile(
    r"^\s*(?:(?:sure(?: thing)?|certainly|of course|okay|ok|absolutely|great)(?=\s*[,.!:])|here(?:'s| is| are)\b)[^\n:]*?"
    r"(?::\s*$|(?::|\.|!)\s*(?=\S))", re.IGNORECASE)  # "...instruction:" alone: the stop string cut what followed
# A label ends with ':', a spaced dash or the end of its line ("## Instruction\n..."); a bare hyphen
# is a word's ("User-friendly ...").
_LABEL = re.compile(
    r"^\s*(?:[#>]+\s*)?(?:\*\*|__)?\s*(?:the\s+)?(?:user(?:'s)?\s+)?(?:instruction|question|request|prompt|query|user|task)"
    r"[ \t]*(?:\d+)?[ \t]*(?:\*\*|__)?[ \t]*(?::|[\-–](?=\s)|\n)\s*(?:\*\*|__)?\s*", re.IGNORECASE)
_QUOTES = "\"'“”‘’`«»"
_TAG_ECHO = re.compile(r"\s*answer (?:in the style of an ai assistant|with knowledge from web search)[^.]*\.?\s*$", re.IGNORECASE)


def clean_instruction(raw: str) -> str:
    """The instruction a model wrote, without preambles, labels, quotes, markdown, tag sentences or the
    prompts' markers."""
    text = _MARKER.sub(" ", raw).strip()
    for _ in range(3):  # "Sure! Here is the instruction:\nInstruction: ..." needs more than one pass
        before = text
        text = _PREAMBLE.sub("", text, count=1).strip()
        text = _LABEL.sub("", text, count=1).strip()
        if text == before:
            break
    # Models continue with an answer or a second candidate after a blank line; the instruction is first.
    text = re.split(r"\n\s*\n", text, maxsplit=1)[0].strip()
    text = re.sub(r"^[#>*\-\s]+", "", text)
    text = text.replace("**", "").replace("__", "").strip()
    if len(text) >= 2 and text[0] in _QUOTES and text[-1] in _QUOTES:
        text = text[1:-1].strip()
    text = _TAG_ECHO.sub("", text).strip()
    return re.sub(r"\s+", " ", text)


# In scripts written without spaces (Chinese, Japanese, Thai...) each character is a word here, so that
# n-grams (echo, near-duplicates, decontamination, loops) work on them as on spaced languages.
_WORD = re.compile(f"[{UNSPACED}]|[^\\W{UNSPACED}]+", re.UNICODE)
_UNSPACED_CHAR = re.compile(f"[{UNSPACED}]")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def copied_share(instruction: str, document: str, n: int = 3) -> float:
    """Share of the instruction's word n-grams found verbatim in the document (1.0 = pure echo)."""
    iw, dw = words(instruction), words(document)
    if len(iw) < n:
        return 1.0 if iw and " ".join(iw) in " ".join(dw) else 0.0
    grams = {tuple(iw[i:i + n]) for i in range(len(iw) - n + 1)}
    doc_grams = {tuple(dw[i:i + n]) for i in range(len(dw) - n + 1)}
    return len(grams & doc_grams) / len(grams)


_NUM = r"(?:\*\*|__)?\s*\[?\s*(\d+(?:\.\d+)?)\s*\]?\s*(?:\*\*|__)?\s*(?:(?:/|out\s+of)\s*(\d+))?"
# "Score: 4", "**Score**: 5/5", "Rating: 4", "a score of 4", "the rating is 4 out of 5": a keyword, a
# separator, the number. "Score 5: The answer is a perfect..." (a rubric line quoted back) has no
# separator, and a list item "5." has no keyword: neither is a score.
_SCORE = re.compile(r"(?<![\w])(?:score|rating)\s*(?:\*\*|__)?\s*(?:[:=]|is|of|would be|will be)\s*" + _NUM,
                    re.IGNORECASE)
# "I would rate this answer 4 out of 5", "I'd rate it a 4/5": a verb needs the scale to count.
_RATE = re.compile(r"(?<![\w])(?:rate|rated|give|gave)\s+(?:it|this|this answer|the answer|this pair)?\s*(?:an?\s+|as\s+)?"
                   r"(\d+(?:\.\d+)?)\s*(?:/|out\s+of)\s*(5)(?!\d)", re.IGNORECASE)


def parse_score(text: str) -> int | None:
    """The last valid score (an integer 1..5; `N/5` or `N out of 5` accepted; 10, 4.5 or N/10 are not)."""
    found, at = None, -1
    for pattern in (_SCORE, _RATE):
        for m in pattern.finditer(text or ""):
            value, scale = m.group(1), m.group(2)
            if "." in value or (scale is not None and scale != "5"):
                continue
            n = int(value)
            if 1 <= n <= 5 and m.start() > at:
                found, at = n, m.start()
    return found


def choice_probabilities(logprobs: dict[str, float], choices) -> dict[str, float]:
    """The choices' log-probabilities normalised over the choices alone ({} when none has any)."""
    raw = {k: logprobs.get(k, float("-inf")) for k in choices}
    top = max(raw.values())
    if top == float("-inf"):
        return {}
    weights = {k: math.exp(v - top) for k, v in raw.items()}
    total = sum(weights.values())
    return {k: w / total for k, w in weights.items()}


def score_from_logprobs(logprobs: dict[str, float]) -> tuple[int | None, float | None, dict[str, float]]:
    """Most likely score, expected score and the normalised distribution over 1..5."""
    probs = choice_probabilities(logprobs, ("1", "2", "3", "4", "5"))
    if not probs:
        return None, None, {}
    best = max(probs, key=probs.get)
    expected = sum(int(k) * p for k, p in probs.items())
    return int(best), expected, probs


_REFUSAL = re.compile(
    r"^\s*(?:i(?:'m| am) sorry|sorry,|i apologi[sz]e|i can(?:no|')t (?:help|assist|provide|answer|fulfil|comply|do)|"
    r"i(?:'m| am) (?:not able|unable) to|as an ai(?: language model)?,? i (?:can(?:no|')t|do not|don't))",
    re.IGNORECASE)


def is_refusal(text: str) -> bool:
    return bool(_REFUSAL.search(text))


def extract_response(text: str, finish_reason: str | None, opened: bool = False) -> tuple[str | None, str | None]:
    """The answer between [RES] and [/RES] -> (response, reject_reason).

    `opened`: the engine was made to start the answer with `[RES]` and to stop at `[/RES]`, so the
    text is the answer itself and the end of the turn closes it.
    """
    body = text or ""
    if opened:
        body = "[RES]" + body
    starts = [m.end() for m in re.finditer(r"\[\s*RES\s*\]", body, re.IGNORECASE)]
    if not starts:
        return None, "truncated_rewrite" if finish_reason == "length" else "missing_delimiters"
    rest = body[starts[-1]:] if not opened else body[starts[0]:]
    if opened:  # a model (or a server that ignores the forced prefix) may write the opener itself
        rest = re.sub(r"^(?:\s*\[\s*RES\s*\])+", "", rest, flags=re.IGNORECASE)
    end = re.search(r"\[\s*/\s*RES\s*\]", rest, re.IGNORECASE)
    if end:
        answer = rest[:end.start()]
    elif finish_reason == "length":
        return None, "truncated_rewrite"
    elif opened:
        answer = rest  # stopped at the stop string or at the end of the turn
    else:
        return None, "missing_delimiters"
    answer = answer.strip()
    if not answer:
        return None, "empty_response"
    if is_refusal(answer):
        return None, "refusal"
    return answer, None


# A model's echoed scaffolding at the top of an answer: "[Question]\n...", "Question: ...\nAnswer:",
# "**Answer:**", "Response:". Only at the start: the same words inside an answer are content.
_LEAD_LABEL = re.compile(r"^\s*(?:\*\*|__|#+\s*)?\[?\s*(?:answer|response|rewritten answer|final answer)\s*\]?"
                         r"\s*(?:\*\*|__)?\s*(?::|\n)\s*(?:\*\*|__)?\s*", re.IGNORECASE)
_LEAD_QUESTION = re.compile(r"^\s*(?:\*\*|__|#+\s*)?\[?\s*(?:question|instruction|user(?:'s)? (?:question|request)|query)"
                            r"\s*\]?\s*(?:\*\*|__)?\s*(?::|\n)[^\n]*(?:\n(?!\s*\n)(?!\s*(?:\*\*|__)?\[?\s*(?:answer|response)\b)"
                            r"[^\n]*)*(?:\n\s*|$)", re.IGNORECASE)


def strip_scaffolding(answer: str, instruction: str) -> str:
    """The answer without the labels and echoed question a model put before it."""
    text = answer.strip()
    for _ in range(3):
        before = text
        text = _LEAD_QUESTION.sub("", text, count=1).strip() if _LEAD_QUESTION.match(text) else text
        text = _LEAD_LABEL.sub("", text, count=1).strip()
        first, _, rest = text.partition("\n")
        if rest.strip() and words(first) == words(instruction):  # the instruction repeated as a first line
            text = rest.strip()
        elif (q := instruction.strip()) and q[-1] in "?.!" and text.lower().startswith(q.lower()) \
                and text[len(q):].strip():  # ... or as the first sentence: "How do I X? To do X, ..."
            text = text[len(q):].strip()
        if text == before:
            break
    return text


# The prompts' own markers: the rewrite's delimiters and the tags that wrap the draft, the question,
# the page and the instruction. None belongs in an exported text: a model that writes `[RES]` again
# inside its answer (a list of links came out "[RES]Cheap flights [RES]Hotel deals") or echoes a
# tag leaves them there.
_MARKER = re.compile(r"\[\s*/?\s*RES\s*\]|</?\s*(?:draft|question|page|instruction|answer|document|text)\s*>", re.IGNORECASE)


def has_markers(text: str) -> bool:
    return bool(_MARKER.search(text or ""))


def strip_markers(text: str) -> str:
    """The text without the prompts' markers; a marker inside a line becomes a line break.

    Only the spaces around a marker go with it: the lines' own indentation (a code example's) stays."""
    if not _MARKER.search(text):
        return text.strip()
    out = re.sub(r"[ \t]*(?:" + _MARKER.pattern + r")[ \t]*", "\n", text, flags=re.IGNORECASE)
    return re.sub(r"\n{3,}", "\n\n", out).strip()


_LIST_MARK = re.compile(r"^\s*(?:[-*+•]|\(?\d+[.):]|\(?[a-z][.)])\s+", re.IGNORECASE)


def is_repetitive(text: str, n: int = 4) -> bool:
    """A phrase looping: a line of 3+ words three times or more (list numbers aside), under half of the
    word n-grams distinct, or, in a short text, one n-gram three times."""
    lines = [" ".join(words(_LIST_MARK.sub("", ln))) for ln in text.splitlines()]
    counts: dict[str, int] = {}
    for ln in lines:
        if len(ln.split()) >= 3:
            counts[ln] = counts.get(ln, 0) + 1
    if any(c >= 3 for c in counts.values()):
        return True
    ws = words(text)
    if sum(1 for w in ws if _UNSPACED_CHAR.fullmatch(w)) > len(ws) / 2:
        n *= 2  # characters, not words: a Japanese term repeated is no loop
    grams = [tuple(ws[i:i + n]) for i in range(len(ws) - n + 1)]
    seen: dict[tuple, int] = {}
    for g in grams:
        seen[g] = seen.get(g, 0) + 1
    looping = len(grams) >= 12 and len(seen) / len(grams) < 0.5
    return looping or (len(grams) < 60 and any(c >= 3 for c in seen.values()))


# Markup that is not words of the page: a README of badges has 60 "words" and says nothing.
_RST_DIRECTIVE = re.compile(r"^\.\. [^\n]*(?:\n[ \t]*:[\w-]+:[^\n]*)*", re.MULTILINE)  # `.. image:: URL` and its `:options:`
_MD_IMAGE = re.compile(r"!\[[^\]\n]*\]\([^)\s]*\)?")  # ![alt](src)
_MD_LINK = re.compile(r"\[([^\]\n]*)\]\([^)\s]*\)")  # [text](url): its text counts
_HTML_TAG = re.compile(r"<[^>\n]{1,300}>")
_RST_SUBSTITUTION = re.compile(r"\|[^|\n]{1,60}\|_{0,2}")  # |PyPI|_
_URL = re.compile(r"\b(?:https?|ftp)://\S+|\bwww\.\S+")
_NOT_A_WORD = re.compile(r"(?<!\S)[^\w\s]+(?!\S)")  # bullets, table bars, underlines, a lone colon


def text_words(text: str) -> int:
    """The page's words without its markup: badge and image markup, HTML tags, link targets, URLs and
    reStructuredText directives do not count, nor do tokens without a letter or digit (bullets, table
    bars, underlines); a link's text and code do."""
    for pattern, repl in ((_RST_DIRECTIVE, " "), (_MD_IMAGE, " "), (_MD_LINK, r"\1"), (_HTML_TAG, " "),
                          (_RST_SUBSTITUTION, " "), (_URL, " "), (_NOT_A_WORD, " ")):
        text = pattern.sub(repl, text)
    return count_words(text)


def degenerate_reason(answer: str, instruction: str, page: str | None = None) -> str | None:
    """Why a cleaned answer is no answer: `echoed_prompt` (nothing left but the question or labels,
    one short question back instead of an answer, or the question restated as a title),
    `empty_response` (nothing but links and markup), `unfinished_response` (it ends on a colon, announcing
    the command, code or list that never came: "To install it, use pip:"), `repetitive_response` (a
    phrase looping), `placeholder_response` (only when the `page` is given: a template's slot the page
    does not have, "[Your Name]", "[ALGORITHM1, ALGORITHM2, ...]"), `pointer_response` (it only sends the
    reader elsewhere: "You can find it at the official website."); None when it reads as an answer."""
    aw, iw = words(answer), words(instruction)
    if len(aw) >= 3 and text_words(answer) < 3:  # links and markup only: "Documentation: https://..."
        return "empty_response"
    if len(aw) < 3 or aw == iw or (len(aw) <= len(iw) + 2 and copied_share(answer, instruction) >= 0.8):
        return "echoed_prompt"
    one_line = answer.strip()
    if (one_line.endswith("?") and "\n" not in one_line and len(aw) <= 25 and _QUESTION_START.match(one_line)
            and "?" not in one_line[:-1]):  # "How can I create a Python virtual environment?"
        return "echoed_prompt"
    if ("\n" not in one_line and len(aw) <= 12 and one_line[-1:] not in ".!:;)\"'`"
            and set(aw) <= set(iw) | _FILLER):  # the question as a title: "How to Repot a Houseplant"
        return "echoed_prompt"
    if one_line.endswith(":"):  # a small model stops where the page's code block or list began
        return "unfinished_response"
    if is_repetitive(answer):
        return "repetitive_response"
    if page is not None and placeholder(answer, page) is not None:
        return "placeholder_response"
    if only_points_elsewhere(answer):
        return "pointer_response"
    return None


# A sentence that sends the reader elsewhere instead of answering: "You can find the documentation at
# the official Python website." (make demo exported that answer for Python's documentation home page),
# "For more information, visit the Babel web site.", "Details can be found in the docs folder.",
# "See the project's GitHub page." What it points at must be a place to read, not a file or a path
# ("The configuration can be found in /etc/ssh/sshd_config." is an answer).
_PLACE = (r"\b(?:website|web ?site|site|homepage|home page|documentation|docs|manual|guide|wiki|page|repository|repo|"
          r"github|gitlab|pypi|link|url|forum|faq|blog|online|internet|resources?)\b")
_POINTER_SENTENCE = re.compile(
    r"^(?:for (?:more|further|additional|full|complete) (?:information|info|details|documentation)|to learn more|"
    r"more (?:information|info|details) (?:can be found|is available))\b"
    r"|^(?:you|one|users|readers)\s+(?:can|may|could|will|should|might)\s+(?:also\s+)?(?:find|read|see|check|visit|"
    r"consult|browse|access|look|refer|learn)\b.*" + _PLACE +
    r"|^(?:please\s+)?(?:see|visit|check(?: out)?|refer to|consult|read|go to|head (?:over )?to|browse|look at)\s+"
    r"(?:the|our|its|their|this)\b.*" + _PLACE +
    r"|\b(?:can|may) be found (?:at|on|in)\b.*" + _PLACE +
    r"|\b(?:is|are) (?:available|hosted|published) (?:at|on|from)\b.*" + _PLACE,
    re.IGNORECASE)
_SENTENCES = re.compile(r"(?<=[.!?])\s+|\n+")


def only_points_elsewhere(answer: str, min_words: int = 5) -> bool:
    """Whether the answer, once its sentences that send the reader elsewhere ("For more information, see
    the website.", "You can find it in the official documentation.") and its bare links are set aside,
    has fewer than `min_words` words left: it names a place to read instead of answering."""
    left, pointed = 0, False
    for sentence in _SENTENCES.split(answer):
        sentence = sentence.strip().lstrip("-*+•>#").strip()
        if not sentence:
            continue
        if _POINTER_SENTENCE.search(sentence):
            pointed = True
        else:
            left += text_words(sentence)
    return pointed and left < min_words


# A template's slot a small model writes instead of content: "[Your Name]", "<insert example here>",
# "{placeholder}", "[Company Name]", "[ALGORITHM1, ALGORITHM2, ...]" (the 0.5B rewriter's answer for
# `openssl list`), "XXX", a "[...]" standing for a list. Only the unmistakable forms: the brackets of
# usage lines ("[options]", "<file>"), of code ("a[1:3]", "list[int]", "<stdio.h>", "{}") and of
# format strings ("{name}") match none of them, and a slot the page itself has is the page's.
_SLOT_IN = {"[": "]", "<": ">", "{": "}"}
_BRACKETED = re.compile(r"\[([^\[\]\n]{1,60})\](?![(\[])|<([^<>\n]{1,60})>|\{\{?([^{}\n]{1,60})\}\}?")
_FILL = re.compile(  # "[INSERT X]", "<insert example here>", "{placeholder}", "[Your code here]"
    r"^\s*(?:(?:insert|enter|paste|fill[ _-]in|replace[ _-]with)[ _-]+[\w'-]|placeholder(?:[ _-]+[\w'-]+)*\s*$)"
    r"|^(?!(?:click|see|look|go|start|right|read|more|from|over|out)\b)[\w'-]+(?:[ _-]+[\w'-]+){0,3}[ _-]+here\s*$",
    re.IGNORECASE)
_YOUR = re.compile(r"^\s*your[ _-]+[\w'-]+(?:[ _-]+[\w'-]+){0,3}\s*$", re.IGNORECASE)  # "[Your Name]"
_TITLED_SLOT = re.compile(  # "[Company Name]", "[Phone Number]", "[Email Address]"
    r"^(?:[A-Z][a-z]+ ){1,3}(?:Name|Address|Email|E-mail|Number)$")
_NUMBERED_LIST = re.compile(  # "[ALGORITHM1, ALGORITHM2, ...]", "[Value 1, Value 2, ..., Value N]"
    r"\[\s*([A-Z][A-Za-z]{2,})[ _]?1\s*,\s*\1[ _]?2\s*(?:,\s*\1[ _]?\d+\s*)*,\s*(?:\.\.\.|…)[^\]\n]{0,30}\]?")
# "[Feature 1], [Feature 2]"
_NUMBERED_SLOTS = re.compile(r"\[\s*([A-Z][A-Za-z]{2,})[ _]?1\s*\]\s*,\s*\[\s*\1[ _]?2\s*\]")
_XXX = re.compile(r"(?<![\w.])X{3,4}(?![\w])")  # "version XXX", "XXX-XXX-XXXX"; mkstemp's "XXXXXX" is no slot
_ELIDED_LIST = re.compile(  # "[...]" on its own line or after a colon; an elision inside a quote is prose
    r"(?m)^[ \t]*(?:[-*+•][ \t]*|\d+[.)][ \t]*)?\[\s*(?:\.\.\.|…)\s*\][ \t]*$|:[ \t]*\[\s*(?:\.\.\.|…)\s*\]")
_CODE = re.compile(r"^[ \t]*(```|~~~)[^\n]*\n.*?(?:^[ \t]*\1[^\n]*$|\Z)|`[^`\n]+`", re.MULTILINE | re.DOTALL)


def _prose(text: str) -> str:
    """The text with its code blocks and inline code blanked (`<your-username>` in a command is the
    command's, not a slot left unfilled)."""
    return _CODE.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)


def placeholder(answer: str, page: str) -> str | None:
    """The first template slot in the answer that the page does not have ("[Your Name]",
    "[ALGORITHM1, ALGORITHM2, ...]"), or None. The slots a command or code example legitimately
    carries ("[your-key]", "XXX", "[...]") count only outside code; "<insert ... here>" and numbered
    lists count anywhere."""
    found = []
    for m in _BRACKETED.finditer(answer):
        inner = next(g for g in m.groups() if g is not None).strip()
        if _FILL.search(inner):
            found.append((m.group(0), inner))
    found += [(m.group(0), None) for m in (*_NUMBERED_LIST.finditer(answer), *_NUMBERED_SLOTS.finditer(answer))]
    prose = _prose(answer)
    for m in _BRACKETED.finditer(prose):  # "[Your Name]", "[Company Name]": a letter's slots, in square brackets
        inner = m.group(1)
        if inner is not None and (_YOUR.match(inner) or _TITLED_SLOT.match(inner.strip())):
            found.append((m.group(0), inner.strip()))
    found += [(m.group(0), None) for m in (*_XXX.finditer(prose), *_ELIDED_LIST.finditer(prose))]
    if not found:
        return None  # the common case: no need to normalise the page
    known = " ".join(page.lower().split())
    for slot, inner in found:
        slot = slot.strip().lstrip(":-*+•").strip()
        forms = [slot] + ([o + inner + c for o, c in _SLOT_IN.items()] if inner else [])
        if not any(" ".join(f.lower().split()) in known for f in forms):
            return slot
    return None


# Words a title adds to the question it restates ("How can I repot ...?" -> "How to repot ...").
_FILLER = frozenset("a an the to of for in on at with and or your my our its guide tips steps way ways".split())


_QUESTION_START = re.compile(
    r"^(?:what|how|why|when|where|which|who|whom|whose|is|are|was|were|do|does|did|can|could|should|would|will|"
    r"shall|may|might|must|have|has|had)\b", re.IGNORECASE)
_ASKING = re.compile(r"^(?:i(?:'d| would)? (?:like|need|want)|i am looking|i'm looking|please|help me|tell me|"
                     r"give me|show me|teach me)\b", re.IGNORECASE)
_IMPERATIVE = re.compile(
    r"^(?:explain|describe|list|give|write|tell|show|compare|contrast|summari[sz]e|suggest|recommend|provide|create|"
    r"make|help|find|name|outline|identify|define|teach|share|calculate|translate|fix|plan|draft|convert|choose|pick|"
    r"rank|rate|evaluate|analy[sz]e|discuss|detail|illustrate|clarify|walk|guide|offer|propose|prepare|design|"
    r"generate|compose|rewrite|edit|improve|check|review|advise|recommend|set up|install|cook|bake|clean|repair|"
    r"remove|replace|protect|prevent|choose|decide|estimate|predict|state|point out|break down|go through)\b",
    re.IGNORECASE)


def looks_like_request(instruction: str) -> bool:
    """Whether text reads as a user's request: a question, an imperative, or "I need ..."/"Please ...".

    A page title ("The Daily Ledger"), a recipe's serving line ("Serves 2 | 15 minutes") or a model's
    statement ("I have no additional information ...") does not."""
    text = instruction.strip().strip("\"'*").strip()
    if not text:
        return False
    if text.endswith("?"):
        return True
    first = re.sub(r"^(?:how to|ways to)\b", "how", text, flags=re.IGNORECASE)
    return bool(_QUESTION_START.match(first) or _ASKING.match(first) or _IMPERATIVE.match(first))


# An instruction that points at a text the user would not have: "What does the text describe?",
# "What functionality does this code provide?", "... mentioned in the text". A small backward model
# writes these about a page it reads as an exercise (48 of 1,042 instructions of our runs on real
# pages); the pair means nothing without the page.
_SOURCE = r"(?:text|passage|excerpt|article|documentation|document|page|snippet|section|paragraph|code|content|post|chapter|tutorial|manual|readme|guide|example)s?"
_END = r"(?![\w-])"
_POINTING = re.compile(
    # "this text", "the given text", "the provided README.md file"
    r"\b(?:this|these|the above|the following|the given|the provided|the above-mentioned|the attached)\s+(?:[\w.-]+\s+)?"
    + _SOURCE + _END
    # "the text describes", "does the code do", "the text?" after a preposition
    + r"|\bthe (?:text|passage|excerpt|article|snippet|paragraph|chapter|readme|code|document|author|program|script|"
      r"example|function|command|(?:manual|man) page(?: about [\w\s-]{1,40}?)?)" + _END
    + r"(?=\s+(?:say|says|said|describe|describes|discuss|discusses|provide|provides|mention|mentions|cover|covers|"
      r"explain|explains|suggest|suggests|state|states|show|shows|tell|tells|mean|means|about|do|does|contain|contains|"
      r"talk|talks|list|lists|include|includes|present|presents|define|defines|outline|outlines|detail|details|"
      r"introduce|introduces|highlight|highlights|recommend|recommends|summarize|summarizes|print|prints|output|outputs|"
      r"return|returns|achieve|achieves|accomplish|accomplishes)\b)"
    + r"|\b(?:in|from|of|by|on|within) the (?:text|passage|excerpt|article|snippet|paragraph|chapter|readme|code)\s*[?.]?\s*$"
    # "described in the text", "according to the passage", "the code snippet provided"
    + r"|\b(?:described|mentioned|discussed|listed|given|provided|shown|presented|explained|covered|outlined|defined) in the "
    + _SOURCE + _END
    + r"|\baccording to the (?:text|passage|excerpt|article|document|page|author)" + _END
    + r"|\bthe (?:code )?(?:snippet|example|text|passage|excerpt) (?:provided|given|above|below|shown)\b",
    re.IGNORECASE)


def refers_to_source(instruction: str) -> bool:
    """Whether an (English) instruction points at a text it does not hold ("What does the text describe?").

    An instruction that brings what it points at ("Explain the following code: x = [...]") is standalone."""
    for m in _POINTING.finditer(instruction):
        rest = instruction[m.end():]
        if re.match(r"\s*[:\n]", rest) and len(rest.split()) >= 3:  # "the following code:" and the code itself
            continue
        return True
    return False

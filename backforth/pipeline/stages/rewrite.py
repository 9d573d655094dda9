"""rewrite: the aligned model turns the document into a response to the instruction.

The brief is the paper's grounded editing (stay close to the draft, copy where possible, improve
flow, clarity and relevance, answer directly, add no facts), the answer between [RES] and [/RES].
The model's own scaffolding before the answer (`[Question]`, `Question:`/`Answer:` headers, the
instruction repeated as a first line) is stripped, and so are the prompt's markers left inside it
(a second `[RES]`, `</draft>`): none reaches an exported row. Rejects: `missing_delimiters`, `empty_response`,
`truncated_rewrite` (finish_reason length), `refusal`, `echoed_prompt` (nothing left but the
question or labels), `repetitive_response` (a phrase looping), `placeholder_response` (a template's
slot the page does not have, "[Your Name]", "[ALGORITHM1, ALGORITHM2, ...]"), `pointer_response` (it only
sends the reader elsewhere: "You can find it at the official website."), `language_mismatch` (the
answer is in another language than its document), `engine_error`.

rewrite_redraw (ours; `rewrite.redraw: false` is the paper's single draw): a rewrite lost to
sampling rather than to its page (cut off, the question echoed back, a loop, an answer that stops on
a colon, a template placeholder, nothing between the delimiters) is drawn once more, with twice the
budget when the first was cut off. The rows the first draw kept pass through untouched.
"""

from __future__ import annotations

import dataclasses
import math

from ...config import RewriteConfig
from ...engines.base import Request, Result
from ...language import Policy
from ...prompts import load_template
from ..stage import DONE, Stage
from .parsing import degenerate_reason, extract_response, strip_markers, strip_scaffolding


class Rewrite(Stage):
    name = "rewrite"
    role = "rewriter"
    funnel = "rewritten"
    texts = {"rewritten": "response"}
    provenance = ("rewrite_model", "rewrite_prompt")
    rejects = {
        "engine_error": "The model's request failed for a reason a retry would not fix (the engine's message is in "
                        "the row's `rewrite_error`: a prompt over the context length, a server's 4xx answer, ...). "
                        "Try: fix what `rewrite_error` says (a server that could not be reached leaves rows "
                        "unfinished instead, for the next run).",
        "missing_delimiters": "The rewrite has no answer between `[RES]` and `[/RES]` (only with "
                              "`rewrite.force_open_delimiter: false`). Try: `rewrite.force_open_delimiter: true` (the "
                              "default), or a rewriter that follows the format.",
        "truncated_rewrite": "The rewriter was cut off by `rewrite.max_tokens` before it closed its answer. Try: raise "
                             "`rewrite.max_tokens` (default 768), or drop longer documents with `prepare.max_doc_tokens`.",
        "empty_response": "The answer between the delimiters is empty, or holds nothing but links and markup (fewer than 3 "
                          "words of text, e.g. 'Documentation: https://...'). Try: a stronger rewriter "
                          "(`models.rewriter.model`).",
        "refusal": "The rewriter refused (\"I'm sorry, but ...\"). Try: another rewriter, and look at the documents: "
                   "some trigger refusals.",
        "echoed_prompt": "Nothing is left but the question or labels once the model's scaffolding is stripped (under "
                         "3 words, the instruction repeated, or one short question back instead of an answer). The text is in `response_rejected`. Try: a stronger "
                         "rewriter (`models.rewriter.model`).",
        "unfinished_response": "The answer ends on a colon, announcing a command, code block or list that never "
                               "came (\"To install msgpack, you can use pip:\"): a small rewriter stops where the page's "
                               "code began. The text is in `response_rejected`. Try: a stronger rewriter "
                               "(`models.rewriter.model`).",
        "repetitive_response": "A phrase or line loops (a small model's degenerate output); the text is in "
                               "`response_rejected`. Try: a stronger rewriter, or other sampling "
                               "(`rewrite.temperature`, `rewrite.top_p`).",
        "placeholder_response": "The answer holds a template's slot instead of content, one its page does not "
                                "have: `[Your Name]`, `<insert example here>`, `{placeholder}`, `[Company Name]`, "
                                "`XXX`, a `[...]` for a list, `[ALGORITHM1, ALGORITHM2, ...]` (the 0.5B rewriter's "
                                "list for `openssl list`). A man page's `[options]` or `<file>`, code's brackets "
                                "(`a[1:3]`, `list[int]`, `<stdio.h>`) and a slot the page itself has are no "
                                "placeholder. The text is in `response_rejected`. Try: a stronger rewriter "
                                "(`models.rewriter.model`), or other sampling (`rewrite.temperature`).",
        "pointer_response": "The answer only sends the reader elsewhere (\"You can find the documentation at the "
                            "official website.\", \"For more information, see the project's page.\"): with those "
                            "sentences and bare links set aside, fewer than 5 words are left. A page that mostly "
                            "points elsewhere (a documentation home page, a README of links) gives such answers. "
                            "The text is in `response_rejected`. Try: nothing for such pages; for a good page, a "
                            "stronger rewriter (`models.rewriter.model`).",
        "language_mismatch": "The answer is in another language than its document (`response_language` names it): "
                             "the detector finds it at least "
                             "`prepare.mismatch_ratio` times as likely as the document's language. The text is in `response_rejected`. Try: a rewriter that "
                             "writes the document's language (with `prepare.languages` other than `[en]` the prompt "
                             "asks for it).",
    }

    @classmethod
    def enabled(cls, cfg) -> bool:
        return "rewrite" in cfg.variant

    @classmethod
    def build(cls, cfg, ctx) -> Rewrite:
        return cls(cfg.rewrite, Policy.of(cfg))

    def __init__(self, cfg: RewriteConfig, languages: Policy | None = None):
        self.cfg = cfg
        self.languages = languages or Policy()
        self.template = load_template("rewrite", self.languages.multilingual)

    def settings(self) -> dict:
        # `redraw` decides whether the next stage runs, not what this one writes
        return {**self.cfg.model_dump(exclude={"redraw"}), "languages": self.languages.settings()}

    def requests(self, row: dict) -> list[Request]:
        r = self.template.render(instruction=row["instruction"], document=row["text"],
                                 language=self.languages.prompt_language(row))
        forced = self.cfg.force_open_delimiter
        return [Request(messages=r.messages, assistant_prefix="[RES]" if forced else None,
                        stop=["[/RES]"] if forced else [], max_tokens=self.budget(row),
                        temperature=self.cfg.temperature, top_p=self.cfg.top_p, key=row["id"])]

    def budget(self, row: dict) -> int:
        """`max_tokens`, or with `page_budget` as many tokens as the document has times that (at least `max_tokens`)."""
        if self.cfg.page_budget is None or not row.get("n_tokens"):
            return self.cfg.max_tokens
        return max(self.cfg.max_tokens, math.ceil(self.cfg.page_budget * row["n_tokens"]))

    def apply(self, row: dict, results: list[Result]) -> str | None:
        res = results[0]
        if not self.record_call(row, res, raw="response_raw"):
            return "engine_error"
        response, reason = extract_response(res.text, res.finish_reason, opened=self.cfg.force_open_delimiter)
        if response is not None:
            response = strip_markers(strip_scaffolding(response, row["instruction"]))
            reason = degenerate_reason(response, row["instruction"], page=row["text"])
        row["response"] = response if reason is None else None
        if reason is not None and response is not None:
            row["response_rejected"] = response
        if reason is None and self.languages.check(response, row, "response_language"):
            row["response"], row["response_rejected"] = None, response
            return "language_mismatch"
        return reason


# The rejects a second sample can undo: the model's sampling failed, not the page.
SAMPLING_FAILURES = ("truncated_rewrite", "echoed_prompt", "unfinished_response", "repetitive_response",
                     "placeholder_response", "empty_response", "missing_delimiters")


class RewriteRedraw(Rewrite):
    """A second draw for the rewrites the first lost to sampling; the kept rows pass through."""

    name = "rewrite_redraw"
    continues = "rewrite"
    funnel = "rewritten_after_redraw"
    texts: dict[str, str] = {}
    provenance = ("rewrite_redraw_model",)  # set on the rows a second draw made
    rejects = {k: v + " (after a second draw: `rewrite.redraw`)" for k, v in Rewrite.rejects.items()}

    @classmethod
    def enabled(cls, cfg) -> bool:
        return "rewrite" in cfg.variant and cfg.rewrite.redraw

    @classmethod
    def funnel_steps(cls, summary: dict) -> list[tuple[str, int]]:
        return [(cls.funnel, summary["kept"])] if summary.get("redrawn") else []

    @classmethod
    def summarize(cls, counters: dict, summary: dict) -> None:
        summary["redrawn"] = counters.get("redrawn", 0)
        summary["recovered"] = counters.get("recovered", 0)

    def card_note(self, summary: dict) -> str | None:
        if not summary.get("redrawn"):
            return None
        return (f"Second draws: {summary['redrawn']} rewrites lost to sampling (cut off, echoed, looping, unfinished, "
                f"a placeholder) were drawn again and {summary['recovered']} of them passed (their "
                f"`provenance.rewrite_redraw_model` is set; `rewrite.redraw: false` keeps the paper's single draw).")

    def accepts(self, status: str, reason: str | None) -> bool:
        return status == DONE or reason in SAMPLING_FAILURES

    def requests(self, row: dict) -> list[Request]:
        if row.get("response") is not None:  # the first draw was kept
            return []
        grow = 2 if row.get("rewrite_finish_reason") == "length" else 1
        return [dataclasses.replace(r, max_tokens=r.max_tokens * grow, draw=1) for r in super().requests(row)]

    def apply(self, row: dict, results: list[Result]) -> str | None:
        if not results:
            return None
        self.count("redrawn")
        row["rewrite_draws"] = 2
        row["response_raw_first"], row["response_rejected"] = row.get("response_raw"), None
        reason = super().apply(row, results)
        if reason is None:
            self.count("recovered")
        return reason

"""backtranslate: the backward model writes the instruction that a document answers.

`prompted` uses an instruct model with our prompt (`prompts/backtranslate.jinja`, few-shot);
`trained` uses a backward model fine-tuned on reversed seed pairs with the very template it was
trained with (read from the model folder when it ships one, see `train/`). A row whose input
brought an instruction (`input.instruction_field`) keeps it, marked `instruction_source: input`,
and costs no request: that is how an existing dataset is rescored or rewritten.
Rejects: `empty_instruction`, `short_instruction`, `overlong_instruction` (too many words, or cut
off by max_tokens), `echo_instruction` (mostly copied from the document), `refusal_instruction` (the model answered
instead of asking: "I'm sorry, but ..."), `not_a_request` (a page title or a statement, not a
question or an imperative; `require_request`, English documents only), `not_standalone` (it points
at a text the user would not have: "What does the text describe?"; `require_standalone`, English
documents only), `language_mismatch` (the
instruction is in another language than its document), `engine_error`.
"""

from __future__ import annotations

from ...config import BacktranslateConfig
from ...engines.base import Request, Result
from ...language import Policy, count_words
from ...prompts import PromptTemplate, load_template
from ..stage import Stage
from .parsing import clean_instruction, copied_share, is_refusal, looks_like_request, refers_to_source


class Backtranslate(Stage):
    name = "backtranslate"
    role = "backward"
    funnel = "instructions"
    texts = {"instructions": "instruction"}
    provenance = ("backtranslate_model", "backtranslate_prompt")
    rejects = {
        "engine_error": "The model's request failed for a reason a retry would not fix (the engine's message is in "
                        "the row's `backtranslate_error`: a prompt over the context length, a server's 4xx answer, ...). "
                        "Try: fix what `backtranslate_error` says (a server that could not be reached leaves rows "
                        "unfinished instead, for the next run).",
        "empty_instruction": "Nothing was left of the model's output once preambles (\"Sure! Here is the instruction:\"), "
                             "labels and quotes were removed. Try: a stronger instruct model as `models.backward.model`, "
                             "or `backtranslate.mode: trained` with a backward model trained on seed pairs.",
        "overlong_instruction": "The instruction has more words than `backtranslate.max_instruction_words`, or the model "
                                "was cut off by `backtranslate.max_tokens` (finish_reason `length`). Try: raise "
                                "`backtranslate.max_tokens` or `backtranslate.max_instruction_words`; a model that goes "
                                "on into an answer needs a better prompt or model instead.",
        "short_instruction": "The instruction has fewer words than `backtranslate.min_instruction_words` (default 3). "
                             "Try: lower `backtranslate.min_instruction_words`.",
        "refusal_instruction": "The model answered instead of asking (\"I'm sorry, but ...\"). Try: another backward "
                               "model, and look at the documents: some trigger refusals.",
        "echo_instruction": "At least `backtranslate.echo_threshold` (default 0.7) of the instruction's word trigrams are "
                            "copied from the document: a sentence of the page, not a question about it. Try: raise "
                            "`backtranslate.echo_threshold`, or a stronger backward model.",
        "not_a_request": "The instruction does not read as a user's request (a question, an imperative, \"Please ...\"): "
                         "a page title or a statement. The patterns are English, so only instructions of English "
                         "documents are checked. Try: a stronger backward model, or `backtranslate.require_request: "
                         "false`.",
        "not_standalone": "The instruction points at a text the user would not have (\"What does the text describe?\", "
                          "\"What functionality does this code provide?\", \"... mentioned in the text\"): a small backward "
                          "model writes such questions about the page as if it were an exercise, and the pair means "
                          "nothing without the page. English patterns, so only instructions of English documents are "
                          "checked. Try: a stronger backward model, or `backtranslate.require_standalone: false`.",
        "language_mismatch": "The instruction is in another language than its document (`instruction_language` names "
                             "it): the detector finds it at least "
                             "`prepare.mismatch_ratio` times as likely as the document's language, so the pair would mix languages. Try: a backward model that "
                             "writes the document's language (with `prepare.languages` other than `[en]` the prompt asks "
                             "for it).",
    }

    @classmethod
    def build(cls, cfg, ctx) -> Backtranslate:
        trained = trained_template(cfg.models.backward) if cfg.backtranslate.mode == "trained" else None
        return cls(cfg.backtranslate, trained, Policy.of(cfg))

    @classmethod
    def funnel_steps(cls, summary: dict) -> list[tuple[str, int]]:
        steps = [("instructions", summary["kept"])]
        if summary.get("instructions_from_input"):
            steps.append(("instructions_from_input", summary["instructions_from_input"]))
        return steps

    @classmethod
    def summarize(cls, counters: dict, summary: dict) -> None:
        summary["instructions_from_input"] = counters.get("from_input", 0)

    def __init__(self, cfg: BacktranslateConfig, template: PromptTemplate | None = None, languages: Policy | None = None):
        self.cfg = cfg
        self.languages = languages or Policy()
        default = "backtranslate" if cfg.mode == "prompted" else "backtranslate_trained"
        self.template = template or load_template(default, self.languages.multilingual and cfg.mode == "prompted")

    def card_note(self, summary: dict) -> str | None:
        given = summary.get("instructions_from_input") or 0
        if not given:
            return None
        return (f"{given} of the {summary['kept']} instructions came with the input (`instruction_source: input`): "
                "those rows were rescored and rewritten, not backtranslated.")

    def settings(self) -> dict:
        return {**self.cfg.model_dump(), "languages": self.languages.settings()}

    def requests(self, row: dict) -> list[Request]:
        if row.get("instruction_given"):  # the input brought its instruction: nothing to write
            return []
        r = self.template.render(document=row["text"], language=self.languages.prompt_language(row))
        return [Request(messages=r.messages, assistant_prefix=r.assistant_prefix, max_tokens=self.cfg.max_tokens, stop=list(self.cfg.stop),
                        temperature=self.cfg.temperature, top_p=self.cfg.top_p, key=row["id"])]

    def apply(self, row: dict, results: list[Result]) -> str | None:
        if not results:
            row["instruction"], row["instruction_source"] = row["instruction_given"], "input"
            self.count("from_input")
            return self.languages.check(row["instruction"], row, "instruction_language")
        row["instruction_source"] = "backtranslated"
        res = results[0]
        if not self.record_call(row, res, raw="instruction_raw"):
            return "engine_error"
        instruction = clean_instruction(res.text)
        row["instruction"] = instruction
        n = count_words(instruction)
        if n == 0:
            return "empty_instruction"
        if res.finish_reason == "length" or n > self.cfg.max_instruction_words:
            return "overlong_instruction"
        if n < self.cfg.min_instruction_words:
            return "short_instruction"
        if is_refusal(instruction):  # "I'm sorry, but ..." is the model answering, not asking
            return "refusal_instruction"
        share = copied_share(instruction, row["text"])
        row["instruction_copied_share"] = round(share, 3)
        if n >= 6 and share >= self.cfg.echo_threshold:
            return "echo_instruction"
        if self.languages.check(instruction, row, "instruction_language"):
            return "language_mismatch"
        if self.cfg.require_request and (row.get("language") or "en") == "en" and not looks_like_request(instruction):
            return "not_a_request"  # a page title, a serving line, a statement (English patterns)
        if self.cfg.require_standalone and (row.get("language") or "en") == "en" and refers_to_source(instruction):
            return "not_standalone"  # "What does the text describe?": meaningless without the page
        return None


def trained_template(model) -> PromptTemplate | None:
    """The template a trained backward model folder ships (`train backward` writes it), if any."""
    from pathlib import Path

    from ...prompts import TRAINED_TEMPLATE_FILE, template_from_text

    for folder in (getattr(model, "adapter", None), model.model):
        if folder and (Path(folder) / TRAINED_TEMPLATE_FILE).is_file():
            return template_from_text("backtranslate_trained", (Path(folder) / TRAINED_TEMPLATE_FILE).read_text())
    return None

"""backtranslate: the backward model writes the instruction that a document answers.

`prompted` uses an instruct model with our prompt (`prompts/backtranslate.jinja`, few-shot);
`trained` uses a backward model fine-tuned on reversed seed pairs with the very template it was
trained with (read from the model folder when it ships one, see `train/`). A row whose input
brought an instruction (`input.instruction_field`) keeps it, marked `instruction_source: input`,
and costs no request: that is how an existing dataset is rescored or rewritten.
Rejects: `empty_instruction`, `short_instruction`, `overlong_instruction` (too many words, or cut
off by max_tokens), `echo_instruction` (mostly copied from the document), `refusal_instruction` (the model answered
instead of asking: "I'm sorry, but ..."), `not_a_request` (a page title or a statement, not a
question or an imperative; `require_request`), `engine_error`.
"""

from __future__ import annotations

from ...config import BacktranslateConfig
from ...engines.base import Request, Result
from ...prompts import PromptTemplate, load_template
from ..stage import Stage
from .parsing import clean_instruction, copied_share, is_refusal, looks_like_request


class Backtranslate(Stage):
    name = "backtranslate"
    role = "backward"
    funnel = "instructions"
    provenance = ("backtranslate_model", "backtranslate_prompt")

    @classmethod
    def build(cls, cfg, ctx) -> Backtranslate:
        trained = trained_template(cfg.models.backward) if cfg.backtranslate.mode == "trained" else None
        return cls(cfg.backtranslate, trained)

    @classmethod
    def funnel_steps(cls, summary: dict) -> list[tuple[str, int]]:
        steps = [("instructions", summary["kept"])]
        if summary.get("instructions_from_input"):
            steps.append(("instructions_from_input", summary["instructions_from_input"]))
        return steps

    @classmethod
    def summarize(cls, counters: dict, summary: dict) -> None:
        summary["instructions_from_input"] = counters.get("from_input", 0)

    def __init__(self, cfg: BacktranslateConfig, template: PromptTemplate | None = None):
        self.cfg = cfg
        default = "backtranslate" if cfg.mode == "prompted" else "backtranslate_trained"
        self.template = template or load_template(default)

    def card_note(self, summary: dict) -> str | None:
        given = summary.get("instructions_from_input") or 0
        if not given:
            return None
        return (f"{given} of the {summary['kept']} instructions came with the input (`instruction_source: input`): "
                "those rows were rescored and rewritten, not backtranslated.")

    def settings(self) -> dict:
        return self.cfg.model_dump()

    def requests(self, row: dict) -> list[Request]:
        if row.get("instruction_given"):  # the input brought its instruction: nothing to write
            return []
        r = self.template.render(document=row["text"])
        return [Request(messages=r.messages, assistant_prefix=r.assistant_prefix, max_tokens=self.cfg.max_tokens, stop=list(self.cfg.stop),
                        temperature=self.cfg.temperature, top_p=self.cfg.top_p, key=row["id"])]

    def apply(self, row: dict, results: list[Result]) -> str | None:
        if not results:
            row["instruction"], row["instruction_source"] = row["instruction_given"], "input"
            self.count("from_input")
            return None
        row["instruction_source"] = "backtranslated"
        res = results[0]
        self.record_call(row, res)
        row["instruction_raw"] = res.text
        if not res.ok:
            return "engine_error"
        instruction = clean_instruction(res.text)
        row["instruction"] = instruction
        n = len(instruction.split())
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
        if self.cfg.require_request and not looks_like_request(instruction):
            return "not_a_request"  # a page title, a serving line, a statement
        return None


def trained_template(model) -> PromptTemplate | None:
    """The template a trained backward model folder ships (`train backward` writes it), if any."""
    from pathlib import Path

    from ...prompts import TRAINED_TEMPLATE_FILE, template_from_text

    for folder in (getattr(model, "adapter", None), model.model):
        if folder and (Path(folder) / TRAINED_TEMPLATE_FILE).is_file():
            return template_from_text("backtranslate_trained", (Path(folder) / TRAINED_TEMPLATE_FILE).read_text())
    return None

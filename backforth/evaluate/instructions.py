"""Instruction quality: two instructions judged head to head, without their answers (issue 28).

The paper compares instruction sources (backtranslated vs Alpaca, Self-instruct, ShareGPT, ...) by
regenerating every answer with one model and fine-tuning on each (Nguyen et al. 2024, §5.2, Fig. 2).
This is the cheap reading of the same question: an LLM judge sees two instructions from two sources
and says which is the better instruction on a written rubric (`prompts/instruction_judge.jinja`):

* clear: one obvious reading;
* self-contained: it does not point at a text, page or conversation the assistant cannot see
  ("summarize the article above", the typical failure of a backtranslated instruction);
* answerable: from general knowledge, without private information or the future;
* useful: a real person would want the answer.

Each instruction is shown alone, as the assistant would receive it. The judging is `Judge`'s
(both orders, cached, a stage through the runner), with this prompt; the rows it writes have the
annotation layout of `evaluate.judge`, `output_1`/`output_2` holding the two instructions.
"""

from __future__ import annotations

from ..config import ModelConfig
from ..prompts import PromptTemplate, load_template
from .judge import Judge, Method


def load_instruction_prompt(method: Method) -> PromptTemplate:
    return load_template("instruction_judge_logprobs" if method == "logprobs" else "instruction_judge")


class InstructionJudge(Judge):
    """One (instruction, instruction) pair -> an annotation row: which is the better instruction."""

    name = "judge_instructions"

    def __init__(self, judge_cfg: ModelConfig, method: Method, both_orders: bool, temperature: float = 0.0,
                 max_tokens: int = 96):
        super().__init__(judge_cfg, method, both_orders, temperature, max_tokens)
        self.template = load_instruction_prompt(method)
        self.labels["judge_prompt"] = self.template.tag

    def render(self, row: dict, a: str, b: str):
        return self.template.render(instruction_a=a, instruction_b=b)


def instruction_pair(pair_id: str, model_side: str, reference_side: str, model_name: str, reference_name: str) -> dict:
    """A pair row for `judge_pairs(..., stage=InstructionJudge(...))`: `model_side` is output_2."""
    return {"id": pair_id, "output": model_side, "reference_output": reference_side,
            "generator": model_name, "reference_generator": reference_name}

"""An experiment's configuration: the paper's comparison of datasets, in one YAML file.

Defaults follow the paper where it speaks (equal sizes, seed data tagged by source, T=0.7 /
top_p=0.9 answers, both orders judged); every field is documented here and in docs/experiment.md
(`backforth config-doc --experiment`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator

from ..config import (ConfigError, ModelConfig, RunConfig, Section, TransformersModel, _merge, explain_validation,
                      parse_overrides, read_yaml_mapping)

PIPELINE_DATASETS = ("filter", "rewrite", "filter+rewrite", "distill")


class ExternalDataset(Section):
    """A dataset to compare with, from a file or the Hugging Face hub: chat `messages`, or
    `instruction`/`response` (also `output`, Alpaca's name), or ShareGPT's `conversations`."""

    name: str = Field(..., description="Its name in the table.")
    path: str = Field(..., description="A .jsonl/.json/.parquet file, or a hub dataset name (e.g. a user's Alpaca-GPT4 copy).")
    split: str = Field("train", description="The split of a hub dataset.")


class EvalSection(Section):
    engine: Literal["transformers", "vllm"] = Field("transformers", description="How the fine-tuned models (and a reference model without its own engine) run to answer.")
    eval_set: str = Field("bundled", description="`bundled` (32 questions shipped with backforth), `alpaca_eval` (the hub's 805, the paper's benchmark) or a .jsonl/.json file with `instruction`.")
    limit: int | None = Field(None, ge=1, description="Answer only the first N questions.")
    suffix: Literal["assistant", "assistant_web", "none"] = Field("assistant", description="The sentence after each question (paper: 'Answer in the style of an AI Assistant.'; `assistant_web` adds 'with knowledge from web search if needed').")
    temperature: float = Field(0.7, ge=0, description="Sampling of the answers (paper: 0.7).")
    top_p: float = Field(0.9, gt=0, le=1, description="Nucleus sampling of the answers (paper: 0.9).")
    max_tokens: int = Field(512, ge=1, description="Longest answer.")


class ReferenceSection(Section):
    """What the fine-tuned models are judged against: a model that answers the eval set, or a file."""

    model: ModelConfig | None = Field(None, description="A model that answers the eval set (the same sampling as the fine-tuned models); default: the base model, not fine-tuned.")
    file: str | None = Field(None, description="Reference answers (`instruction`, `output`), or `alpaca_eval` for text-davinci-003's (the paper's).")


class JudgeSection(Section):
    model: ModelConfig = Field(default_factory=TransformersModel, description="The judge (default: the run's `models.judge`).")
    method: Literal["generate", "logprobs"] = Field("logprobs", description="`logprobs`: P(A) vs P(B) from one forward pass (always parses; a small judge's best); `generate`: a verdict, parsed.")
    both_orders: bool = Field(True, description="Judge each pair in both orders and average (cancels position bias).")
    max_tokens: int = Field(96, ge=1, description="Verdict budget of `generate`.")


class ResponseTableSection(Section):
    """The datasets judged head to head before any fine-tune (`response_table.md`), by the experiment's judge."""

    enabled: bool = Field(True, description="Judge the compared datasets' responses to the instructions they share, head to head, before any fine-tune (also with `train: none`).")
    limit: int | None = Field(800, ge=1, description="At most this many pairs per comparison (a sample in the datasets' shared order): judging costs two calls a pair.")
    instructions: bool = Field(True, description="Instruction quality: the compared datasets' instructions (grouped by the instructions they hold), the seed data's and external datasets', judged pairwise on a rubric (clear, self-contained, answerable, useful).")
    seed_instructions: bool = Field(True, description="Include the seed data's instructions (`seed_data`) in the instruction comparison.")
    judge_check: bool = Field(True, description="First check the judge on labelled pairs of this task (a raw document vs its faithful rewrite, an invented fact, flawed instructions; backforth/data/judge_check); the table marks the rows whose check failed.")
    min_agreement: float = Field(0.8, gt=0.5, le=1, description="The judge check's pass mark: the share of labelled pairs where the judge prefers the better side (it must also beat the length rules).")


class ExperimentConfig(Section):
    """The corpus and the pipeline (`run`), the datasets to compare, how to fine-tune and judge."""

    run: RunConfig = Field(default_factory=RunConfig, description="The pipeline run config (docs/config.md): corpus, models, stages, inline or the path of a run YAML (relative to this file). Its `variant` is ignored: the datasets below say what is derived.")
    datasets: list[str | ExternalDataset] = Field(
        ["filter", "rewrite", "filter+rewrite", "distill"],
        description="What to compare: any of `filter` (score >= threshold, the document as the response: Humpback), `rewrite` (every pair rewritten, no filter), `filter+rewrite`, `distill` (the filtered instructions answered without the document), and external datasets `{name, path}`.")
    size: int | None = Field(None, ge=1, description="Pairs per dataset (the paper compares at equal instruction counts). Default: the smallest dataset's size.")
    seed: int = Field(0, description="Seed of the subsampling (the same for every dataset, so they share instructions where they can) and of training.")
    seed_data: str = Field("bundled", description="Seed pairs mixed into every fine-tune: `bundled` (48 demo pairs) or a seed file made by `backforth seed`.")
    tags: bool = Field(True, description="Tag seed pairs 'Answer in the style of an AI Assistant.' and dataset pairs 'Answer with knowledge from web search.' (paper).")
    train: dict[str, Any] | Literal["none"] = Field(
        default_factory=dict, description="Training settings (fields of `backforth train`'s config, e.g. base_model, max_steps, lora), the same for every dataset; `none`: no fine-tuning, only the data and the analyses.")
    eval: EvalSection = Field(default_factory=EvalSection)
    reference: ReferenceSection = Field(default_factory=ReferenceSection)
    judge: JudgeSection | None = Field(None, description="The judge; default: the run's `models.judge`, by logprobs, both orders.")
    response_table: ResponseTableSection = Field(default_factory=ResponseTableSection)
    analyses: bool = Field(True, description="Compare the datasets' texts: MAUVE and classifier accuracy of rewritten vs distilled vs documents, unique trigrams, lengths.")

    @field_validator("datasets")
    @classmethod
    def _known(cls, value: list) -> list:
        names = []
        for d in value:
            name = d if isinstance(d, str) else d.name
            if isinstance(d, str) and d not in PIPELINE_DATASETS:
                raise ValueError(f"'{d}': not a pipeline dataset ({', '.join(PIPELINE_DATASETS)}); give an external "
                                 "one as {name: ..., path: ...}")
            if name in names:
                raise ValueError(f"'{name}' appears twice")
            names.append(name)
        if not names:
            raise ValueError("give at least one dataset")
        return value

    def names(self) -> list[str]:
        return [d if isinstance(d, str) else d.name for d in self.datasets]

    def pipeline_datasets(self) -> list[str]:
        return [d for d in self.datasets if isinstance(d, str)]

    def externals(self) -> list[ExternalDataset]:
        return [d for d in self.datasets if not isinstance(d, str)]

    def judge_section(self) -> JudgeSection:
        return self.judge or JudgeSection(model=self.run.models.judge)


def load_experiment(path: str | Path | None, overrides: list[str] | None = None, base: dict | None = None) -> ExperimentConfig:
    """An experiment config from YAML (relative paths resolved next to it) and `--set` overrides."""
    data = dict(base or {})
    if path is not None:
        data = _merge(data, read_yaml_mapping(path, "experiment config"))
        if isinstance(data.get("run"), str):  # the path of a run config, next to this file
            run_path = Path(path).parent / data["run"]
            data["run"] = read_yaml_mapping(run_path, "run config")
            inp = data["run"].get("input", {}).get("path")
            if inp and not Path(inp).is_absolute() and (run_path.parent / inp).exists():
                data["run"]["input"]["path"] = str(run_path.parent / inp)
    data = _merge(data, parse_overrides(overrides or []))
    try:
        cfg = ExperimentConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(explain_validation(err, str(path or "experiment"), "experiment configuration")) from None
    if path is not None:
        here = Path(path).parent
        inp = cfg.run.input.path
        if inp and not Path(inp).is_absolute() and (here / inp).exists():
            cfg.run.input.path = str(here / inp)
    return cfg


def dump(cfg: ExperimentConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)

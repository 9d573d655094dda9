"""Fine-tuning (train/sft.py, train/cli.py): data per direction, loss mask, length drops, config, CLI,
and one real 2-step LoRA run of the embedded model (SmolLM2-135M) on the CPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from backforth.config import SEED_TAG, WEB_TAG, ConfigError
from backforth.prompts import TRAINED_TEMPLATE_FILE
from backforth.prompts import load_template, template_from_text
from backforth.train.sft import (
    TrainConfig,
    TrainError,
    backward_examples,
    build_trainer,
    drop_too_long,
    example_length,
    forward_examples,
    load_sft_rows,
    load_train_config,
    resolve_base,
    sft_examples,
    train_backward,
)

SMOL = "embedded:smollm2-135m"  # the smallest embedded model: these tests check mechanics, not quality

SEED = [
    {"instruction": "Name a primary colour.", "response": "Red is a primary colour."},
    {"instruction": "What is 2 + 2?", "response": "2 + 2 equals 4."},
]
WEB = [
    {"id": "w1", "instruction": "How do bees make honey?", "response": "Bees turn nectar into honey.",
     "messages": [{"role": "user", "content": f"How do bees make honey? {WEB_TAG}"},
                  {"role": "assistant", "content": "Bees turn nectar into honey."}]},
]


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_base(SMOL))


# ---------------------------------------------------------------------------------------- data


def test_backward_uses_the_trained_template_with_the_response_as_document():
    template = load_template("backtranslate_trained")
    ex = backward_examples(SEED, template)
    assert ex[0]["prompt"] == template.render(document=SEED[0]["response"]).messages
    assert [m["role"] for m in ex[0]["prompt"]] == ["system", "user"]
    assert ex[0]["prompt"][-1]["content"] == "Red is a primary colour."
    assert ex[0]["completion"] == [{"role": "assistant", "content": "Name a primary colour."}]
    assert not any(tag in json.dumps(ex) for tag in (SEED_TAG, WEB_TAG))


def test_backward_completion_starts_with_a_forced_assistant_prefix():
    template = template_from_text("t", "[[user]]\n{{ document }}\n[[assistant]]\nInstruction:")
    ex = backward_examples(SEED[:1], template)
    assert ex[0]["prompt"] == [{"role": "user", "content": "Red is a primary colour."}]
    assert ex[0]["completion"][0]["content"] == "Instruction:Name a primary colour."


def test_forward_appends_the_seed_tag():
    ex = forward_examples(SEED)
    assert ex[1]["prompt"] == [{"role": "user", "content": f"What is 2 + 2? {SEED_TAG}"}]
    assert ex[1]["completion"] == [{"role": "assistant", "content": "2 + 2 equals 4."}]


def test_sft_tags_seed_and_keeps_web_tag():
    ex = sft_examples(WEB, SEED, tags=True)
    users = [e["prompt"][0]["content"] for e in ex]
    assert users == [f"Name a primary colour. {SEED_TAG}", f"What is 2 + 2? {SEED_TAG}",
                     f"How do bees make honey? {WEB_TAG}"]
    assert ex[2]["completion"][0]["content"] == "Bees turn nectar into honey."
    bare = [{"instruction": "Why?", "response": "Because."}]  # no `messages`: tagged here as export would
    assert sft_examples(bare, [], tags=True)[0]["prompt"][0]["content"] == f"Why? {WEB_TAG}"


def test_sft_without_tags_drops_both():
    ex = sft_examples(WEB, SEED, tags=False)
    text = json.dumps(ex)
    assert SEED_TAG not in text and WEB_TAG not in text
    assert ex[2]["prompt"][0]["content"] == "How do bees make honey?"
    # Without an `instruction` column the tag is stripped from the user turn.
    bare = [{"messages": WEB[0]["messages"]}]
    assert sft_examples(bare, [], tags=False)[0]["prompt"][0]["content"] == "How do bees make honey?"


def test_load_sft_rows_from_run_dir_file_and_rows(tmp_path):
    (tmp_path / "sft.jsonl").write_text("\n".join(json.dumps(r) for r in WEB) + "\n")
    assert load_sft_rows(tmp_path) == WEB
    assert load_sft_rows(tmp_path / "sft.jsonl") == WEB
    assert load_sft_rows(WEB) == WEB
    with pytest.raises(TrainError, match="sft.jsonl"):
        load_sft_rows(tmp_path / "missing")


def test_too_long_examples_are_dropped_and_counted(tokenizer):
    examples = forward_examples(SEED + [{"instruction": "Long?", "response": "word " * 400}])
    lengths = [example_length(tokenizer, e) for e in examples]
    limit = max(lengths[:2])
    kept, dropped = drop_too_long(examples, tokenizer, limit)
    assert dropped == [2] and kept == examples[:2]


# ------------------------------------------------------------------------------------ loss mask


def test_prompt_tokens_are_masked_and_completion_tokens_are_not(tokenizer, tmp_path):
    """The trainer's own dataset and collator: labels are -100 exactly on the prompt (and padding)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tiny = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32,
                                        num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1))
    examples = backward_examples(SEED)
    cfg = TrainConfig(bf16=False, progress=False, max_steps=1)
    trainer = build_trainer(examples, tiny, tokenizer, cfg, tmp_path)
    rows = [trainer.train_dataset[i] for i in range(2)]
    for ex, row in zip(examples, rows):
        prompt_len = len(tokenizer.apply_chat_template(ex["prompt"], tokenize=True, add_generation_prompt=True,
                                                       return_dict=True)["input_ids"])
        assert all(label == -100 for label in row["labels"][:prompt_len])
        answer = row["labels"][prompt_len:]
        assert answer and all(label != -100 for label in answer)
        assert tokenizer.decode(answer) == ex["completion"][0]["content"] + "<|im_end|>\n"
    batch = trainer.data_collator(rows)
    lengths = [len(r["input_ids"]) for r in rows]
    short = lengths.index(min(lengths))
    assert (batch["labels"][short, min(lengths):] == -100).all()  # padding carries no loss
    assert int((batch["labels"] != -100).sum()) == sum(sum(1 for x in r["labels"] if x != -100) for r in rows)


# -------------------------------------------------------------------------------------- config


def test_config_from_yaml_with_overrides(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("lora_r: 8\nmax_steps: 100\n")
    cfg = load_train_config(path, ["learning_rate=3e-4", "lora=false"])
    assert (cfg.lora_r, cfg.max_steps, cfg.learning_rate, cfg.lora) == (8, 100, 3e-4, False)
    assert TrainConfig().peak_lr() == 2e-4 and TrainConfig(lora=False).peak_lr() == 1e-5
    assert (TrainConfig().weight_decay, TrainConfig().lr_scheduler, TrainConfig().lora_dropout) == (0.1, "cosine", 0.1)


def test_config_errors_name_the_field(tmp_path):
    with pytest.raises(ConfigError, match="lora_rank: unknown field"):
        load_train_config(None, ["lora_rank=8"])
    with pytest.raises(ConfigError, match="max_steps"):
        load_train_config(None, ["max_steps=zero"])


def test_humpback_small_data_batch():
    cfg = TrainConfig()
    assert cfg.effective_batch(48) == 8 and cfg.effective_batch(3200) == 32
    assert TrainConfig(small_data_batch_size=None).effective_batch(48) == 32


def test_missing_base_model_is_a_clear_error(tmp_path):
    with pytest.raises(TrainError, match="no such folder"):
        resolve_base(str(tmp_path / "nowhere"))
    with pytest.raises(TrainError, match="no config.json"):
        resolve_base(str(tmp_path))


# ----------------------------------------------------------------------------------------- CLI


def _cli() -> typer.Typer:
    """`train` and `seed` as backforth/cli.py registers them, inside its one error path."""
    from backforth.cli import app

    return app


def test_cli_reports_config_and_seed_errors(tmp_path):
    runner = CliRunner()
    res = runner.invoke(_cli(), ["train", "backward", "--set", "lora_r=abc", "--out", str(tmp_path / "m")])
    assert res.exit_code == 2 and "lora_r" in res.output
    res = runner.invoke(_cli(), ["train", "forward", "--seed", str(tmp_path / "none.jsonl")])
    assert res.exit_code == 2 and "does not exist" in res.output
    res = runner.invoke(_cli(), ["train", "merge", str(tmp_path)])
    assert res.exit_code == 2 and "adapter_config.json" in res.output


def test_cli_seed_builds_a_seed_file(tmp_path):
    msgs = [
        {"message_id": "t1", "parent_id": None, "message_tree_id": "t1", "role": "prompter", "text": "Hi?", "lang": "en"},
        {"message_id": "a1", "parent_id": "t1", "message_tree_id": "t1", "role": "assistant", "text": "Hello.",
         "lang": "en", "rank": 0},
    ]
    src = tmp_path / "oasst.jsonl"
    src.write_text("\n".join(json.dumps(m) for m in msgs) + "\n")
    res = CliRunner().invoke(_cli(), ["seed", "--from", str(src), "--out", str(tmp_path / "seed.jsonl"), "--n", "5"])
    assert res.exit_code == 0, res.output
    assert "wrote 1 seed pairs" in res.output
    assert json.loads((tmp_path / "seed.jsonl").read_text())["instruction"] == "Hi?"


# ------------------------------------------------------------------------------ real training


def test_real_lora_training_on_the_embedded_model(tmp_path):
    """Two real LoRA steps on SmolLM2-135M through the CLI: adapter, template, card, too-long count, resume.

    One CPU thread: on a shared 2-core machine two threads made the same steps ten times slower.
    """
    rows = [{"instruction": "Say hi.", "response": "Hi!"}, {"instruction": "Say bye.", "response": "Bye!"},
            {"instruction": "Too long.", "response": "word " * 300}]
    seed = tmp_path / "seed.jsonl"
    seed.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "backward"
    sets = ["per_device_batch_size=2", "small_data_batch_size=2", "max_length=128", "warmup_ratio=0",
            "save_steps=1", "logging_steps=1", "progress=false", "threads=1", f"base_model={SMOL}"]
    args = ["train", "backward", "--seed", str(seed), "--out", str(out), "--max-steps", "2"]
    res = CliRunner().invoke(_cli(), args + [x for s in sets for x in ("--set", s)])
    assert res.exit_code == 0, res.output
    assert "backward: 2 steps" in res.output and "dropped as too long 1" in res.output
    stats = json.loads((out / "train_stats.json").read_text())
    assert stats["counts"] == {"seed": 3, "trained": 2} and stats["final_loss"] and stats["seconds_per_step"]
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert Path(adapter["base_model_name_or_path"], "config.json").is_file()
    assert (out / "adapter_model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    assert (out / TRAINED_TEMPLATE_FILE).read_text() == load_template("backtranslate_trained").source
    assert "direction: backward" in (out / "training_config.yaml").read_text()
    card = (out / "README.md").read_text()
    assert "dropped as longer than 128 tokens: 1" in card and "time per step" in card

    cfg = load_train_config(None, sets + ["max_steps=2"])
    again = train_backward(rows, out, cfg)  # the same command again: resumes, nothing left
    assert again.resumed_from and again.resumed_from.endswith("checkpoint-2") and again.steps == 2
    assert again.seconds_per_step == stats["seconds_per_step"]
    with pytest.raises(TrainError, match="other data or settings"):
        train_backward(rows[:1], out, cfg)

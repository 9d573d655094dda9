"""Real fine-tuning of the embedded model (SmolLM2-135M) on the CPU, loaded back by the engine.

A backward LoRA adapter trained on 6 demo seed pairs must load through `TransformersEngine(model=<folder>)`
(as `backtranslate.mode: trained` does) and write an instruction; merging it must give full weights
the engine loads the same way. Forward and SFT runs check the other two data paths end to end.
"""

from __future__ import annotations

import json

import pytest

from backforth.cli import DATA_DIR
from backforth.config import WEB_TAG
from backforth.engines.base import Request
from backforth.engines.transformers import TransformersEngine
from backforth.prompts import TRAINED_TEMPLATE_FILE
from backforth.prompts import template_from_text
from backforth.train.seed import load_seed
from backforth.train.sft import TrainConfig, merge, train_backward, train_forward, train_sft

pytestmark = pytest.mark.slow

DOCUMENT = ("Preheat the oven to 200 C. Cut the potatoes into wedges, toss them with olive oil, salt and "
            "paprika, and roast them for 35 to 40 minutes, turning them once halfway through.")


def _cfg(**kw) -> TrainConfig:
    base = dict(max_steps=3, per_device_batch_size=2, small_data_batch_size=2, max_length=512, warmup_ratio=0.0,
                save_steps=2, logging_steps=1, progress=False, threads=1, base_model="embedded:smollm2-135m")
    return TrainConfig(**{**base, **kw})


def _instruction(model_dir) -> str:
    template = template_from_text("backtranslate_trained", (model_dir / TRAINED_TEMPLATE_FILE).read_text())
    rendered = template.render(document=DOCUMENT)
    engine = TransformersEngine(model=str(model_dir))
    [res] = engine.generate([Request(messages=rendered.messages, max_tokens=32, temperature=0.0)])
    engine.close()
    assert res.ok, res.error
    return res.text


@pytest.fixture(scope="module")
def backward_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("train") / "backward"
    result = train_backward(load_seed(DATA_DIR / "demo_seed.jsonl")[:6], out, _cfg())
    assert result.steps == 3 and result.counts["trained"] == 6 and result.final_loss is not None
    return out


def test_backward_adapter_loads_in_the_engine_and_writes_an_instruction(backward_dir):
    assert (backward_dir / "adapter_config.json").is_file()
    assert _instruction(backward_dir).strip()


def test_merged_weights_load_in_the_engine(backward_dir, tmp_path):
    merged = merge(backward_dir, tmp_path / "merged")
    assert (merged / "config.json").is_file() and (merged / "model.safetensors").is_file()
    assert not (merged / "adapter_config.json").exists()
    assert (merged / TRAINED_TEMPLATE_FILE).is_file() and (merged / "tokenizer.json").is_file()
    assert _instruction(merged).strip()


def test_forward_and_sft_train_for_real(tmp_path):
    seed = load_seed(DATA_DIR / "demo_seed.jsonl")[:4]
    fwd = train_forward(seed, tmp_path / "forward", _cfg(max_steps=1))
    assert fwd.steps == 1 and fwd.direction == "forward"
    run = tmp_path / "run"
    run.mkdir()
    pair = {"id": "w1", "instruction": "Why is the sky blue?", "response": "Air scatters blue light the most.",
            "messages": [{"role": "user", "content": f"Why is the sky blue? {WEB_TAG}"},
                         {"role": "assistant", "content": "Air scatters blue light the most."}]}
    (run / "sft.jsonl").write_text(json.dumps(pair) + "\n")
    sft = train_sft(run, seed, tmp_path / "sft", _cfg(max_steps=1), tags=False)
    assert sft.steps == 1 and sft.counts == {"seed": 4, "web": 1, "trained": 5}
    assert "tags: false" in (tmp_path / "sft" / "training_config.yaml").read_text()


def test_trained_backward_model_inside_the_pipeline(backward_dir, tmp_path):
    """`backtranslate.mode: trained` loads the adapter folder and uses the template it shipped."""
    from backforth.analysis.analyze import stage_rows
    from backforth.config import load_config
    from backforth.pipeline.method import run_method

    cfg = load_config(DATA_DIR / "demo.yaml", [
        "backtranslate.mode=trained", f"models.backward.model={backward_dir}", "variant=filter",
        "page_kind.enabled=false",  # every page to the trained backward model, whatever the 135M reads them as
        "distill.enabled=false", "backtranslate.max_tokens=32", "runner.progress=false",
        "models.scorer.model=embedded:smollm2-135m"])
    cfg.input.path, cfg.input.limit = str(DATA_DIR / "demo_corpus.jsonl"), 3
    stats = run_method(cfg, tmp_path / "run")
    rows = list(stage_rows(tmp_path / "run", "backtranslate").values())
    assert len(rows) == stats["stages"]["backtranslate"]["in"] >= 2
    shipped = template_from_text("backtranslate_trained", (backward_dir / TRAINED_TEMPLATE_FILE).read_text())
    for r in rows:
        assert r["backtranslate_model"].endswith("+backward")  # the base with the trained adapter
        assert r["backtranslate_prompt"] == shipped.tag and r["backtranslate_completion_tokens"] > 0

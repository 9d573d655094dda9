"""The CUDA path, checked: the transformers engine and `backforth train` on a GPU, with figures.

Prepared on a CPU so that GPU time goes to the GPU run alone (the GPU machine has no network and
no model weights). Models are built on the machine from a config with random weights, which cost
the same compute as real ones: SmolLM2-135M's and Qwen2.5-0.5B's shapes, with their real
tokenizers (carried along, a few MB). `--tiny` shrinks the layers for a quick CPU rehearsal.

What it runs, for each model shape:
1. the `transformers` engine, generation (backtranslation prompts) and choice scoring (curate by
   logprobs) on a batch of long and short prompts: device placement, dtype (bf16 on a GPU), SDPA,
   and host-device copies per generated token (torch profiler, CUDA only) against a bare
   `model.generate` on the same batches;
2. requests/s and tokens/s of the engine against bare `model.generate` / a bare forward pass on
   the same prompts and batches (the pipeline/engine ratio; target >= 0.95 on a GPU);
then, once, with the SmolLM2 shape:
3. `backforth run` (the real CLI, a subprocess) on a generated corpus of a few hundred documents
   through every stage, every role on `device: <device>`, checking that each document ends exactly
   once in sft.jsonl or rejects.jsonl;
4. 20 LoRA steps of `backforth train sft` (in-process, to read the GPU's peak memory) in bf16:
   seconds per step and peak GPU memory.
Everything goes into one JSON file (`--out`).

Prepare here (the models' tokenizers and the wheels the GPU machine lacks, under 64 MiB):

    python benchmarks/gpu_check.py --export-assets gpu_assets      # needs `make install`
    python benchmarks/gpu_check.py --device cpu --tiny --assets gpu_assets --out gpu_check_cpu.json

On the GPU machine (torch, transformers, accelerate, peft, pyarrow, scipy, scikit-learn present):

    pip install --no-index --find-links gpu_assets/wheels -e . --no-build-isolation
    python benchmarks/gpu_check.py --device cuda --assets gpu_assets --out $OUT/gpu_check.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

SHAPES = {  # the architectures' published configs, less the weights
    "smollm2-135m": dict(model_type="llama", architectures=["LlamaForCausalLM"], hidden_size=576,
                         intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, max_position_embeddings=8192, rms_norm_eps=1e-5,
                         rope_theta=100000.0, tie_word_embeddings=True, vocab_size=49152),
    "qwen2.5-0.5b": dict(model_type="qwen2", architectures=["Qwen2ForCausalLM"], hidden_size=896,
                         intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                         num_key_value_heads=2, max_position_embeddings=32768, rms_norm_eps=1e-6,
                         rope_theta=1000000.0, tie_word_embeddings=True, vocab_size=151936),
}
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
EMBEDDED = {"smollm2-135m": "smollm2-135m", "qwen2.5-0.5b": "qwen2.5-coder-0.5b"}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                   "generation_config.json")
# What the GPU machine lacks (it has torch, transformers, accelerate, peft, pyarrow, scipy, scikit-learn).
WHEELS = ["pydantic", "pydantic-core", "annotated-types", "typing-inspection", "datasets", "dill", "xxhash",
          "multiprocess", "trl", "datasketch", "gguf", "typer", "shellingham", "rich", "markdown-it-py", "mdurl",
          "pygments", "jinja2", "markupsafe", "httpx", "httpcore", "h11", "anyio", "sniffio", "fsspec", "pyyaml",
          "tqdm", "click", "pandas", "tzdata", "python-dateutil", "pytz", "six"]


def export_assets(folder: Path) -> None:
    """Tokenizers of both shapes (from the embedded models' converted folders) and the missing wheels."""
    from backforth.engines.models import resolve_model_dir

    for shape, name in EMBEDDED.items():
        weights, _ = resolve_model_dir(f"embedded:{name}")
        dest = folder / "tokenizers" / shape
        dest.mkdir(parents=True, exist_ok=True)
        for f in TOKENIZER_FILES:
            if (Path(weights) / f).is_file():
                shutil.copy(Path(weights) / f, dest / f)
    wheels = folder / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                    "--python-version", "3.11", "-d", str(wheels), *WHEELS], check=True)
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    print(f"wrote {folder}: {size / 2**20:.1f} MiB (the device carries at most 64 MiB)")


def build_model(shape: str, assets: Path, out: Path, tiny: bool) -> Path:
    """A random-weights model of `shape` with its real tokenizer, saved where the engine can load it."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    spec = dict(SHAPES[shape], **(TINY if tiny else {}))
    model_type = spec.pop("model_type")
    config = AutoConfig.for_model(model_type, **spec)
    tok = AutoTokenizer.from_pretrained(assets / "tokenizers" / shape)
    config.bos_token_id, config.eos_token_id = tok.bos_token_id, tok.eos_token_id
    config.pad_token_id = tok.pad_token_id
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    folder = out / shape
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def prompts(tokenizer, n: int, tiny: bool) -> tuple[list, list]:
    """Backtranslation (generation) and curate (scoring) requests over long and short real documents."""
    from long_documents import make_corpora, requests_for

    docs = make_corpora(tokenizer, n, 120 if tiny else 500)["skewed"]
    return requests_for("generate", docs, 16 if tiny else 64), requests_for("score", docs, 1)


def copies_per_token(fn, cuda: bool) -> dict | None:
    """Host-device copies while `fn` runs, from the CUDA profiler (None on a CPU: there are none)."""
    if not cuda:
        return None
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        tokens = fn()
    names = [e.name for e in prof.events()]
    htod = sum("Memcpy HtoD" in n for n in names)
    dtoh = sum("Memcpy DtoH" in n for n in names)
    return {"htod": htod, "dtoh": dtoh, "tokens": tokens, "per_token": round((htod + dtoh) / max(1, tokens), 3)}


def check_engine(folder: Path, device: str, tiny: bool) -> dict:
    """The engine on `device` against bare model.generate / forward on the same batches."""
    import torch

    from backforth.engines.transformers import TransformersEngine

    engine = TransformersEngine(model=str(folder), device=device, batch_size=16)
    p = next(engine.model.parameters())
    cuda = device.startswith("cuda")
    fig = {"device": str(p.device), "dtype": str(p.dtype).replace("torch.", ""),
           "attention": engine.model.config._attn_implementation, "max_batch_tokens": engine.max_batch_tokens}
    assert p.device.type == device.split(":")[0], f"weights on {p.device}, not {device}"
    if cuda:
        assert p.dtype == torch.bfloat16, f"dtype {p.dtype} on a GPU: expected bfloat16"
    gen, score = prompts(engine.tokenizer, 16 if tiny else 64, tiny)
    engine.generate(gen[:2])  # warm-up (kernels, allocator)

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def encoded(reqs):
        return [engine.tokenizer(engine.render(r), add_special_tokens=False)["input_ids"] for r in reqs]

    def bare_generate() -> int:
        r0, seqs, n = gen[0], encoded(gen), 0
        for batch in engine.batches([len(s) for s in seqs], r0.max_tokens):
            ids, mask = engine._pad([seqs[i] for i in batch])
            with torch.inference_mode():
                out = engine.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=r0.max_tokens,
                                            do_sample=True, temperature=r0.temperature, top_p=r0.top_p, top_k=0,
                                            stop_strings=r0.stop, tokenizer=engine.tokenizer,
                                            pad_token_id=engine.tokenizer.pad_token_id)
            n += int((out[:, ids.shape[1]:] != engine.tokenizer.pad_token_id).sum())
        sync()
        return n

    def engine_generate() -> int:
        res = engine.generate(gen)
        sync()
        assert all(r.ok for r in res), [r.error for r in res if not r.ok][:1]
        return sum(r.completion_tokens for r in res)

    def bare_score() -> int:
        seqs = encoded(score)
        for batch in engine.batches([len(s) for s in seqs], 0):
            ids, mask = engine._pad([seqs[i] for i in batch])
            with torch.inference_mode():
                pos = (mask.cumsum(-1) - 1).clamp(min=0)
                engine.model(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=1).logits.cpu()
        sync()
        return 0

    def engine_score() -> int:
        res = engine.generate(score)
        sync()
        assert all(r.ok and r.choice_logprobs for r in res)
        return 0

    prompt_tokens = {"generate": sum(map(len, encoded(gen))), "score": sum(map(len, encoded(score)))}
    for kind, bare, ours, n in (("generate", bare_generate, engine_generate, len(gen)),
                                ("score", bare_score, engine_score, len(score))):
        times = {"bare": [], "engine": []}
        new_tokens = {}
        for _ in range(2):  # alternate, so drift favours neither
            for name, fn in (("bare", bare), ("engine", ours)):
                t0 = time.perf_counter()
                new_tokens[name] = fn()
                times[name].append(time.perf_counter() - t0)
        t = {k: min(v) for k, v in times.items()}
        fig[kind] = {"requests": n, "prompt_tokens": prompt_tokens[kind],
                     "bare_s": round(t["bare"], 3), "engine_s": round(t["engine"], 3),
                     "engine_requests_per_s": round(n / t["engine"], 2),
                     "engine_tokens_per_s": round((prompt_tokens[kind] + new_tokens["engine"]) / t["engine"], 1),
                     "bare_requests_per_s": round(n / t["bare"], 2),
                     "pipeline_engine_ratio": round(t["bare"] / t["engine"], 3)}
    fig["copies_engine"] = copies_per_token(engine_generate, cuda)
    fig["copies_bare"] = copies_per_token(bare_generate, cuda)
    if cuda:
        fig["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
    engine.close()
    return fig


def check_run(folder: Path, device: str, work: Path, n_docs: int, tiny: bool) -> dict:
    """`backforth run` through every stage on `device`; every document ends exactly once."""
    from long_documents import stdlib_text

    paras = stdlib_text()
    corpus = work / "corpus.jsonl"
    with open(corpus, "w") as fh:
        for i in range(n_docs):
            text = "\n\n".join(paras[(3 * i + k) % len(paras)] for k in range(3))
            rec = {"id": f"d{i}", "text": text, "source": "stdlib"}
            if i % 2:  # random weights write no usable instruction: half the rows bring theirs, so every stage runs
                rec["instruction"] = f"Explain what this text says about {text.split()[0]}."
            fh.write(json.dumps(rec) + "\n")
    role = {"engine": "transformers", "model": str(folder), "device": device}
    cfg = {"input": {"path": str(corpus)}, "variant": "filter+rewrite",
           "models": {r: role for r in ("backward", "scorer", "rewriter", "distiller", "judge")},
           "prepare": {"min_words": 20}, "backtranslate": {"max_tokens": 16 if tiny else 48},
           "page_kind": {"min_p": 0.001}, "curate": {"method": "logprobs", "threshold": 1},  # random weights: keep all
           "grounding": {"max_unsupported_numbers": None, "max_unsupported_share": None},
           "rewrite": {"max_tokens": 32 if tiny else 256}, "distill": {"max_tokens": 32 if tiny else 256},
           "runner": {"chunk_size": 64, "progress": False}}
    (work / "run.yaml").write_text(json.dumps(cfg))
    out = work / "run"
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "backforth.cli", "run", str(work / "run.yaml"), "--out", str(out)],
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"backforth run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    ids = [json.loads(line)["id"] for f in ("sft.jsonl", "rejects.jsonl") for line in open(out / f)]
    assert sorted(ids) == sorted(f"d{i}" for i in range(n_docs)), "a document is missing or appears twice"
    stats = json.loads((out / "stats.json").read_text())
    return {"documents": n_docs, "wall_s": round(wall, 1), "funnel": stats["funnel"],
            "seconds_by_stage": {k: v["seconds"] for k, v in stats["stages"].items()},
            "each_document_once": True, "run_dir": str(out)}


def check_train(folder: Path, device: str, work: Path, run_dir: Path, steps: int) -> dict:
    """`backforth train sft` for `steps` LoRA steps in bf16: s/step and peak GPU memory."""
    import torch

    from backforth.train.seed import load_seed
    from backforth.train.sft import load_train_config, train_sft

    seed = load_seed(Path(__file__).resolve().parent.parent / "backforth" / "data" / "demo_seed.jsonl")
    web = [json.loads(line) for line in open(run_dir / "sft.jsonl")] or \
          [{"instruction": s["instruction"], "response": s["response"]} for s in seed]
    cfg = load_train_config(None, [f"base_model={folder}", f"max_steps={steps}", f"device={device}", "bf16=true",
                                   "progress=false", "save_steps=1000", "logging_steps=5"])
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    result = train_sft(web, seed, work / "sft", cfg)
    fig = {"steps": result.steps, "seconds_per_step": round(result.seconds_per_step or 0, 3),
           "wall_s": round(time.perf_counter() - t0, 1), "final_loss": result.final_loss, "bf16": True}
    if cuda:
        fig["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
    return fig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda", help="cuda (the check) or cpu (the rehearsal)")
    ap.add_argument("--tiny", action="store_true", help="2-layer models, fewer documents: a quick rehearsal")
    ap.add_argument("--assets", type=Path, default=Path("gpu_assets"), help="folder made by --export-assets")
    ap.add_argument("--export-assets", type=Path, default=None, help="write the tokenizers and wheels here, then stop")
    ap.add_argument("--docs", type=int, default=None, help="documents for `backforth run` (default 300; 24 with --tiny)")
    ap.add_argument("--steps", type=int, default=20, help="LoRA steps of `train sft`")
    ap.add_argument("--out", type=Path, default=Path("gpu_check.json"))
    args = ap.parse_args()
    if args.export_assets:
        export_assets(args.export_assets)
        return
    import torch
    import transformers

    figures: dict = {"device": args.device, "tiny": args.tiny, "torch": torch.__version__,
                     "transformers": transformers.__version__, "python": platform.python_version(),
                     "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        folders = {shape: build_model(shape, args.assets, work / "models", args.tiny) for shape in SHAPES}
        figures["engine"] = {}
        for shape, folder in folders.items():
            figures["engine"][shape] = check_engine(folder, args.device, args.tiny)
            print(f"engine {shape}: {json.dumps(figures['engine'][shape])}", flush=True)
        figures["run"] = check_run(folders["smollm2-135m"], args.device, work, args.docs or (24 if args.tiny else 300),
                                   args.tiny)
        print(f"run: {json.dumps(figures['run'])}", flush=True)
        figures["train"] = check_train(folders["smollm2-135m"], args.device, work, Path(figures["run"]["run_dir"]),
                                       args.steps)
        print(f"train: {json.dumps(figures['train'])}", flush=True)
    figures["wall_s"] = round(time.perf_counter() - t_start, 1)
    args.out.write_text(json.dumps(figures, indent=2))
    for shape, f in figures["engine"].items():
        print(f"{shape}: generate pipeline/engine ratio {f['generate']['pipeline_engine_ratio']}, "
              f"score {f['score']['pipeline_engine_ratio']}; {f['generate']['engine_requests_per_s']} req/s, "
              f"{f['generate']['engine_tokens_per_s']} tok/s")
    print(f"wrote {args.out} ({figures['wall_s']} s)")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()

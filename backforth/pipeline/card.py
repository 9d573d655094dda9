"""The dataset card (`README.md` in the run dir): what the data is, how it was made, how to load it."""

from __future__ import annotations

import json
from pathlib import Path

from .. import __version__
from ..config import RunConfig

def _variant(cfg: RunConfig) -> str:
    """The variant in words, with the keep rule actually configured."""
    c = cfg.curate
    if c.keep_share is not None:
        keep = f"the best {c.keep_share:.0%} of the scored pairs"
    else:
        on = " (expected score)" if c.method == "logprobs" and c.threshold_on == "expected" else ""
        keep = f"pairs scored {c.threshold:g}{on}" if c.threshold == 5 else f"pairs scored >= {c.threshold:g}{on}"
    return {
        "filter": f"filtering only: {keep} are kept, the response is the cleaned web document",
        "rewrite": "rewriting only: every backtranslated pair is rewritten, no score filter",
        "filter+rewrite": f"filtering + rewriting: {keep} are rewritten",
    }[cfg.variant]


def _table(rows: list[tuple]) -> str:
    head, *body = rows
    lines = ["| " + " | ".join(map(str, head)) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(map(str, r)) + " |" for r in body]
    return "\n".join(lines)


def _given_line(stages: dict) -> str:
    given = stages.get("backtranslate", {}).get("instructions_from_input") or 0
    if not given:
        return ""
    return (f"{given} of the {stages['backtranslate']['kept']} instructions came with the input "
            "(`instruction_source: input`): those rows were rescored and rewritten, not backtranslated.\n")


def _sample(out: Path) -> str:
    path = out / "sft.jsonl"
    if not path.exists() or path.stat().st_size == 0:
        return "_No pair was kept in this run: see `rejects.jsonl` for why._"
    with open(path, encoding="utf-8") as fh:
        row = json.loads(fh.readline())
    show = {k: row[k] for k in ("id", "messages", "score", "score_method")}
    text = json.dumps(show, indent=2, ensure_ascii=False)
    return "```json\n" + (text if len(text) < 3000 else text[:3000] + "\n...") + "\n```"


def write_card(cfg: RunConfig, out: Path, stats: dict, fingerprints: dict) -> None:
    funnel = stats["funnel"]
    stages = stats["stages"]
    models = []
    for stage, role in (("backtranslate", "backward"), ("curate", "scorer"), ("rewrite", "rewriter"), ("distill", "distiller")):
        if stage in stages:
            m = getattr(cfg.models, role)
            sampling = getattr(cfg, stage)
            samp = ("forward pass (logprobs)" if stage == "curate" and cfg.curate.method == "logprobs"
                    else f"T={sampling.temperature}, top_p={sampling.top_p}, max_tokens={sampling.max_tokens}")
            models.append((stage, role, f"{m.engine}: {m.model}" + (f" + {m.adapter}" if m.adapter else ""), samp,
                           fingerprints[stage]["fields"].get("prompt", "")))
    rejects = [(s, r, n) for s, st in stages.items() for r, n in st["rejected_by_reason"].items()]
    curate = stages.get("curate", {})
    lines = [
        "---",
        "task_categories: [text-generation]",
        "tags: [synthetic, instruction-tuning, backtranslation, backforth]",
        "configs:",
        "- config_name: default",
        "  data_files: sft.jsonl",
        "---",
        "",
        f"# Instruction data made by back-and-forth translation ({cfg.variant})",
        "",
        "Pairs of (instruction, response) made from web documents with **instruction back-and-forth "
        "translation** (Nguyen et al., 2024, arXiv:2408.04614): a backward model writes the instruction each "
        "document answers, a scorer rates the pair on Humpback's 5-point rubric, and an aligned model rewrites "
        "the document into a response that stays close to it. "
        f"Variant: {_variant(cfg)}. Made with backforth {__version__}.",
        "",
        "## Counts",
        "",
        _table([("step", "rows"), *funnel.items()]),
        "",
        _given_line(stages),
        f"`sft.jsonl` / `sft.parquet`: {stats['outputs']['sft']} pairs. "
        f"`distilled.jsonl`: {stats['outputs']['distilled']} distilled answers to the same instructions (the baseline). "
        f"`rejects.jsonl`: {stats['outputs']['rejects']} rejected rows, each with its `stage` and `reason`.",
        "",
        "## Models, sampling and prompts",
        "",
        _table([("stage", "role", "model", "sampling", "prompt (name@version#hash)"), *models]) if models else "",
        "",
    ]
    if curate:
        dist = curate.get("score_distribution", {})
        how = ""
        if cfg.curate.method == "logprobs":
            on = ("expected" if cfg.curate.keep_share is not None or cfg.curate.threshold_on == "expected"
                  else "most likely")
            how = f" (on the {on} score" + (", with contextual calibration" if cfg.curate.calibrate else "") + ")"
        rule = (f"keep the best {cfg.curate.keep_share:.0%} of the scored pairs{how}" if cfg.curate.keep_share is not None
                else f"keep score >= {cfg.curate.threshold:g}{how}")
        lines += [
            f"Scoring: method `{cfg.curate.method}`, {rule}. "
            f"Parse rate: {curate.get('parse_rate')}. Scores: " + ", ".join(f"{k}: {v}" for k, v in dist.items()) + ".",
            "",
        ]
    grounding = stages.get("grounding")
    if grounding:
        g = cfg.grounding
        lines += [
            f"Grounding: {grounding['rejected_by_reason'].get('ungrounded', 0)} of {grounding['in']} rewrites "
            f"(rate {grounding['ungrounded_rate']}) were rejected as adding content their document does not support "
            f"(numbers absent from the document > {g.max_unsupported_numbers}, or a share of absent content words "
            f"> {g.max_unsupported_share}). Kept rows carry `unsupported_share`.",
            "",
        ]
    lines += [
        "## Rejected rows, by reason",
        "",
        _table([("stage", "reason", "rows"), *rejects]) if rejects else "_None._",
        "",
        "## Format",
        "",
        "Each row has `messages` (a user turn: the instruction"
        + (f" followed by the tag sentence \"{cfg.export.tag}\"" if cfg.export.tag else "")
        + "; an assistant turn: the response), `instruction`, `response`, `id` (the source document's id), "
        "`score`, `score_method`, `distilled` (the baseline answer) and `provenance` (models and prompt versions).",
        "",
        _sample(out),
        "",
        "## Load it",
        "",
        "```python",
        "from datasets import load_dataset",
        f'ds = load_dataset("json", data_files="{out.name}/sft.jsonl", split="train")',
        f'# or: load_dataset("parquet", data_files="{out.name}/sft.parquet", split="train")',
        "```",
        "",
        "## Caveats",
        "",
        "Responses come from web text and from a model's rewrite of it: they can carry the web's errors, and a "
        "rewrite can add claims its document does not support (the risk the paper names). Read `rejects.jsonl` "
        "and a sample of rows before training on them. `config.yaml` holds the full settings of this run, "
        "`stats.json` the counts, tokens and times per stage.",
        "",
    ]
    (out / "README.md").write_text("\n".join(lines), encoding="utf-8")

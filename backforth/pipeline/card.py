"""The dataset card (`README.md` in the run dir): what the data is, how it was made, how to load it.

The card is the Hub's: its YAML header lists the data files per config (`configs` with
`data_files`), so `load_dataset("<run dir>")` reads the pairs from the run dir as it is, and
`load_dataset("<you>/<repo>")` reads them once `backforth push` has uploaded it, with the same
snippet. Every sentence comes from the config actually used and the run's counts; an empty run gets
no snippet that would raise, but what to try instead. Stages add their own notes (`card_note`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

from ..version import __version__
from ..config import ModelConfig, RunConfig
from .advice import low_yield
from .stage import Stage
from .tokens import card_section

DATA_FILES = {"default": "sft.parquet", "distilled": "distilled.parquet"}  # config name -> file in the run dir


_RUBRIC = {  # what `curate.rubric` asks, in the card's words
    "humpback": "on Humpback's 5-point rubric (does the page read like an AI assistant's answer?)",
    "answer": "on a 5-point rubric of whether the page holds a useful answer to the instruction (backforth's "
              "default; the paper uses Humpback's, docs/curation.md)",
}


def _variant(cfg: RunConfig, stages: Sequence[Stage]) -> str:
    """The variant in words, with the keep rule actually configured."""
    curate = next((st for st in stages if hasattr(st, "keep_rule")), None)
    keep = curate.keep_rule() if curate is not None else ""
    return {
        "filter": f"filtering only ({keep}); the response is the cleaned web document",
        "rewrite": "rewriting only: every backtranslated pair is rewritten, no score filter",
        "filter+rewrite": f"filtering + rewriting ({keep}), then the kept pairs are rewritten",
    }[cfg.variant]


def _table(rows: list[tuple]) -> str:
    head, *body = rows
    lines = ["| " + " | ".join(map(str, head)) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(map(str, r)) + " |" for r in body]
    return "\n".join(lines)


def _sample(out: Path) -> str:
    path = out / "sft.jsonl"
    with open(path, encoding="utf-8") as fh:
        row = json.loads(fh.readline())
    show = {k: row[k] for k in ("id", "messages", "score")}
    text = json.dumps(show, indent=2, ensure_ascii=False)
    return "```json\n" + (text if len(text) < 3000 else text[:3000] + "\n...") + "\n```"


def configs_header(outputs: dict) -> list[str]:
    """The Hub's `configs` metadata: one config per non-empty data file."""
    counts = {"default": outputs.get("sft", 0), "distilled": outputs.get("distilled", 0)}
    lines = ["configs:"]
    for name, file in DATA_FILES.items():
        if counts[name]:
            lines += [f"- config_name: {name}", "  data_files:", "  - split: train", f"    path: {file}"]
    return lines if len(lines) > 1 else []


def advice(stats: dict, cfg: RunConfig) -> list[str]:
    """What to try when little was kept (under 10% of the documents): the run's own advice, as markdown."""
    lines = low_yield(stats, cfg)
    if not lines:
        return []
    head, *rest = lines
    return [head[0].upper() + head[1:], ""] + [f"- {line.strip()}" for line in rest]


def languages_line(stats: dict) -> list[str]:
    """The languages of the exported pairs (detected in prepare), most pairs first."""
    from ..language import name

    langs = stats.get("languages") or {}
    if not langs:
        return []
    return ["", "Languages of the pairs (detected on each document; the instruction and the response are checked "
            "to be in the document's language): " + ", ".join(f"{name(c)} (`{c}`): {n}" for c, n in langs.items()) + "."]


def write_card(cfg: RunConfig, out: Path, stats: dict, fingerprints: dict, stages: Sequence[Stage],
               model_of: Callable[[str], ModelConfig] | None = None) -> None:
    model_of = model_of or (lambda role: getattr(cfg.models, role))
    per_stage = stats["stages"]
    models = []
    for st in stages:
        if st.role and st.name in per_stage:
            role = st.identity_role or st.role
            m = model_of(role)
            adapter = getattr(m, "adapter", None)
            models.append((st.name, st.role, f"{m.engine}: {m.model}" + (f" + {adapter}" if adapter else ""),
                           st.sampling(), fingerprints[st.name]["fields"].get("prompt", "")))
    rejects = [(s, r, n) for s, st in per_stage.items() for r, n in st["rejected_by_reason"].items()]
    notes = [note for st in stages if st.name in per_stage and (note := st.card_note(per_stage[st.name]))]
    header = configs_header(stats["outputs"])
    empty = not stats["outputs"]["sft"]
    lines = [
        "---",
        "task_categories: [text-generation]",
        "tags: [synthetic, instruction-tuning, backtranslation, backforth]",
        *([f"language: [{', '.join(c for c in stats['languages'] if c != 'und')}]"]
          if any(c != "und" for c in stats.get("languages") or {}) else []),
        *header,
        "---",
        "",
        f"# Instruction data made by back-and-forth translation ({cfg.variant})",
        "",
        "Pairs of (instruction, response) made from web documents with **instruction back-and-forth "
        "translation** (Nguyen et al., 2024, arXiv:2408.04614): a backward model writes the instruction each "
        f"document answers, a scorer rates the pair {_RUBRIC[cfg.curate.rubric]}, and an aligned model rewrites "
        "the document into a response that stays close to it. "
        f"Variant: {_variant(cfg, stages)}. Made with backforth {__version__}.",
        "",
        "## Counts",
        "",
        _table([("step", "rows"), *stats["funnel"].items()]),
        "",
        f"`sft.jsonl` / `sft.parquet`: {stats['outputs']['sft']} pairs (the parquet file with every column, the "
        "jsonl file with the pair in chat format). "
        f"`distilled.parquet`: {stats['outputs']['distilled']} distilled answers to the same instructions (the baseline). "
        f"`rejects.jsonl`: {stats['outputs']['rejects']} rejected rows, each with its `stage` and `reason`.",
        "",
        *advice(stats, cfg),
        *languages_line(stats),
        "",
        "## Models, sampling and prompts",
        "",
        _table([("stage", "role", "model", "sampling", "prompt (name@version#hash)"), *models]) if models else "",
        "",
        *[line for note in notes for line in (note, "")],
        *card_section(stats),
        "## Rejected rows, by reason",
        "",
        _table([("stage", "reason", "rows"), *rejects]) if rejects else "_None._",
        "",
        "## Format",
        "",
        "Each row has `messages` (a user turn: the instruction"
        + (f" followed by the tag sentence \"{cfg.export.tag}\"" if cfg.export.tag else "")
        + "; an assistant turn: the response), `instruction`, `response`, `id` (the source document's id) and "
        "`score`; in `sft.parquet` also `instruction_source`, `score_method`, `score_expected`, `score_reason`, "
        "`distilled` (the baseline answer), `unsupported_share`, `url`, `source`, `title`, `language`, `source_id` and "
        "`section` (for a section of a long page) and `provenance` (models and prompt versions).",
        "",
        "_No pair was kept in this run: see `rejects.jsonl` for why._" if empty else _sample(out),
        "",
        "## Load it",
        "",
    ]
    if empty:
        lines += ["There is nothing to load yet: the advice above says what to change before running again.", ""]
    else:
        lines += [
            "```python",
            "from datasets import load_dataset",
            "",
            f'pairs = load_dataset("{out.resolve()}", split="train")  # this run dir, from anywhere',
            '# once uploaded with `backforth push`: load_dataset("<user>/<repo>", split="train")',
            *([f'distilled = load_dataset("{out.resolve()}", "distilled", split="train")']
              if stats["outputs"]["distilled"] else []),
            "```",
            "",
        ]
    lines += [
        "## Caveats",
        "",
        "Responses come from web text and from a model's rewrite of it: they can carry the web's errors, and a "
        "rewrite can add claims its document does not support (the risk the paper names). Read `rejects.jsonl` "
        "and a sample of rows before training on them. `config.yaml` holds the full settings of this run, "
        "`stats.json` the counts, tokens and times per stage.",
        "",
    ]
    (out / "README.md").write_text("\n".join(lines), encoding="utf-8")

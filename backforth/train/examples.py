"""Training examples for each direction, from seed pairs and a run's `sft.jsonl`.

Every example is a conversational prompt-completion pair (`prompt`: the system/user turns,
`completion`: the assistant turn). For such data trl computes the loss on the completion tokens
only (its `completion_only_loss` default), which is the papers' "loss on output tokens only".

The backward model is trained on the `backtranslate_trained` template it is later prompted with
(`backward_template`), so its examples are that template rendered with the response as document.

Examples longer than `max_length` are dropped and counted, never truncated: a truncated pair
teaches the model to stop mid-answer (or, for the backward model, to answer a cut-off document).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..config import SEED_TAG, WEB_TAG
from ..prompts import PromptTemplate, load_template, template_from_text
from .config import TrainConfig, TrainError


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

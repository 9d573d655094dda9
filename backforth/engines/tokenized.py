"""What the in-process engines share: the model's Hugging Face tokenizer, which counts tokens,
renders a request with the model's chat template, and spells the choices of choice scoring.

Used by the transformers and vllm engines and by the Ray driver's token counter, so that all three
count and render a prompt the same way.
"""

from __future__ import annotations

import os
from typing import Any

from .base import EngineError, Request


class Tokenized:
    """Mixin: the class sets `self.tokenizer` and `self._context` (tokens, or None when unknown)."""

    tokenizer: Any
    _context: int | None

    @property
    def context_length(self) -> int | None:
        return self._context

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def render(self, req: Request) -> str:
        """The prompt text: a raw prompt as is, or the messages through the chat template with the
        generation prompt, then `assistant_prefix`."""
        if req.prompt is not None:
            text = req.prompt
        else:
            text = self.tokenizer.apply_chat_template(req.messages, tokenize=False, add_generation_prompt=True)
        return text + (req.assistant_prefix or "")

    def _choice_ids(self, choice: str) -> list[int]:
        """Tokens that spell the choice on their own ("5", and " 5" where it is one token)."""
        cache = self.__dict__.setdefault("_choice_cache", {})
        if choice not in cache:
            ids = {toks[0] for variant in (choice, " " + choice)
                   if len(toks := self.tokenizer(variant, add_special_tokens=False)["input_ids"]) == 1}
            if not ids:
                raise EngineError(f"choice '{choice}' is not a single token for this tokenizer")
            cache[choice] = sorted(ids)
        return cache[choice]


def has_tokenizer(folder: str | os.PathLike | None) -> bool:
    """Whether `folder` holds its own tokenizer (an adapter saved with one, a model folder)."""
    return bool(folder) and any(os.path.isfile(os.path.join(folder, f)) for f in ("tokenizer.json", "tokenizer_config.json"))

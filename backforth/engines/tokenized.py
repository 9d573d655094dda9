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


class TokenCounter(Tokenized):
    """A model's tokenizer and context length without its weights: all that measuring documents needs
    (prepare), on a driver that loads no model. It counts as the transformers and vllm engines do
    (vLLM: `engine_kwargs.max_model_len` when set)."""

    def __init__(self, cfg) -> None:
        from transformers import AutoConfig, AutoTokenizer

        from .models import resolve_model_dir

        weights, folder_adapter = resolve_model_dir(cfg.model, cfg.gguf_file)
        adapter = cfg.adapter or folder_adapter
        self.name = cfg.model
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(adapter if has_tokenizer(adapter) else weights)
            max_len = getattr(AutoConfig.from_pretrained(weights), "max_position_embeddings", None)
        except OSError as err:
            raise EngineError(f"cannot load the tokenizer of model '{cfg.model}': {err}. Give a local folder, a "
                              ".gguf file, `embedded`, or a hub name that is cached (no downloads happen offline).") from None
        if cfg.engine == "vllm":
            max_len = cfg.engine_kwargs.get("max_model_len") or max_len
        limits = [x for x in (cfg.context_length, max_len) if x]
        self._context = min(limits) if cfg.engine == "vllm" and limits else (cfg.context_length or max_len)

    def close(self) -> None:
        pass


def token_counter(cfg):
    """What counts a role's tokens without loading its weights: a `TokenCounter` for in-process
    engines, the engine itself for a server (a client: cheap, and it estimates)."""
    from . import build_engine

    return TokenCounter(cfg) if cfg.engine in ("transformers", "vllm") else build_engine(cfg)

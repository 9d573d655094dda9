"""Every way to run a model, behind one interface (`base.Engine`). Heavy backends import lazily."""

from __future__ import annotations

from .base import Engine, EngineError, EngineUnavailable, Request, Result

__all__ = ["Engine", "EngineError", "EngineUnavailable", "Request", "Result", "build_engine"]


def build_engine(cfg) -> Engine:
    """An engine for a `config.ModelConfig`."""
    if cfg.engine == "transformers":
        from .transformers import TransformersEngine

        return TransformersEngine(model=cfg.model, adapter=cfg.adapter, gguf_file=cfg.gguf_file, dtype=cfg.dtype,
                                  batch_size=cfg.batch_size, max_batch_tokens=cfg.max_batch_tokens,
                                  device=cfg.device, seed=cfg.seed, context_length=cfg.context_length,
                                  prompt_lookup_tokens=cfg.prompt_lookup_tokens)
    if cfg.engine == "openai":
        from .openai import OpenAIEngine

        return OpenAIEngine(model=cfg.model, base_url=cfg.base_url, api_key_env=cfg.api_key_env,
                            max_in_flight=cfg.max_in_flight, timeout_s=cfg.timeout_s, max_retries=cfg.max_retries,
                            api=cfg.api, context_length=cfg.context_length,
                            adaptive=cfg.adaptive_in_flight, order_by_prefix=cfg.prefix_opener,
                            wait_for_server_s=cfg.wait_for_server_s)
    if cfg.engine == "vllm":
        from .vllm import VLLMEngine

        return VLLMEngine(model=cfg.model, adapter=cfg.adapter, gguf_file=cfg.gguf_file, dtype=cfg.dtype,
                          seed=cfg.seed, context_length=cfg.context_length, engine_kwargs=cfg.engine_kwargs)
    raise EngineError(f"unknown engine '{cfg.engine}'")

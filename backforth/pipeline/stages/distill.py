"""distill: the baseline. The distiller answers the same instruction without the document.

It never rejects a row (the rewritten pair stands on its own): a failed answer leaves
`distilled: null` and says why in `distill_reason` (`language_mismatch` for an answer in another
language than the document).
"""

from __future__ import annotations

from ...config import DistillConfig
from ...engines.base import Request, Result
from ...language import Policy
from ...prompts import load_template
from ..stage import Stage
from .parsing import degenerate_reason, is_refusal, strip_markers, strip_scaffolding


class Distill(Stage):
    name = "distill"
    role = "distiller"
    texts = {"distilled": "distilled"}
    provenance = ("distill_model", "distill_prompt")
    rejects: dict[str, str] = {}  # never rejects: a failed answer only leaves `distilled: null` and `distill_reason`

    @classmethod
    def enabled(cls, cfg) -> bool:
        return cfg.distill.enabled

    @classmethod
    def build(cls, cfg, ctx) -> Distill:
        return cls(cfg.distill, Policy.of(cfg))

    @classmethod
    def summarize(cls, counters: dict, summary: dict) -> None:
        summary["distill_failed_by_reason"] = {k.split(":", 1)[1]: v for k, v in counters.items() if k.startswith("failed:")}

    def __init__(self, cfg: DistillConfig, languages: Policy | None = None):
        self.cfg = cfg
        self.languages = languages or Policy()
        self.template = load_template("distill", self.languages.multilingual)

    def settings(self) -> dict:
        return {**self.cfg.model_dump(exclude={"enabled"}), "languages": self.languages.settings()}

    def requests(self, row: dict) -> list[Request]:
        r = self.template.render(instruction=row["instruction"], language=self.languages.prompt_language(row))
        return [Request(messages=r.messages, max_tokens=self.cfg.max_tokens, temperature=self.cfg.temperature,
                        top_p=self.cfg.top_p, key=row["id"])]

    def apply(self, row: dict, results: list[Result]) -> str | None:
        res = results[0]
        self.record_call(row, res)
        text = strip_markers(strip_scaffolding(res.text, row["instruction"])) if res.ok else ""
        reason = ("engine_error" if not res.ok else "truncated" if res.finish_reason == "length"
                  else "empty" if not text else "refusal" if is_refusal(text)
                  else degenerate_reason(text, row["instruction"]) or self.languages.check(text, row, "distilled_language"))
        row["distilled"] = None if reason else text
        row["distill_reason"] = reason
        if reason:
            self.count(f"failed:{reason}")
        return None

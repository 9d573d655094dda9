"""What a stage is: a small object that turns a row into requests and the results back into columns.

Stages own no I/O, batching or retries (the runner and engines do). `apply` adds the stage's columns
to the row in place and returns `None` to keep it or a reject reason (a short snake_case string).
Columns are the contract of shared/DESIGN.md: added, never removed or renamed.
"""

from __future__ import annotations

from typing import Any

from ..config import digest
from ..engines.base import Request, Result
from ..prompts import PromptTemplate


class Stage:
    name: str = ""
    role: str | None = None  # the model role whose engine serves this stage's requests
    template: PromptTemplate | None = None
    model_name: str = ""  # set by the runner from the engine serving `role`
    identity_role: str | None = None  # the configured model whose identity goes into the fingerprint (default: role)

    def accepts(self, row: dict) -> bool:
        """Whether a row of the previous stage's file comes to this stage (by default: the kept ones)."""
        return row.get("_status") == "done"

    def requests(self, row: dict) -> list[Request]:
        return []

    def apply(self, row: dict, results: list[Result]) -> str | None:
        raise NotImplementedError

    def setup(self, engine) -> None:
        """Called once before the stage's rows are processed, with the engine that will serve them."""

    def survey(self, rows) -> None:
        """Called once before processing, with every row the stage accepts (done ones included), for a
        stage that decides from the whole set (keeping a share). Most stages ignore it."""

    wants_survey: bool = False

    def observe(self, row: dict) -> None:
        """Called on resume for each row this stage already finished (to rebuild in-memory state)."""

    def release(self) -> None:
        """Called once the stage has finished its rows: drop in-memory state the later stages do not need."""

    def settings(self) -> dict[str, Any]:
        """The data-relevant settings of this stage, for the fingerprint."""
        return {}

    def fingerprint(self, model_identity: dict | None) -> dict[str, Any]:
        fields = dict(self.settings())
        if self.template is not None:
            fields["prompt"] = self.template.tag
        if model_identity is not None:
            fields["model"] = model_identity
        return fields

    # helpers shared by the model stages
    def record_call(self, row: dict, result: Result) -> None:
        s = self.name
        row[f"{s}_model"] = self.model_name
        row[f"{s}_finish_reason"] = result.finish_reason
        row[f"{s}_prompt_tokens"] = result.prompt_tokens
        row[f"{s}_completion_tokens"] = result.completion_tokens
        if self.template is not None:
            row[f"{s}_prompt"] = self.template.tag
        if result.error:
            row[f"{s}_error"] = result.error


def fingerprint_of(fields: dict) -> str:
    return digest(fields)

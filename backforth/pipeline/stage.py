"""What a stage is: the one source of truth for one step of the method.

A stage turns a row into requests (`requests`) and the results back into columns (`apply`, which
returns None to keep the row or a reject reason: a short snake_case string). It owns no I/O,
batching, retries or files: the runner and the engines do. Columns are the contract of
shared/DESIGN.md: added or updated, never removed or renamed.

Everything else the code needs to know about a stage is declared on its class, here and nowhere
else, and read through `registry`: its `name`, whether a config enables it (`enabled`), how it is
built from a config (`build`), the model `role` that serves it, its label in the funnel (`funnel`),
the columns that go into an exported pair's provenance (`provenance`), and how its counters are
summarised in stats.json (`summarize`). The runner counts kept and rejected rows by reason; a stage
counts anything else it wants to report with `count(key)`, as it runs, like datatrove's
`stat_update`: the counters of each chunk are stored with the chunk's results, so they survive a
crash and a resume adds to them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..engines.base import Request, Result
from ..prompts import PromptTemplate

if TYPE_CHECKING:
    from ..config import RunConfig

DONE, REJECTED = "done", "rejected"
LATER = "_later"  # what `apply` returns to leave a row unfinished for a later run (`prefilter` before its classifier)


@dataclass
class BuildContext:
    """What building a stage may need besides its config: the token counter of a model role (a
    tokenizer and context length, never the weights), made once per role."""

    token_counter: Callable[[str], object]
    run_dir: Any = None  # the run dir, for a stage that keeps a file there (the pre-filter's classifier)
    _counters: dict = field(default_factory=dict)

    def tokens(self, role: str):
        if role not in self._counters:
            self._counters[role] = self.token_counter(role)
        return self._counters[role]


class Stage:
    """One step of the method; subclass it for a step of your own.

    A stage has a `name` (its results are kept under `stages/<name>/`), and `apply(row, results)`
    that adds columns to the row and returns None to keep it or a reject reason (a short snake_case
    string). A stage that asks a model sets `role` (a model role of the run: `backward`, `scorer`,
    `rewriter`, `distiller`, `judge`) and returns its requests from `requests(row)`; `apply` then gets
    their results, in order. `settings()` returns what changes its output (a change makes the run
    redo it, and the stages after it); heavy or live state belongs in `setup(engine)`, which runs
    where the stage runs (a Ray worker too). `funnel` names the rows it keeps in the run's funnel,
    `count(key)` adds to its own counters, which `summarize` puts into stats.json.

        class LongEnough(backforth.Stage):
            name, funnel = "long_enough", "long_enough"

            def apply(self, row, results):
                return None if len(row["response"].split()) >= 20 else "short_response"

        backforth.run("demo", rows, out, after={"rewrite": LongEnough()})
    """

    name: str = ""
    role: str | None = None  # the model role whose engine serves this stage's requests (None: no model)
    identity_role: str | None = None  # the configured model whose identity goes into the fingerprint (default: role)
    funnel: str | None = None  # the funnel's word for the rows this stage keeps ("instructions", "kept", ...)
    provenance: tuple[str, ...] = ()  # columns copied into each exported pair's `provenance`
    texts: dict[str, str] = {}  # the texts it produces, kind -> column ("instructions" -> "instruction"), for analysis
    applies_keep_rule: bool = False  # it applies the run's keep rule (curation): its rejects move with the curate.* knobs
    rejects: dict[str, str] = {}  # reason `apply` can return -> "what it means. Try: what moves it" (docs/rejects.md)
    survey_first: bool = False  # sees every row it accepts before processing any (`survey`)
    failed_stay_unfinished: bool = False  # a failed request leaves its row for the next run instead of rejecting it
    trained_role: bool = False  # the model of `role` is trained from the run's own earlier results (Humpback's M1)
    learns_from_sample: bool = False  # waits for a model learned from a sample run through the keep rule (`prefilter`)
    continues: str | None = None  # the stage whose rejects it takes up again; a user's stage added after that one comes after this
    template: PromptTemplate | None = None
    model_name: str = ""  # set by the runner from the engine serving `role`

    # ---- declared facts, read through the registry ---------------------------------------------

    @classmethod
    def enabled(cls, cfg: RunConfig) -> bool:
        """Whether a run with this config has this stage."""
        return True

    @classmethod
    def role_for(cls, cfg: RunConfig) -> str | None:
        """The model role a stage built from `cfg` uses (default: `role`), known before it is built."""
        return cls.role

    @classmethod
    def build(cls, cfg: RunConfig, ctx: BuildContext) -> Stage:
        """The stage for this config; cheap (heavy state belongs in `setup`)."""
        raise NotImplementedError

    @classmethod
    def summarize(cls, counters: dict[str, int], summary: dict[str, Any]) -> None:
        """Add this stage's own figures to its stats.json entry (`summary` holds in/kept/rejected...)."""

    @classmethod
    def funnel_steps(cls, summary: dict[str, Any]) -> list[tuple[str, int]]:
        """(label, rows) for the run's funnel; by default the rows kept under `funnel`."""
        return [(cls.funnel, summary["kept"])] if cls.funnel else []

    def sampling(self) -> str:
        """How the stage samples, for the dataset card."""
        c = getattr(self, "cfg", None)
        if c is not None and hasattr(c, "temperature"):
            return f"T={c.temperature}, top_p={c.top_p}, max_tokens={c.max_tokens}"
        return ""

    def outcome(self, run, stages) -> dict[str, Any] | None:
        """Figures that need the later stages' results (`run`: the run's store, `stages`: the run's
        stages), added to this stage's stats.json entry at export; None for none."""
        return None

    def card_note(self, summary: dict[str, Any]) -> str | None:
        """A sentence for the dataset card about what this stage did, or None."""
        return None

    # ---- the work ------------------------------------------------------------------------------

    def accepts(self, status: str, reason: str | None) -> bool:
        """Whether a row of the previous stage comes to this stage (by default: the kept ones)."""
        return status == DONE

    def requests(self, row: dict) -> list[Request]:
        return []

    def apply(self, row: dict, results: list[Result]) -> str | None:
        raise NotImplementedError

    def setup(self, engine) -> None:
        """Called once before the stage's rows are processed (`engine` is None for a stage without a model)."""

    def survey(self, rows) -> None:
        """With `survey_first`: every row the stage accepts, done ones included, before processing."""

    def observe(self, row: dict) -> None:
        """Called on resume for each row this stage already kept (to rebuild in-memory state)."""

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

    # ---- counters ------------------------------------------------------------------------------

    @property
    def counters(self) -> Counter:
        if "_counters" not in self.__dict__:
            self._counters: Counter = Counter()
        return self._counters

    def count(self, key: str, n: int = 1) -> None:
        """Add `n` to one of this stage's counters (reported in stats.json through `summarize`)."""
        self.counters[key] += n

    def take_counters(self) -> dict[str, int]:
        """The counters since the last call, reset (the runner stores them with each chunk)."""
        out = dict(self.counters)
        self.counters.clear()
        return out

    # ---- helpers shared by the model stages ----------------------------------------------------

    def record_call(self, row: dict, result: Result, raw: str | None = None) -> bool:
        """Record a model call's provenance on the row (model, finish reason, tokens, prompt version,
        error; the raw text under `raw` when given). True when the call succeeded. (The runner counts
        every call's tokens for stats.json: `tokens.count_results`.)"""
        s = self.name
        if raw is not None:
            row[raw] = result.text
        row[f"{s}_model"] = self.model_name
        row[f"{s}_finish_reason"] = result.finish_reason
        row[f"{s}_prompt_tokens"] = result.prompt_tokens
        row[f"{s}_completion_tokens"] = result.completion_tokens
        if self.template is not None:
            row[f"{s}_prompt"] = self.template.tag
        if result.error:
            row[f"{s}_error"] = result.error
        return result.ok


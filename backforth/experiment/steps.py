"""The steps of an experiment: each writes its own outputs, with a fingerprint of its inputs and settings.

A step is done when `steps.json` holds its fingerprint and its outputs exist: it is then skipped.
A changed setting changes that step's fingerprint and, through the chain, every step that depends
on it; those are redone (their outputs removed first) and the log says so and why. A run-level
line shows the step, the elapsed time and an ETA from the steps of the same kind run so far (and how
many steps are of a kind not timed yet); at the end, where the
time went.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import digest

log = logging.getLogger(__name__)
STEPS_FILE = "steps.json"


@dataclass
class Step:
    name: str
    fields: dict[str, Any]  # what changes its result (settings, input identities)
    run: Callable[[], Any]
    outputs: Sequence[Path]  # removed before a redo; all must exist for the step to count as done
    after: Sequence[str] = ()  # steps whose results this one reads
    clean: Sequence[Path] = ()  # also removed before a redo: what the step resumes from (checkpoints, stores)
    fingerprint: str = ""


@dataclass
class StepLog:
    """Fingerprints, states and times of the steps, kept in `steps.json` (rewritten after each step)."""

    path: Path
    steps: dict[str, dict] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> StepLog:
        return cls(path, json.loads(path.read_text()) if path.is_file() else {})

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.steps, indent=2))
        tmp.replace(self.path)


def run_steps(steps: Sequence[Step], out: Path) -> dict[str, dict]:
    """Run the steps in order, skipping the done and unchanged ones; returns each step's record."""
    record = StepLog.load(out / STEPS_FILE)
    by_name = {s.name: s for s in steps}
    for step in steps:  # in order: a fingerprint chains those of the steps it reads
        step.fingerprint = digest({"fields": step.fields, "after": [by_name[a].fingerprint for a in step.after]})
    to_run = [s for s in steps if not _done(s, record.steps.get(s.name, {}))]
    t_start, timed = time.perf_counter(), {}
    for k, step in enumerate(steps, 1):
        old = record.steps.get(step.name, {})
        if step not in to_run:
            log.info(f"experiment: step {k} of {len(steps)} ({step.name}): done, unchanged")
            continue
        if old.get("fingerprint") and old.get("fingerprint") != step.fingerprint:
            why = sorted(key for key in set(old.get("fields", {})) | set(step.fields)
                         if old.get("fields", {}).get(key) != step.fields.get(key)) or ["an earlier step"]
            log.info(f"experiment: {step.name} changed ({', '.join(why)}): redoing it and the steps after it")
            # nothing of the last try may be resumed: a trainer's checkpoints or an answers store keyed by
            # question id would carry results made from other inputs into this one
            for p in [*step.outputs, *step.clean]:
                _remove(Path(p))
        # started, under this fingerprint: a stop midway resumes it (same inputs); a change redoes it
        record.steps[step.name] = {"fingerprint": step.fingerprint, "fields": _jsonable(step.fields), "status": "running"}
        record.save()
        eta = _eta(to_run[to_run.index(step):], timed)
        log.info(f"experiment: step {k} of {len(steps)} ({step.name}), {_clock(time.perf_counter() - t_start)} elapsed{eta}")
        t0 = time.perf_counter()
        result = step.run()
        seconds = time.perf_counter() - t0
        timed.setdefault(_kind(step), []).append(seconds)
        record.steps[step.name] = {"fingerprint": step.fingerprint, "fields": _jsonable(step.fields),
                                   "status": "done", "seconds": round(seconds, 1),
                                   **({"result": _jsonable(result)} if isinstance(result, dict) else {})}
        record.save()
    return record.steps


def _done(step: Step, old: dict) -> bool:
    return old.get("fingerprint") == step.fingerprint and old.get("status") == "done" and all(
        Path(p).exists() for p in step.outputs)


def _kind(step: Step) -> str:
    """Steps of one kind cost about the same: `train filter` and `train distill` are both `train`."""
    return step.name.split()[0]


def _eta(left: Sequence[Step], timed: dict[str, list[float]]) -> str:
    """The time the steps left will take, from the mean of the steps of their kind run so far; steps of
    a kind not run yet are counted, not guessed (a pipeline run says nothing of a fine-tune's cost)."""
    known = [sum(timed[_kind(s)]) / len(timed[_kind(s)]) for s in left if _kind(s) in timed]
    unknown = len(left) - len(known)
    if not known:
        return ""
    return f", ETA {_clock(sum(known))}" + (f" + {unknown} steps of kinds not timed yet" if unknown else "")


def time_table(record: dict[str, dict]) -> str:
    """Where the time went, step by step (markdown)."""
    total = sum(r.get("seconds", 0.0) for r in record.values()) or 1.0
    lines = ["| step | seconds | share |", "|---|---|---|"]
    for name, r in record.items():
        lines.append(f"| {name} | {r.get('seconds', 0.0):.0f} | {r.get('seconds', 0.0) / total:.0%} |")
    return "\n".join(lines) + "\n"


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m}m{s:02d}s" if m else f"{s}s"


def _remove(p: Path) -> None:
    if p.is_dir():
        shutil.rmtree(p)
    elif p.exists():
        p.unlink()
    run = p.with_name(p.name.split(".")[0] + ".run")  # an eval file's store, beside it
    if p.suffix and run.is_dir():
        shutil.rmtree(run)


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))

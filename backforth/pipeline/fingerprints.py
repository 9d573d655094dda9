"""A run dir's identity per stage: a hash of the settings that change its data, chained through the stages.

Each stage's fields are its data-relevant settings (`Stage.settings`), its prompt's name@version#hash
and its model's identity; its hash covers those and the hash of the stage before it, so a change
upstream makes every later stage stale. `fingerprints.json` keeps them; a run whose settings differ
from the ones a run dir was made with stops and names the changed fields, unless `--force` redoes
those stages (and the ones after them) in place.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import digest
from ..errors import UserError
from .stage import Stage

FILE = "fingerprints.json"
# The input identity of a run without a run config's input (answering an eval set, judging, tagging):
# the one their stores have always recorded, so that a store made before still resumes.
NO_INPUT = {"path": "", "split": "train", "text_field": "text", "id_field": "id", "instruction_field": "instruction"}


class RunConflict(UserError):
    """The run dir holds results made with different data-relevant settings."""


def stage_fingerprints(stages: list[Stage], model_of: Callable[[str], Any], identity: dict | None = None) -> dict[str, dict]:
    """Per stage: its data-relevant fields and a hash chained through the stages before it, from
    `identity` (what the input rows are). `model_of(role)` gives a role's model config."""
    out, upstream = {}, {"input": NO_INPUT if identity is None else identity, "version": 1}
    for st in stages:
        role = st.identity_role or st.role
        identity = model_of(role).identity() if role else None
        fields = st.fingerprint(identity)
        fp = digest({"upstream": upstream, "fields": fields})
        out[st.name] = {"hash": fp, "fields": fields}
        upstream = fp
    return out


def stale_stages(out: Path, current: dict[str, dict], force: bool) -> list[str]:
    """Stages whose stored results were made with other settings; raise RunConflict unless `force`."""
    path = out / FILE
    if not path.exists():
        return []
    stored = json.loads(path.read_text())
    stale = [name for name, fp in current.items() if name in stored and stored[name]["hash"] != fp["hash"]]
    if stale and not force:
        lines = [f"{out}: this run dir holds results made with other settings:"]
        for name in stale:
            old, new = stored[name]["fields"], current[name]["fields"]
            changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k)) or ["(an earlier stage)"]
            lines.append(f"  {name}: changed {', '.join(changed)}")
        lines.append("Use a new --out to keep both, or --force to redo these stages (and those after them) here.")
        raise RunConflict("\n".join(lines))
    return stale


def write(out: Path, fingerprints: dict[str, dict]) -> None:
    (out / FILE).write_text(json.dumps(fingerprints, indent=2))

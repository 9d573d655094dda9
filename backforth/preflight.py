"""Checks that take seconds, made before any long work (reading the corpus, loading a model, a stage).

`check(cfg, out)` fails with a `UserError` that names the file, field or URL when:

* the input is missing, or its first record lacks `input.text_field` (the message lists the fields
  it has); an input without any record is a warning (`Preflight.empty_input`), not an error;
* the run dir cannot be created or written (a file in its place, a read-only disk, no permission);
  the check makes the folder and a temporary file and removes what it made, so a failed check
  leaves nothing behind;
* a role served by an `openai` engine does not answer `GET {base_url}/models` within a few seconds
  (`ServerUnreachable`, exit code 3), or lists other models than the configured one;
* a local model folder, .gguf file or LoRA adapter named in the config does not exist (`embedded:*`
  and hub names are the engine's to resolve).

Only the roles of the stages that will run (up to `until`) are checked. `hub_reachable` lets the
commands that read the Hugging Face hub fail at once when it cannot be reached, instead of after
minutes of retries.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from .config import RunConfig
from .errors import UserError
from .io import probe_write

log = logging.getLogger(__name__)
TIMEOUT_ENV = "BACKFORTH_PREFLIGHT_TIMEOUT"
DEFAULT_TIMEOUT_S = 3.0


class ServerUnreachable(UserError):
    """A model server named in the config does not answer; start it (or fix base_url) and run again."""

    exit_code = 3


@dataclass
class Preflight:
    """What the checks found that is not an error."""

    empty_input: bool = False
    warnings: list[str] = field(default_factory=list)


def timeout_s() -> float:
    try:
        return float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S))
    except ValueError:
        return DEFAULT_TIMEOUT_S


def check(cfg: RunConfig, out: str | Path, *, until: str | None = None, servers: bool = True,
          model_paths: bool = True) -> Preflight:
    """Every check, in order: input, run dir, servers, model paths. `servers` and `model_paths` are off
    when the caller brings its own engines (tests, library use). What is not an error is logged as a warning."""
    result = Preflight()
    check_input(cfg, result)
    check_output(Path(out))
    roles = roles_used(cfg, until)
    if servers:
        check_servers(cfg, roles, result)
    if model_paths:
        check_model_paths(cfg, roles)
    for w in result.warnings:
        log.warning(f"warning: {w}")
    return result


# ---- input ---------------------------------------------------------------------------------------

def check_input(cfg: RunConfig, result: Preflight) -> None:
    """The input can be opened and its first record has the text field."""
    from .corpus import SUFFIXES, _records

    inp = cfg.input
    if inp.format == "hub" or inp.path and not Path(inp.path).expanduser().exists() \
            and not inp.path.endswith(SUFFIXES["auto"]) and not inp.path.startswith((".", "/", "~")):
        ensure_hub(f"input.path '{inp.path}': not a local file or folder, so a Hugging Face dataset")
    records = _records(inp)
    try:
        for where, rec, problem in records:
            if problem is not None or rec is None:
                continue  # a broken line is a reject of that row, not of the run
            if inp.text_field not in rec:
                fields = ", ".join(f"'{k}'" for k in rec) or "none"
                raise UserError(f"input.text_field '{inp.text_field}': the first record ({where}) has no such "
                                f"field; its fields are {fields}. Set input.text_field (e.g. --set "
                                f"input.text_field=NAME) to the one holding the document text.")
            return
        result.empty_input = True
        result.warnings.append(f"input {inp.path} holds no documents: the run will export nothing")
    finally:
        close = getattr(records, "close", None)
        if close is not None:
            close()


# ---- the run dir ---------------------------------------------------------------------------------

def check_output(out: Path) -> None:
    """`out` can be a run dir: a folder (made if missing) where a file can be written."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: a file is there, not a folder; name a new folder, or a run dir to resume")
    made: list[Path] = []
    p = out
    while not p.exists() and p.parent != p:
        made.append(p)
        p = p.parent
    if p.exists() and not p.is_dir():
        raise UserError(f"--out {out}: {p} is a file, so no folder can be made inside it; choose another --out")
    created: list[Path] = []
    try:
        for d in reversed(made):
            d.mkdir()
            created.append(d)
        probe_write(out)
    except OSError as err:
        raise UserError(f"--out {out}: cannot write there ({err.strerror or err}); choose a folder you can "
                        "write to, or fix its permissions") from None
    finally:
        for d in reversed(created):  # leave no empty run dir behind; the runner makes it again
            try:
                d.rmdir()
            except OSError:
                pass


# ---- models --------------------------------------------------------------------------------------

def roles_used(cfg: RunConfig, until: str | None = None) -> list[str]:
    """The model roles of the configured models that the run's stages (up to `until`) use, in order."""
    from .pipeline import registry

    roles: list[str] = []
    for cls in registry.enabled(cfg):
        role = cls.role_for(cfg)
        if role and hasattr(cfg.models, role) and role not in roles:
            roles.append(role)
        if cls.name == until:
            break
    return roles


def check_servers(cfg: RunConfig, roles: list[str], result: Preflight) -> None:
    """Each `openai` role's server answers `/models` and serves the configured model name."""
    listed: dict[tuple[str, str | None], list[str] | None] = {}
    for role in roles:
        m = getattr(cfg.models, role)
        if m.engine != "openai":
            continue
        key = (m.base_url.rstrip("/"), m.api_key_env)
        if key not in listed:
            listed[key] = served_models(role, m.base_url, m.api_key_env, result)
        served = listed[key]
        if served is not None and m.model not in served:
            names = ", ".join(served) or "no model"
            raise UserError(f"models.{role}.model: {key[0]} serves {names}, not {m.model}; set "
                            f"models.{role}.model to the served name (or start the server with {m.model})")


def served_models(role: str, base_url: str, api_key_env: str | None, result: Preflight) -> list[str] | None:
    """The model names `GET {base_url}/models` lists; None when the server does not say."""
    import httpx

    url = base_url.rstrip("/") + "/models"
    headers = {}
    if api_key_env:
        key = os.environ.get(api_key_env)
        if not key:
            raise UserError(f"models.{role}.api_key_env: environment variable {api_key_env} is not set or empty; "
                            "export the API key there")
        headers["Authorization"] = f"Bearer {key}"
    t = timeout_s()
    try:
        resp = httpx.get(url, headers=headers, timeout=t)
    except httpx.HTTPError as err:
        raise ServerUnreachable(
            f"models.{role}.base_url: cannot reach the model server at {base_url} ({type(err).__name__}: "
            f"{err or 'no answer'}; GET {url}, {t:g} s). Start the server or fix models.{role}.base_url, "
            "then run the same command again.") from None
    if resp.status_code in (401, 403):
        raise UserError(f"models.{role}: {url} refused the request (HTTP {resp.status_code}); check the API key "
                        f"in {api_key_env or 'models.' + role + '.api_key_env (none is set)'}")
    try:
        data = resp.json().get("data") if resp.status_code == 200 else None
        names = [str(d["id"]) for d in data] if isinstance(data, list) else None
    except (ValueError, AttributeError, KeyError, TypeError):
        names = None
    if names is None:
        result.warnings.append(f"models.{role}: {url} did not list its models (HTTP {resp.status_code}); "
                               "the model name is not checked")
    return names


def _looks_local(model: str) -> bool:
    """A model spec that can only be a local path (a hub name is `org/name` or `name`)."""
    if model.startswith((".", "/", "~")) or model.endswith(".gguf") or model.count("/") > 1:
        return True
    return "/" in model and Path(model.split("/")[0]).expanduser().is_dir()


def check_model_paths(cfg: RunConfig, roles: list[str]) -> None:
    """Local model folders, .gguf files and LoRA adapters named for these roles exist."""
    from .embedded import is_embedded

    for role in roles:
        m = getattr(cfg.models, role)
        if m.engine == "openai":
            continue
        p = Path(m.model).expanduser()
        if not is_embedded(m.model) and _looks_local(m.model) and not p.exists():
            raise UserError(f"models.{role}.model: {m.model}: no such file or folder (a local model folder, a "
                            ".gguf file, `embedded:<name>` or a hub name)")
        if m.gguf_file and p.is_dir() and not (p / m.gguf_file).is_file():
            raise UserError(f"models.{role}.gguf_file: {p / m.gguf_file}: no such file")
        if m.adapter and not Path(m.adapter).expanduser().exists():
            raise UserError(f"models.{role}.adapter: {m.adapter}: no such folder (a LoRA adapter folder, e.g. "
                            "made by `backforth train backward`)")


# ---- the Hugging Face hub ------------------------------------------------------------------------

def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def hub_reachable(timeout: float | None = None) -> bool:
    """Whether the hub answers at all (any HTTP status) within `timeout` seconds."""
    import httpx

    try:
        httpx.head(hub_endpoint(), timeout=timeout or timeout_s())
        return True
    except httpx.HTTPError:
        return False


def go_offline() -> None:
    """Make the Hugging Face libraries read their local cache only, without retrying the network."""
    import sys

    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    for name in ("huggingface_hub.constants", "datasets.config"):
        mod = sys.modules.get(name)
        if mod is not None:
            for attr in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
                if hasattr(mod, attr):
                    setattr(mod, attr, True)


def ensure_hub(what: str) -> None:
    """Fail at once, naming `what`, when the hub cannot be reached (unless HF_HUB_OFFLINE asks for the cache)."""
    if hub_offline() or hub_reachable():
        return
    raise UserError(f"{what}, and the Hugging Face hub ({hub_endpoint()}) cannot be reached from here. Check the "
                    "path, your network, or set HF_HUB_OFFLINE=1 to read a dataset already in the local cache.")

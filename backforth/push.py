"""`backforth push RUN_DIR REPO_ID`: publish a finished run's dataset to the Hugging Face Hub.

What goes up is the dataset and what explains it, nothing else: the card (`README.md`, with its
"Load it" snippet naming the repo instead of the run dir's path), `sft.parquet`, `distilled.parquet`
when the run has it, `stats.json`, `config.yaml`, and `rejects.jsonl` only when asked
(`--with-rejects`). Never `stages/` (the intermediate shards), nor anything else a user keeps in the
run dir (`analysis_work/`, a report, a trained model). All files go in one commit, so a repo never
holds half a run.

The token is huggingface_hub's own (`HF_TOKEN`, or the login saved by `hf auth login`); it is passed
to the client and never printed or written. Every mistake a user can cause (not a finished run, a run
with no pair, no token, a token without write access, no network) is a `PushError` naming the
culprit and what to do.
"""

from __future__ import annotations

import logging
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer

from .errors import UserError

log = logging.getLogger(__name__)

CARD, SFT, DISTILLED, REJECTS, STATS, CONFIG = (
    "README.md", "sft.parquet", "distilled.parquet", "rejects.jsonl", "stats.json", "config.yaml")
REQUIRED = (STATS, SFT, CARD)  # a finished run has all three (export writes them last)
LOGIN_HINT = "log in with `hf auth login` (a token with write access) or set HF_TOKEN"


class PushError(UserError):
    """A push that cannot be done as asked; the message says why and what to do."""


class NotARunError(PushError):
    """The folder is not a finished run dir."""


class NothingToPublishError(PushError):
    """The run kept no pair."""


class NotLoggedInError(PushError):
    """No token, or the Hub refused it."""


class HubUnreachableError(PushError):
    """The Hub could not be reached (network, proxy, offline mode)."""


# ---- what goes up -------------------------------------------------------------------------------

def check_run(run_dir: str | Path) -> dict:
    """stats.json of a finished, non-empty run dir; a `PushError` naming what is wrong otherwise."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise NotARunError(f"{run_dir}: no such run dir; give the --out folder of `backforth run` or `backforth demo`")
    missing = [name for name in REQUIRED if not (run_dir / name).is_file()]
    if missing:
        raise NotARunError(f"{run_dir}: not a finished run (no {', '.join(missing)}); run `backforth run` (or the "
                           "same command again, to resume) until it exports, then push")
    try:
        stats = json.loads((run_dir / STATS).read_text(encoding="utf-8"))
        n_pairs = int(stats["outputs"]["sft"])
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise NotARunError(f"{run_dir / STATS}: unreadable ({type(err).__name__}: {err}); run the same "
                           "`backforth run` command again to export the run anew") from None
    if n_pairs == 0:
        raise NothingToPublishError(
            f"{run_dir}: the run kept 0 pairs, so there is nothing to publish; its README.md and "
            "docs/rejects.md say why rows were rejected and what to change before running again")
    return stats


def files_to_push(run_dir: str | Path, with_rejects: bool = False) -> list[Path]:
    """The run dir's files that go to the Hub, card first; raises `PushError` if it is no finished run."""
    run_dir = Path(run_dir)
    check_run(run_dir)
    wanted = [CARD, SFT, DISTILLED, *([REJECTS] if with_rejects else []), STATS, CONFIG]
    return [run_dir / name for name in wanted if (run_dir / name).is_file()]


_LOAD_PATH = re.compile(r'load_dataset\(\s*"([^"]+)"')


def card_for_hub(run_dir: str | Path, repo_id: str, files: Sequence[str] | None = None) -> str:
    """The run's card as the repo shows it: `load_dataset("<repo_id>", ...)` instead of the run dir's path.

    The run dir's own README.md is read, never changed. `files`: the names pushed, listed at the end
    (so a reader knows that `sft.jsonl`, and `rejects.jsonl` unless pushed, stay in the run dir).
    """
    text = (Path(run_dir) / CARD).read_text(encoding="utf-8")
    local = next((p for p in _LOAD_PATH.findall(text) if not p.startswith("<")), None)  # "<user>/<repo>": the hint
    if local is not None:
        text = text.replace(f'"{local}"', json.dumps(repo_id))
    lines = []
    for line in text.split("\n"):
        if line.lstrip().startswith("#") and "backforth push" in line and "<user>/<repo>" in line:
            continue  # the hint on how to load it once uploaded: it is uploaded now
        if "load_dataset(" in line and "#" in line and "this run dir" in line.split("#", 1)[1]:
            line = line.split("#", 1)[0].rstrip()
        lines.append(line)
    text = "\n".join(lines)
    if files:
        names = ", ".join(f"`{name}`" for name in files)
        not_here = ["`sft.jsonl`"] + ([] if REJECTS in files else ["`rejects.jsonl`"])
        text = (text.rstrip("\n") + "\n\n## Files in this repository\n\n"
                f"{names}. The run's {' and '.join(not_here)} and its intermediate `stages/` were not uploaded.\n")
    return text


# ---- the upload ---------------------------------------------------------------------------------

def _token() -> str:
    import huggingface_hub

    try:
        token = huggingface_hub.get_token()
    except Exception as err:  # an OIDC exchange that failed (HF_OIDC_RESOURCE set) raises instead of None
        raise NotLoggedInError(f"no Hugging Face token ({type(err).__name__}); {LOGIN_HINT}") from None
    if not token:
        raise NotLoggedInError(f"not logged in to the Hugging Face Hub: {LOGIN_HINT}, then push again")
    return token


def _validate_repo_id(repo_id: str) -> None:
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise PushError(f"repo id '{repo_id}': {err}; give it as <user or org>/<name>") from None


def _hub_error(err: Exception, repo_id: str) -> PushError:
    """The `PushError` for what the client raised while talking to the Hub."""
    from huggingface_hub.errors import HfHubHTTPError

    if isinstance(err, HfHubHTTPError):
        status = err.response.status_code if getattr(err, "response", None) is not None else None
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        if status == 401:
            return NotLoggedInError(f"the Hub refused the token ({first}); {LOGIN_HINT}")
        if status == 403:
            return NotLoggedInError(f"{repo_id}: the token may not write there ({first}); use a namespace it owns "
                                    f"(your user name or an org you can write to), or {LOGIN_HINT}")
        return PushError(f"{repo_id}: the Hub answered {status or 'an error'} ({first}); check the repo id, "
                         "then run the same command again")
    return HubUnreachableError(f"cannot reach the Hugging Face Hub ({type(err).__name__}: {err}); check the network, "
                               "a proxy or HF_ENDPOINT (and that HF_HUB_OFFLINE is not set), then push again")


def _hub_errors() -> tuple[type[BaseException], ...]:
    """What the client raises when the Hub cannot be reached or answers an error."""
    from huggingface_hub.errors import HfHubHTTPError

    try:
        from huggingface_hub.errors import HTTPError  # the HTTP client's base error (httpx's, in huggingface_hub 1+)
    except ImportError:  # pragma: no cover - older huggingface_hub (requests' errors are OSErrors)
        HTTPError = OSError
    return (HfHubHTTPError, HTTPError, ConnectionError, TimeoutError)


def push(run_dir: str | Path, repo_id: str, private: bool = False, with_rejects: bool = False, *,
         api=None) -> str:
    """Create the dataset repo `repo_id` (or reuse it) and upload the run in one commit; returns its URL.

    `api`: an `HfApi` (default: one with huggingface_hub's own token). `private` applies when the
    repo is created; an existing repo keeps its visibility.
    """
    from huggingface_hub import CommitOperationAdd, HfApi

    run_dir = Path(run_dir)
    files = files_to_push(run_dir, with_rejects)
    _validate_repo_id(repo_id)
    if api is None:
        api = HfApi(token=_token())
    try:
        url = api.create_repo(repo_id, repo_type="dataset", private=True if private else None, exist_ok=True)
    except _hub_errors() as err:
        raise _hub_error(err, repo_id) from None
    found = getattr(url, "repo_id", None)
    full_id = found if isinstance(found, str) and found else repo_id  # "name" alone lands in the user's namespace
    card = card_for_hub(run_dir, full_id, [f.name for f in files])
    ops = [CommitOperationAdd(path_in_repo=CARD, path_or_fileobj=card.encode("utf-8"))]
    ops += [CommitOperationAdd(path_in_repo=f.name, path_or_fileobj=str(f)) for f in files if f.name != CARD]
    log.info(f"uploading {', '.join(f.name for f in files)} to the dataset repo {full_id}")
    try:
        api.create_commit(full_id, ops, repo_type="dataset", commit_message=f"Upload backforth run {run_dir.resolve().name}")
    except _hub_errors() as err:
        raise _hub_error(err, full_id) from None
    return str(url) if isinstance(url, str) and str(url).startswith("http") else f"https://huggingface.co/datasets/{full_id}"


# ---- the command --------------------------------------------------------------------------------

def push_command(
    run_dir: Annotated[Path, typer.Argument(help="A finished run dir of `backforth run` or `backforth demo`.")],
    repo_id: Annotated[str, typer.Argument(help="The dataset repo, <user or org>/<name> (created if missing).")],
    private: Annotated[bool, typer.Option("--private", help="Create the repo private (an existing repo keeps its visibility).")] = False,
    with_rejects: Annotated[bool, typer.Option("--with-rejects", help="Also upload rejects.jsonl (every rejected row, with its text).")] = False,
) -> None:
    """Upload a run's dataset (card, sft.parquet, distilled.parquet, stats.json, config.yaml) to the Hugging Face Hub."""
    url = push(run_dir, repo_id, private=private, with_rejects=with_rejects)
    typer.echo(f"pushed to {url}")

"""What the command line shows: the library's messages (handlers on the `backforth` logger), and
errors, turned into messages and exit codes in one place (`guarded`).

The library prints nothing itself: its modules log through children of `logging.getLogger("backforth")`
(a `NullHandler` keeps a library call silent until the program configures logging), and a stage's
progress is a bar where a person watches (a terminal, a notebook) and lines on the
`backforth.progress` logger elsewhere (`pipeline/progress.py`). The CLI attaches its handlers for the
length of one command (`attached`): messages as plain lines on stdout; warnings and progress lines
on stderr.

`guarded` runs every command: a `UserError` is its message and exit code, SIGTERM stops like Ctrl-C
(exit 143), a bug is "internal error" plus the log file holding its traceback (`--debug` shows it
here). docs/errors.md lists every message. `resumable` adds to a stopped run's message where its
finished work is saved.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import Terminated, UserError

ROOT = "backforth"
PROGRESS = "backforth.progress"


class _Echo(logging.Handler):
    """Plain lines through click, which finds the current stdout/stderr when it writes (so output
    captured by a test runner is captured)."""

    def __init__(self, err: bool):
        super().__init__()
        self.err = err
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        import click

        try:
            click.echo(self.format(record), err=self.err)
        except BrokenPipeError:
            raise
        except Exception:  # noqa: BLE001 - logging never stops a command
            self.handleError(record)


def _to_stderr(record: logging.LogRecord) -> bool:
    progress = record.name == PROGRESS or record.name.startswith(PROGRESS + ".")
    return progress or record.levelno >= logging.WARNING


@contextlib.contextmanager
def attached(level: int = logging.INFO) -> Iterator[None]:
    """The CLI's handlers on the `backforth` logger while a command runs, removed after it."""
    logger = logging.getLogger(ROOT)
    out, err = _Echo(err=False), _Echo(err=True)
    out.addFilter(lambda r: not _to_stderr(r))
    err.addFilter(_to_stderr)
    old_level = logger.level
    logger.addHandler(out)
    logger.addHandler(err)
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.removeHandler(out)
        logger.removeHandler(err)
        logger.setLevel(old_level)


# ---- errors: the one place where they become messages and exit codes ----------------------------

DEBUG_ENV = "BACKFORTH_DEBUG"
USER_ERRNOS = {"EACCES", "EPERM", "EROFS", "ENOSPC", "EDQUOT", "ENOTDIR", "EISDIR", "EEXIST", "ENOENT", "ENAMETOOLONG"}


def debug_from_env() -> bool:
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


state = {"debug": debug_from_env()}  # `--debug` sets it for the command


class Stopped(UserError):
    """A run stopped by Ctrl-C, SIGTERM or a model server that went away: its finished rows are saved,
    and the message says how to resume (`resumable`)."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


@contextlib.contextmanager
def resumable(where: Path, what: str = "Finished rows") -> Iterator[None]:
    """Around work that resumes: a stop becomes a `Stopped` that says where the saved work is."""
    from .engines import EngineUnavailable

    resume = f"{what} are saved in {where}; run the same command again to resume."
    try:
        yield
    except EngineUnavailable as err:
        raise Stopped(f"{err}\n{resume}", 3) from None
    except Terminated:  # SIGTERM, like Ctrl-C with its own exit code
        raise Stopped(f"\nStopped. {resume}", Terminated.exit_code) from None
    except KeyboardInterrupt:
        raise Stopped(f"\nStopped. {resume}", 130) from None


def error_log_path() -> Path:
    """Where an internal error's traceback is written: `$BACKFORTH_CACHE/last-error.log` (default
    `~/.cache/backforth/last-error.log`)."""
    from .embedded import cache_dir

    return cache_dir() / "last-error.log"


def _write_error_log() -> Path:
    import tempfile
    import time
    import traceback

    from .version import __version__

    text = (f"backforth {__version__}, {time.strftime('%Y-%m-%d %H:%M:%S')}\ncommand: {' '.join(sys.argv)}\n\n"
            + traceback.format_exc())
    for path in (error_log_path(), Path(tempfile.gettempdir()) / "backforth-last-error.log"):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            return path
        except OSError:
            continue
    return Path("(no writable place for the log)")


def _os_message(err: OSError) -> str | None:
    """An OSError a user can fix (a permission, a full disk, a path), as one line; None for others."""
    import errno

    from .pipeline.store import DISK_ERRNOS, disk_errno

    disk = disk_errno(err)
    where = err.filename or "a file"
    if disk in (errno.ENOSPC, errno.EDQUOT, errno.EIO):
        return (f"cannot write {where}: {DISK_ERRNOS[disk]}. Free space on that disk (or move the output to a bigger "
                "one), then run the same command again.")
    if err.filename and errno.errorcode.get(err.errno or 0) in USER_ERRNOS:
        return f"{err.filename}: {err.strerror or err}; check the path and its permissions"
    return None


_sigterm = {"received": False}


def _on_sigterm(signum, frame) -> None:
    _sigterm["received"] = True
    raise Terminated()


def _fail(message: str, code: int) -> None:
    import typer

    typer.secho(message, fg=typer.colors.RED, err=True)
    sys.exit(code)


def guarded(call) -> Any:
    """Run `call` (a command) so that a user's mistake is one red message and its exit code, SIGTERM
    stops like Ctrl-C (exit 143), and a bug says "internal error" and where its traceback went
    (shown here with --debug)."""
    _sigterm["received"], state["debug"] = False, debug_from_env()  # `--debug` sets it again
    old = None
    try:
        old = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread: leave SIGTERM alone
        pass
    try:
        return call()
    except SystemExit as exit_:
        if exit_.code == 130 and _sigterm["received"]:
            sys.exit(Terminated.exit_code)  # a command that handles Ctrl-C stopped on SIGTERM
        raise
    except UserError as err:
        _fail(str(err), err.exit_code)
    except BrokenPipeError:  # `backforth ... | head`: not an error (main() ends quietly)
        raise
    except OSError as err:
        message = _os_message(err)
        if message is None:
            return _internal_error(err)
        _fail(message, 2)
    except Exception as err:  # noqa: BLE001 - a bug: its traceback goes to the log (or here with --debug)
        return _internal_error(err)
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)


def _internal_error(err: Exception) -> None:
    if state["debug"]:
        raise err
    log = _write_error_log()
    _fail(f"internal error: {type(err).__name__}: {err}\nThis is a bug in backforth, not a mistake in what you "
          f"asked. The traceback is in {log}; run again with --debug (backforth --debug ...) to see it here, "
          "and please report it with that file.", 1)

"""What the command line shows of the library's messages: handlers on the `backforth` logger.

The library prints nothing itself: its modules log through children of `logging.getLogger("backforth")`
(a `NullHandler` keeps a library call silent until the program configures logging), and a stage's
progress is a bar where a person watches (a terminal, a notebook) and lines on the
`backforth.progress` logger elsewhere (`pipeline/progress.py`). The CLI attaches its handlers for the
length of one command (`attached`): messages as plain lines on stdout; warnings and progress lines
on stderr.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

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

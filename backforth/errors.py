"""The one base class of the mistakes a user can fix.

Every error a user can cause (a path, a permission, a config field, an input file, a server, a run
dir) is a `UserError` whose message names the file, field or URL and says what to do; the CLI turns
it into that message and exit code 2 in one place. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake the user can fix; the message says where and what to do."""

    exit_code = 2


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C's KeyboardInterrupt would be, so that a `kill` stops a run the same
    way: finished rows saved, the same "run the same command again" message, exit code 143."""

    exit_code = 143

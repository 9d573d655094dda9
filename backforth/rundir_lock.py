"""One run at a time per run dir: `hold(run_dir)` for as long as a run writes it.

Two runs writing one run dir would each send every row's model calls (the store keeps the data
whole, but the work and the cost are doubled) and interleave their shards and exports. So a run
takes `run.lock` in its run dir before it writes anything there, and keeps it to the end:

* an OS lock (`fcntl.flock`) on the file, which the kernel releases when the process ends however it
  ends (a crash, kill -9), so a lock left by a dead process on this host is never in the way;
* a JSON record in the same file: host, pid, start time and command, which the refusal names. While
  the run lives, a thread touches the file every `HEARTBEAT_S` seconds, so its mtime says when the
  holder was last seen alive.

A second run on the same dir is refused at once (`RunDirBusy`, exit code 2). A record whose holder is
gone is taken over with a note: on this host when its pid is no longer running; from another host
when its heartbeat is older than `STALE_AFTER_S` (`BACKFORTH_LOCK_STALE_S`), because `flock` does
not reach across hosts on every shared filesystem (NFS without a lock manager, some FUSE mounts),
and a pid means nothing on another host. A run that ends (done, a user's error, Ctrl-C) removes
the file.

Only the process that runs the stages holds it: on Ray, the driver. Workers write their shards
under the driver's lock and never take it; `backforth report` and `analyze` only read, and never
take it either.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import shlex
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from .errors import UserError
from .pipeline.progress import duration as _span

LOCK_NAME = "run.lock"
HEARTBEAT_S = 60.0
STALE_AFTER_S = 15 * 60.0  # a lock from another host not refreshed for this long is taken over
STALE_ENV = "BACKFORTH_LOCK_STALE_S"
log = logging.getLogger(__name__)


class RunDirBusy(UserError):
    """Another run holds the run dir."""


def stale_after_s() -> float:
    try:
        return float(os.environ.get(STALE_ENV, STALE_AFTER_S))
    except ValueError:
        return STALE_AFTER_S


_held: dict[tuple[str, int], dict] = {}  # (run dir, thread) -> record: what this process holds now


@contextlib.contextmanager
def hold(run_dir: str | Path) -> Iterator[dict]:
    """Hold `run_dir`'s lock (creating the folder) for the `with` block; yields this run's record.
    Re-entrant in one thread (`backforth.run` takes it before writing the rows it was given, and the
    workflow inside takes it again)."""
    key = (os.path.realpath(run_dir), threading.get_ident())
    if key in _held:
        yield _held[key]
        return
    lock = RunDirLock(Path(run_dir))
    lock.acquire()
    _held[key] = lock.record
    try:
        yield lock.record
    finally:
        _held.pop(key, None)
        lock.release()


def holder(run_dir: str | Path) -> dict | None:
    """The record of the run that holds (or left) `run_dir`'s lock, with `seen` (its last heartbeat);
    None when there is none."""
    try:
        fd = os.open(Path(run_dir) / LOCK_NAME, os.O_RDONLY)
    except OSError:
        return None
    try:
        return _record(fd)
    finally:
        os.close(fd)


class RunDirLock:
    def __init__(self, run_dir: Path):
        self.run_dir, self.path = run_dir, run_dir / LOCK_NAME
        self.fd: int | None = None
        self.made = False
        self.record: dict = {}
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def acquire(self) -> None:
        self.made = not self.run_dir.exists()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(10):  # the file can be removed (by a holder letting go) between our open and flock
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    left = _record(fd)
                    os.close(fd)
                    raise RunDirBusy(busy_message(self.run_dir, left)) from None
                if err.errno not in (errno.ENOLCK, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS):
                    os.close(fd)
                    raise
                # this filesystem has no flock: the record alone decides (below)
            if _same_file(fd, self.path):
                break
            os.close(fd)
        else:
            raise RunDirBusy(f"{self.run_dir}: could not take {self.path.name}: it keeps being replaced by "
                             "another run starting here; run the command again in a moment")
        left = _record(fd)
        if left:
            gone = why_stale(left)
            if gone is None:
                os.close(fd)
                raise RunDirBusy(busy_message(self.run_dir, left))
            log.warning(f"note: {self.run_dir}: taking over the lock of the run {_who(left)}, {gone}; "
                        "this run resumes from what that one saved")
        self.fd = fd
        self.record = {"host": socket.gethostname(), "pid": os.getpid(), "proc_start": _proc_start(os.getpid()),
                       "started": time.time(), "started_at": time.strftime("%Y-%m-%d %H:%M:%S %z"),
                       "command": _command()}
        data = (json.dumps(self.record) + "\n").encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        os.fsync(fd)
        self._beat = threading.Thread(target=self._heartbeat, name="backforth-run-lock", daemon=True)
        self._beat.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            with contextlib.suppress(OSError):
                os.utime(self.fd)

    def release(self) -> None:
        if self.fd is None:
            return
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=5)
        with contextlib.suppress(OSError):
            if _same_file(self.fd, self.path):  # unlink while still holding it: a waiter re-opens the new file
                self.path.unlink()
        os.close(self.fd)  # releases the flock
        self.fd = None
        if self.made:  # a run that stopped before writing anything leaves no empty run dir behind
            with contextlib.suppress(OSError):
                self.run_dir.rmdir()


def why_stale(record: dict) -> str | None:
    """Why a lock record left in a run dir no longer stands for a live run (None: it does)."""
    host, pid = record.get("host"), record.get("pid")
    if host == socket.gethostname() and isinstance(pid, int):
        if not _alive(pid):
            return "which is no longer running"
        start = record.get("proc_start")
        if start is not None and _proc_start(pid) not in (None, start):
            return f"which is no longer running (pid {pid} is now another process)"
        return None
    age = _age(record)
    if age > stale_after_s():
        return f"which has not been seen alive for {_span(age)} (a lock from another host is stale after {_span(stale_after_s())})"
    return None


def busy_message(run_dir: Path, record: dict | None) -> str:
    if not record:
        who = "another backforth run (its lock record is not written yet)"
        stop = "stop it"
    else:
        who = f"another backforth run: {_who(record)}"
        stop = f"stop it (kill {record.get('pid')} on {record.get('host')})"
    text = (f"{run_dir} is in use by {who}. Only one run at a time may write a run dir. Wait for that run "
            f"to finish, or {stop} and run this command again to resume; to run both at once, give this one "
            "another --out.")
    if record and record.get("host") != socket.gethostname():
        text += (f" A lock from another host that has not been refreshed for {_span(stale_after_s())} is taken over "
                 f"({STALE_ENV}); this one was refreshed {_span(_age(record))} ago.")
    return text


def _who(record: dict) -> str:
    started = record.get("started")
    ago = f", {_span(time.time() - started)} ago" if isinstance(started, (int, float)) else ""
    command = f": {record['command']}" if record.get("command") else ""
    return (f"pid {record.get('pid')} on host {record.get('host')} (started {record.get('started_at', '?')}{ago}"
            f"{command})")


def _record(fd: int) -> dict | None:
    """The JSON record in the lock file, plus `seen`: the file's mtime, the holder's last heartbeat."""
    chunks, offset = [], 0
    while chunk := os.pread(fd, 65536, offset):
        chunks.append(chunk)
        offset += len(chunk)
    try:
        data = json.loads(b"".join(chunks).decode("utf-8", "replace"))
    except ValueError:  # empty (a lock being taken right now) or not ours
        return None
    if not isinstance(data, dict):
        return None
    return {**data, "seen": os.fstat(fd).st_mtime}


def _age(record: dict) -> float:
    """Seconds since the holder was last seen alive (its heartbeat, else its start)."""
    seen = record.get("seen", record.get("started"))
    return time.time() - seen if isinstance(seen, (int, float)) else float("inf")


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _proc_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _command() -> str:
    argv = list(sys.argv)
    if argv:
        argv[0] = Path(argv[0]).name
    return shlex.join(argv)[:300]

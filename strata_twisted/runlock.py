"""
One server per data directory, and how the CLI tells whether one is running there.

The server holds an exclusive ``flock(2)`` on ``<data_dir>/server.lock`` from before it opens the
store (its recovery sweep deletes uncommitted body files, which is only safe when no other server
uses the directory) until it stops; the file says the holder's pid and start time.  The kernel
drops the lock with the process however it ends, ``kill -9`` included, so a held lock means a live
server, and what a dead one left in the file means nothing.  The lock goes with the open file
description, so it survives twistd's daemonizing fork.

The CLI asks by trying a shared lock without waiting and letting go at once.  A server that
starts at that very instant finds the lock taken: it tries again for up to
L{ACQUIRE_ATTEMPTS} x L{ACQUIRE_PAUSE} seconds before it gives up (only at startup, before the
reactor runs).  The file is never deleted: a server unlinking it while another opens it could let
two servers lock two different files of the same name.

This module does blocking file I/O: call it before the reactor runs (the server) or from the CLI,
never from the reactor thread.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from strata_twisted.errors import StrataError

LOCK_NAME: Final = "server.lock"
ACQUIRE_ATTEMPTS: Final = 20
ACQUIRE_PAUSE: Final = 0.05


class ServerRunning(StrataError):
    """Another server holds the data directory's lock."""


@dataclass(frozen=True)
class RunningServer:
    """The server holding a data directory's lock: its pid and start time, when it said them (a
    server that is still starting may not have yet)."""

    pid: int | None
    started_at: float | None

    def as_json(self) -> dict[str, object]:
        return {"running": True, "pid": self.pid, "started_at": self.started_at}


def _read(fd: int) -> RunningServer:
    try:
        raw = os.pread(fd, 4096, 0)
        data = json.loads(raw) if raw.strip() else {}
    except (OSError, ValueError):
        data = {}
    if not isinstance(data, dict):
        data = {}
    pid, started_at = data.get("pid"), data.get("started_at")
    return RunningServer(
        pid if isinstance(pid, int) else None,
        float(started_at) if isinstance(started_at, int | float) else None,
    )


class ServerLock:
    """The lock a running server holds on its data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock (creating the data directory, mode 0700, if need be); L{ServerRunning}
        naming the holder when another server has it, L{StrataError} when the file cannot be
        opened."""
        if self._fd is not None:
            return
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise StrataError(f"cannot open {self.path}: {e.strerror or e}") from None
        for attempt in range(ACQUIRE_ATTEMPTS):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if attempt + 1 < ACQUIRE_ATTEMPTS:
                    time.sleep(ACQUIRE_PAUSE)  # a CLI asking right now lets go at once
                continue
            self._fd = fd
            return
        holder = _read(fd)
        os.close(fd)
        who = f" (pid {holder.pid})" if holder.pid is not None else ""
        raise ServerRunning(
            f"another Strata server{who} is running on {self.path.parent}: stop it first, or "
            "give this one its own data_dir"
        )

    def record(self, pid: int, started_at: float) -> None:
        """Say who holds the lock, for ``strata status``."""
        assert self._fd is not None, "record() before acquire()"
        text = json.dumps({"pid": pid, "started_at": started_at}).encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, text, 0)

    def release(self) -> None:
        """Let go (emptying the file first, so it names no one).  Idempotent; never raises."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # closing the last descriptor drops the lock


def running_server(data_dir: Path) -> RunningServer | None:
    """The server running on ``data_dir``, or None when none is.  Takes no lock that a
    starting server would have to wait for longer than an instant."""
    path = data_dir / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None  # no server ever ran here
    except OSError as e:
        raise StrataError(f"cannot open {path}: {e.strerror or e}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)

"""One writer per run folder.

Two processes writing one run (`line label --resume RUN` twice) fork every unit's
checkpoint thread: the history shows one branch and the other's steps are lost. `RunLock`
keeps the writer alone: an exclusive OS lock (`fcntl.flock`) on `writer.lock` in the run
folder, whose content names the holder (pid, host, start time) for the error a second
writer gets. The OS drops the lock when its holder dies, even by kill -9; the name left in
the file is then reported as taken over. Readers (`line history`, `line report`) never take
it.

`acquire`, `release` and the `holder` record are all a caller sees: a lease row in a shared
database (runs kept in Postgres) can stand in for the file with the same interface.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from datetime import datetime
from pathlib import Path
from typing import IO

from tools.errors import RUNS_DIR, LineError, os_error

LOCK_FILE = "writer.lock"


class RunLock:
    """The writer's lock of one run folder; `note` says whether a stale lock was taken over."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.note = ""
        self._handle: IO[str] | None = None

    def acquire(self) -> "RunLock":
        """Become the run's one writer, or raise a LineError naming the process that is."""
        try:
            handle = self.path.open("a+", encoding="utf-8")
        except OSError as error:  # a folder in its place, a read-only run folder
            raise os_error(error, RUNS_DIR) from error
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _read(handle)
            handle.close()
            raise LineError(
                f"run {self.folder.name!r} is being written by another process ({_describe(holder)}).",
                "Wait for it to finish or stop it, then resume; line history and line report can read the run meanwhile.",
            ) from None
        previous = _read(handle)
        if previous:
            self.note = stale_note(self.folder.name, previous)
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(holder_record()))
        handle.flush()
        self._handle = handle
        return self

    def release(self) -> None:
        """Stop being the writer (the record is cleared, so nobody reports it as stale)."""
        if self._handle is None:
            return
        handle, self._handle = self._handle, None
        try:
            handle.seek(0)
            handle.truncate()
            handle.flush()
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def holder_record() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "since": datetime.now().isoformat(timespec="seconds")}


def stale_note(run_id: str, previous: dict) -> str:
    """What to tell the user when a lock left by a process that ended is taken over."""
    pid, host = previous.get("pid"), previous.get("host")
    if host == socket.gethostname() and not _alive(pid):
        return f"run {run_id!r}: took over the writer lock of pid {pid}, which is no longer running."
    return f"run {run_id!r}: took over the writer lock left by pid {pid} on host {host}."


def _read(handle: IO[str]) -> dict:
    handle.seek(0)
    try:
        record = json.loads(handle.read() or "{}")
    except json.JSONDecodeError:
        return {}
    return record if isinstance(record, dict) else {}


def _describe(holder: dict) -> str:
    if not holder:
        return "it is starting"
    return f"pid {holder.get('pid')} on host {holder.get('host')}, since {holder.get('since')}"


def _alive(pid: object) -> bool:
    try:
        os.kill(int(pid), 0)
    except (TypeError, ValueError, ProcessLookupError):
        return False
    except PermissionError:  # another user's process
        return True
    return True

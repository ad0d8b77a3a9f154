"""A throwaway PostgreSQL server for the tests: Debian's `postgresql` (`make setup` installs
it), initialised in a temporary folder and listening on a free loopback port. The server
refuses to run as root, so as root its programs run as the `postgres` user."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def server_programs() -> Path | None:
    """The folder of initdb and pg_ctl, None when PostgreSQL is not installed."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).parent if pg_ctl else None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def throwaway_postgres() -> Iterator[str]:
    """Start a server of its own; yields its URL (user `line`, no password, loopback only)."""
    programs = server_programs()
    if programs is None:
        raise RuntimeError("PostgreSQL is not installed: `make setup` installs Debian's postgresql "
                           "(or: apt-get install postgresql)")
    folder = Path(tempfile.mkdtemp(prefix="line-pg-"))
    as_root = os.geteuid() == 0
    if as_root:
        shutil.chown(folder, "postgres")

    def run(program: str, *argv: str) -> None:
        command = [str(programs / program), *argv]
        if as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    port = free_port()
    data = str(folder / "data")
    run("initdb", "-D", data, "-A", "trust", "-U", "line", "--no-sync")
    run("pg_ctl", "-D", data, "-l", str(folder / "log"), "-w", "start",
        "-o", f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off")
    try:
        yield f"postgresql://line@127.0.0.1:{port}/postgres"
    finally:
        run("pg_ctl", "-D", data, "-m", "immediate", "-w", "stop")
        shutil.rmtree(folder, ignore_errors=True)

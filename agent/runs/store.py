"""Where runs keep what several processes share (`[store] url`): LangGraph checkpoints, the
run's unit table, the layer's concept bank and the one writer's lock.

- `""` (the default): a run's folder holds its checkpoints and unit table
  (`checkpoints.sqlite`, WAL mode) and its writer lock (`writer.lock`, agent.runs.lock); the
  concept bank is a JSONL file per (model, layer, generator) under `cache_dir/banks/`
  (tools.bank). Processes on one machine share all of it.
- `sqlite:///PATH`: one SQLite file holds the checkpoints and unit tables of every run and
  the concept banks (a table); the writer lock stays in the run folder. One machine.
- `postgresql://USER@HOST:PORT/DB`: one database holds it all, for workers on several
  machines: checkpoints through LangGraph's PostgresSaver, the tables below, and the writer
  lock as a lease: a session-level advisory lock, which the server drops when the writer's
  connection ends (even by kill -9), with a row naming the holder for the error a second
  writer gets.

The bank table's key is the concept, so concurrent adds leave one entry and lose none. In a
database that several runs share, a unit's thread is `<run id>/unit-<N>` (a run id is
registered once); in a run's own file it is `unit-<N>`.

Heavy imports (LangGraph's savers, psycopg) happen on first use: `line score` needs only
the bank.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sqlite3
import threading
import time
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterator

from agent.config import Settings
from agent.runs.lock import RunLock, holder_record, stale_note
from tools.bank import ConceptBank, FileBank
from tools.errors import LineError, sqlite_error

CHECKPOINTS = "checkpoints.sqlite"
SQLITE_WAIT = 60  # seconds a SQLite writer waits for another process's transaction
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS line_bank (bank TEXT NOT NULL, concept TEXT NOT NULL, images TEXT NOT NULL, "
    "added DOUBLE PRECISION NOT NULL, PRIMARY KEY (bank, concept))",
    "CREATE TABLE IF NOT EXISTS line_units (run TEXT NOT NULL, unit INTEGER NOT NULL, status TEXT NOT NULL, "
    "worker TEXT NOT NULL, attempts INTEGER NOT NULL, updated DOUBLE PRECISION NOT NULL, PRIMARY KEY (run, unit))",
    "CREATE TABLE IF NOT EXISTS line_runs (run TEXT PRIMARY KEY, created DOUBLE PRECISION NOT NULL)",
    "CREATE TABLE IF NOT EXISTS line_writers (run TEXT PRIMARY KEY, holder TEXT NOT NULL)",
)
# A unit's status in the unit table: taken by a worker, finished, or waiting for a person.
RUNNING, DONE, WAITING = "running", "done", "waiting"


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


# --- databases ---------------------------------------------------------------------------------
class Database:
    """One connection (opened on first use, shared by the threads of a process) to a SQLite
    file or a Postgres server, with `?` placeholders for both; the tables above exist."""

    def __init__(self, target: str, postgres: bool):
        self.target, self.postgres = target, postgres
        self._connection = None
        self._lock = threading.Lock()

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self._lock, self.errors():
            cursor = self._connect().execute(self._dialect(sql), params)
            return cursor.fetchall() if cursor.description else []

    def execute(self, sql: str, params: tuple = ()) -> int:
        """Run a statement; the rows it changed."""
        with self._lock, self.errors():
            return self._connect().execute(self._dialect(sql), params).rowcount

    @contextmanager
    def errors(self) -> Iterator[None]:
        """SQLite's errors (a damaged or full file...) as one-line LineErrors naming the file."""
        try:
            yield
        except sqlite3.DatabaseError as error:
            if self.postgres:
                raise
            raise sqlite_error(error, self.target) from error

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    def _dialect(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.postgres else sql

    def _connect(self):
        if self._connection is None:
            if self.postgres:
                self._connection = connect_postgres(self.target)
            else:  # autocommit
                self._connection = sqlite3.connect(self.target, timeout=SQLITE_WAIT, check_same_thread=False,
                                                   isolation_level=None)
                self._connection.execute("PRAGMA journal_mode=WAL")
            weakref.finalize(self, self._connection.close)
            create_tables(self._connection, self.postgres)
        return self._connection


def connect_postgres(url: str, **options: Any):
    try:
        import psycopg
    except ImportError as error:
        raise missing_extra() from error

    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=10, **options)
    except psycopg.OperationalError as error:
        raise LineError(f"cannot connect to the store {url} ({' '.join(str(error).split())[:200]}).",
                        "Check [store] url and that the server runs; a password goes in PGPASSWORD or ~/.pgpass.") from error


def create_tables(connection, postgres: bool) -> None:
    with schema_lock(connection, postgres):
        for statement in SCHEMA:
            connection.execute(statement)


def missing_extra() -> LineError:
    return LineError("a postgresql:// store needs psycopg and langgraph-checkpoint-postgres, which are not installed.",
                     "Install the cluster extra: pip install -e '.[cluster]' (make setup does).")


@contextmanager
def schema_lock(connection, postgres: bool) -> Iterator[None]:
    """Creating tables from several processes at once: Postgres needs them in turn (SQLite
    serialises writers itself). The lock is polled, not waited for: LangGraph's migrations
    build indexes CONCURRENTLY, which wait for every open transaction, a waiter's included."""
    if not postgres:
        yield
        return
    from psycopg.rows import tuple_row

    key = advisory_key("line-agent schema")
    while not connection.cursor(row_factory=tuple_row).execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]:
        time.sleep(0.1)
    try:
        yield
    finally:
        connection.execute("SELECT pg_advisory_unlock(%s)", (key,))


def advisory_key(name: str) -> int:
    """A signed 64-bit key for Postgres' advisory locks."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


# --- the concept bank as a table -----------------------------------------------------------------
class TableBank:
    """A layer's concept bank as rows of `line_bank` (primary key: bank, concept)."""

    def __init__(self, database: Database, key: str):
        self.database, self.key = database, key

    def entries(self) -> list[tuple[str, list[dict]]]:
        rows = self.database.query("SELECT concept, images FROM line_bank WHERE bank = ? ORDER BY added, concept",
                                   (self.key,))
        found = []
        for concept, images in rows:
            try:
                found.append((concept, json.loads(images)))
            except json.JSONDecodeError:
                continue
        return found

    def add(self, concept: str, images: list[dict]) -> bool:
        return self.database.execute(
            "INSERT INTO line_bank (bank, concept, images, added) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (self.key, concept, json.dumps(images), time.time())) == 1


# --- a run's share of the store ------------------------------------------------------------------
@dataclass(frozen=True)
class UnitRecord:
    """A row of the unit table: where a unit stands, which worker took it last, how often."""

    status: str
    worker: str
    attempts: int


class RunStore:
    """What one run keeps in the store: its units' threads and checkpoints, its unit table,
    its writer lock."""

    def __init__(self, run_id: str, database: Database, thread_prefix: str,
                 checkpointer: Callable[[], Any], lock: Callable[[], Any], registry: bool):
        self.run_id, self.database, self.thread_prefix = run_id, database, thread_prefix
        self._checkpointer, self._lock, self._registry = checkpointer, lock, registry

    def exists(self) -> bool:
        """Whether the store holds anything to read: a SQLite file that is not there yet
        (or any more) is not created by reading it."""
        return self.database.postgres or Path(self.database.target).is_file()

    def thread_id(self, unit: int) -> str:
        return f"{self.thread_prefix}unit-{unit}"

    @contextmanager
    def checkpointer(self):
        """A LangGraph checkpointer for the run's threads, closed after the block."""
        with self.database.errors():
            saver, close = self._checkpointer()
            try:
                yield saver
            finally:
                close()

    def lock(self):
        """The run's writer lock (acquire, release, note), not yet acquired."""
        return self._lock()

    def register(self) -> None:
        """Claim the run id in a store that several runs share (a LineError if taken)."""
        if self._registry and not self.database.execute(
                "INSERT INTO line_runs (run, created) VALUES (?, ?) ON CONFLICT DO NOTHING", (self.run_id, time.time())):
            raise LineError(f"run {self.run_id!r} exists already in the store.",
                            f"Resume it with line label --resume {self.run_id}, or choose another --run-id.")

    def unregister(self) -> None:
        """Give the run id back (a run that never started: its folder is removed too)."""
        if self._registry:
            self.database.execute("DELETE FROM line_runs WHERE run = ?", (self.run_id,))

    def mark(self, unit: int, status: str, worker: str = "") -> None:
        """Record where `unit` stands; taking it (`running`) counts an attempt."""
        self.database.execute(
            "INSERT INTO line_units (run, unit, status, worker, attempts, updated) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (run, unit) DO UPDATE SET status = excluded.status, worker = excluded.worker, "
            "attempts = line_units.attempts + excluded.attempts, updated = excluded.updated",
            (self.run_id, unit, status, worker or worker_name(), int(status == RUNNING), time.time()))

    def create(self) -> None:
        """Make the store's tables (and its SQLite file) now, before several processes use it."""
        self.database.query("SELECT 1")

    def units(self) -> dict[int, UnitRecord]:
        if not self.exists():  # nothing recorded yet, and reading creates nothing
            return {}
        rows = self.database.query("SELECT unit, status, worker, attempts FROM line_units WHERE run = ?", (self.run_id,))
        return {unit: UnitRecord(status, worker, attempts) for unit, status, worker, attempts in rows}


# --- the stores ------------------------------------------------------------------------------------
class Store:
    """The store of `[store] url` (see the module's docstring)."""

    def __init__(self, url: str, cache_dir: str):
        self.url = url
        self.cache_root = Path(cache_dir).expanduser()
        self.postgres = url.startswith(("postgresql://", "postgres://"))
        self.path = Path(url.removeprefix("sqlite:///")).expanduser() if url.startswith("sqlite:///") else None
        self._shared: Database | None = None

    @property
    def shared(self) -> bool:
        """Whether one database holds every run's threads (and the banks)."""
        return bool(self.url)

    def bank(self, key: str) -> ConceptBank:
        if not self.shared:
            return FileBank(self.cache_root / "banks" / f"{key}.jsonl")
        return TableBank(self._database(), key)

    def run(self, run_id: str, folder: Path) -> RunStore:
        if not self.shared:
            path = folder / CHECKPOINTS
            return RunStore(run_id, Database(str(path), postgres=False), "", lambda: sqlite_saver(path),
                            lambda: RunLock(folder), registry=False)
        if self.postgres:
            return RunStore(run_id, self._database(), f"{run_id}/", lambda: postgres_saver(self.url),
                            lambda: PostgresLease(self.url, run_id), registry=True)
        return RunStore(run_id, self._database(), f"{run_id}/", lambda: sqlite_saver(self.path),
                        lambda: RunLock(folder), registry=True)

    def reachable_from_here(self, folder: Path) -> str:
        """Why a worker on this machine cannot use the run's store ("" when it can): SQLite
        files must be on a path the worker sees."""
        if self.postgres:
            return ""
        needed = self.path if self.path is not None else folder / "run.json"
        return "" if needed.exists() else f"{needed} is not on this machine ({socket.gethostname()})"

    def _database(self) -> Database:
        if self._shared is None:
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._shared = Database(self.url if self.postgres else str(self.path), self.postgres)
        return self._shared


@lru_cache(maxsize=None)
def _store(url: str, cache_dir: str) -> Store:
    return Store(url, cache_dir)


def open_store(settings: Settings) -> Store:
    """The store of `settings`, one per (url, cache folder) in a process: its connection is
    shared by the engine's bank and the runs."""
    return _store(settings.store.url, settings.cache_dir)


# --- checkpointers -----------------------------------------------------------------------------
def sqlite_saver(path: Path):
    from agent.loop.graph import sqlite_checkpointer

    saver = sqlite_checkpointer(path)
    return saver, saver.conn.close


_postgres_ready: set[str] = set()


def postgres_saver(url: str):
    try:
        from langgraph.checkpoint.postgres import PostgresSaver
        from psycopg.rows import dict_row
    except ImportError as error:
        raise missing_extra() from error

    from agent.loop.graph import serializer

    connection = connect_postgres(url, prepare_threshold=0, row_factory=dict_row)
    saver = PostgresSaver(connection, serde=serializer())
    if url not in _postgres_ready:  # LangGraph's tables and migrations, one process at a time
        with schema_lock(connection, postgres=True):
            saver.setup()
        _postgres_ready.add(url)
    return saver, connection.close


# --- the writer's lease in Postgres --------------------------------------------------------------
class PostgresLease:
    """The run's writer lock in Postgres (agent.runs.lock's interface): a session-level advisory
    lock held on a connection of its own for as long as the writer writes, and a row in
    `line_writers` naming the holder."""

    def __init__(self, url: str, run_id: str):
        self.url, self.run_id = url, run_id
        self.note = ""
        self._connection = None

    def acquire(self) -> "PostgresLease":
        connection = connect_postgres(self.url)
        create_tables(connection, postgres=True)
        key = advisory_key(f"line-agent writer {self.run_id}")
        held = connection.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]
        row = connection.execute("SELECT holder FROM line_writers WHERE run = %s", (self.run_id,)).fetchone()
        previous = json.loads(row[0]) if row else {}
        if not held:
            connection.close()
            who = (f"pid {previous.get('pid')} on host {previous.get('host')}, since {previous.get('since')}"
                   if previous else "it is starting")
            raise LineError(f"run {self.run_id!r} is being written by another process ({who}).",
                            "Wait for it to finish or stop it, then resume; line history and line report can read "
                            "the run meanwhile.")
        if previous:
            self.note = stale_note(self.run_id, previous)
        connection.execute("INSERT INTO line_writers (run, holder) VALUES (%s, %s) ON CONFLICT (run) DO UPDATE "
                           "SET holder = excluded.holder", (self.run_id, json.dumps(holder_record())))
        self._connection = connection
        return self

    def release(self) -> None:
        if self._connection is None:
            return
        connection, self._connection = self._connection, None
        try:
            connection.execute("DELETE FROM line_writers WHERE run = %s", (self.run_id,))
        finally:
            connection.close()  # ends the session: the advisory lock goes with it

    def __enter__(self) -> "PostgresLease":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

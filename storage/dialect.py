"""Everything that differs between database back-ends lives here.

SQLite is the default and the only back-end tested today; PostgreSQL is the
stated next step (SPEC §6). Keeping upserts, pragmas, time formatting and
locking in this one module is what keeps that step small: the rest of
``storage`` speaks SQLAlchemy Core only.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, Table, create_engine, event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.sql import Insert

from .errors import StorageError, StoreBusy

BUSY_TIMEOUT_MS = 10_000
WAL_SIZE_LIMIT = 4 * 1024 * 1024


def normalise_url(url_or_path: str) -> str:
    """Accept a SQLAlchemy URL or a plain file path (the CLI allows both)."""
    if "://" in url_or_path:
        return url_or_path
    return f"sqlite:///{Path(url_or_path).expanduser().absolute()}"


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL, or None for other back-ends and memory."""
    try:
        u = make_url(normalise_url(url))
    except ArgumentError as e:
        raise StorageError(f"storage.url: not a database URL or path: {url!r}") from e
    if not u.drivername.startswith("sqlite"):
        return None
    if not u.database or u.database == ":memory:":
        return None
    return Path(u.database)


def create(url: str, *, durable: bool = True, busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> Engine:
    """Create an engine with the project's SQLite settings applied on every connection.

    `durable` False trades the fsync of each commit for speed (replay stores): WAL
    still makes every transaction atomic, so a crash loses at most the newest
    commits, which a resumed replay simply redoes.
    """
    url = normalise_url(url)
    try:
        u = make_url(url)
    except ArgumentError as e:
        raise StorageError(f"storage.url: not a database URL or path: {url!r}") from e
    if not u.drivername.startswith("sqlite"):
        raise StorageError(
            f"storage.url: back-end {u.drivername!r} is not supported yet (SQLite only); "
            "PostgreSQL is planned"
        )
    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            # Owner-only from the first byte: the store may hold a user's history.
            fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
            os.close(fd)
    engine = create_engine(url, connect_args={"timeout": busy_timeout_ms / 1000})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
        # Let SQLAlchemy's begin event emit BEGIN itself (see _on_begin).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        cur.execute("PRAGMA foreign_keys = ON")
        if path is not None:
            mode = cur.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                cur.close()
                raise StorageError(f"store {path}: cannot switch to WAL (journal_mode={mode})")
            # FULL: a commit survives power loss, not just a process crash; the
            # daemon commits a handful of times a minute, so the fsync is cheap.
            cur.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
            # Once a checkpoint resets the WAL, shrink the file back: a reader that held
            # it open for hours must not leave a giant WAL behind.
            cur.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Writers take the write lock up front so two writers never deadlock on
        # a read->write upgrade; readers stay DEFERRED so they never block writers.
        if conn.get_execution_options().get("tickcast_read"):
            conn.exec_driver_sql("BEGIN")
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def insert_ignore(table: Table) -> Insert:
    """INSERT that silently skips rows whose unique key already exists."""
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table).on_conflict_do_nothing()


def insert_ignore_sql(table: Table, columns: list[str]) -> str:
    """Plain positional INSERT ... ON CONFLICT DO NOTHING, for the bulk-import hot path.

    Bulk candle import runs at hundreds of thousands of rows per second; building
    a parameter dict per row through Core costs a third of that, so the one hot
    statement is rendered once here and fed tuples.
    """
    cols = ", ".join(columns)
    marks = ", ".join("?" for _ in columns)
    return f"INSERT INTO {table.name} ({cols}) VALUES ({marks}) ON CONFLICT DO NOTHING"


def executemany(conn: Connection, sql: str, params: Iterable[tuple[Any, ...]]) -> int:
    """Run a statement over an iterable of parameter tuples on the driver's cursor.

    SQLAlchemy wants a list for executemany; the import hot path streams rows
    from columns instead of materialising a million tuples first. Driver errors
    surface as the driver's own exceptions (the Store translates them).
    """
    dbapi_conn = conn.connection.dbapi_connection
    assert dbapi_conn is not None
    cur = dbapi_conn.cursor()
    try:
        cur.executemany(sql, params)
        return max(cur.rowcount, 0)
    finally:
        cur.close()


def iso_time_sql(column: str) -> str:
    """SQL expression rendering an epoch-ms column as ISO-8601 UTC text (for views)."""
    return f"strftime('%Y-%m-%dT%H:%M:%SZ', {column} / 1000, 'unixepoch')"


def quick_check(conn: Connection) -> list[str]:
    """Problems found by the back-end's cheap integrity check; empty means fine."""
    rows = conn.exec_driver_sql("PRAGMA quick_check").fetchall()
    msgs = [str(r[0]) for r in rows]
    return [] if msgs == ["ok"] else msgs


def checkpoint_wal(engine: Engine) -> tuple[int, int, int]:
    """Fold the WAL back into the main file and truncate it; returns SQLite's (busy, WAL
    frames, frames checkpointed). On the bare DB-API connection: through SQLAlchemy the
    statement would run inside the BEGIN IMMEDIATE the begin event opens, where SQLite
    refuses to checkpoint ("database table is locked")."""
    raw = engine.raw_connection()
    try:
        row = raw.driver_connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    finally:
        raw.close()
    return (int(row[0]), int(row[1]), int(row[2])) if row else (0, 0, 0)


def backup(engine: Engine, dest: Path) -> None:
    """Online, consistent copy of a live store (SQLite backup API)."""
    path = sqlite_path(str(engine.url))
    if path is None:
        raise StorageError("backup: only SQLite files can be backed up this way")
    dest.parent.mkdir(parents=True, exist_ok=True)
    src = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000)
    try:
        fd = os.open(dest, os.O_CREAT | os.O_WRONLY, 0o600)
        os.close(fd)
        dst = sqlite3.connect(str(dest))
        try:
            src.backup(dst, pages=4096)
        finally:
            dst.close()
    finally:
        src.close()


@dataclass
class InstanceLock:
    """Held for the life of one writer process; the OS releases it if the process dies."""

    path: Path
    fd: int

    def release(self) -> None:
        try:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        finally:
            os.close(self.fd)


def lock_path(url: str) -> Path | None:
    path = sqlite_path(url)
    return None if path is None else path.with_name(path.name + ".lock")


def acquire_instance_lock(url: str) -> InstanceLock | None:
    """Take the one-writer lock of a store, or raise StoreBusy naming the holder.

    flock rather than a PID file: kill -9 releases it, so a crashed daemon never
    blocks its own restart.
    """
    lp = lock_path(url)
    if lp is None:
        return None
    lp.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lp, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise StoreBusy(
            f"another tickcast run (pid {holder}) already holds the store {sqlite_path(url)}"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return InstanceLock(lp, fd)


def lock_is_held(url: str) -> bool:
    """Whether some process holds the instance lock (for `tickcast status`)."""
    lp = lock_path(url)
    if lp is None or not lp.exists():
        return False
    fd = os.open(lp, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False

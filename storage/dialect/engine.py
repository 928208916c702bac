"""Engines with the project's settings applied on every connection, per back-end."""

from __future__ import annotations

import os
import sqlite3
from typing import Any

from sqlalchemy import (
    Engine,
    create_engine,
    event,
)
from sqlalchemy.engine import URL, Connection

from ..errors import StorageError, StoreConfigError
from .urls import (
    BUSY_TIMEOUT_MS,
    CONNECT_TIMEOUT_S,
    POSTGRESQL,
    WAL_SIZE_LIMIT,
    _parse,
    backend,
    name,
    normalise_url,
    sqlite_path,
)


def create(url: str, *, durable: bool = True, busy_timeout_ms: int = BUSY_TIMEOUT_MS,
           statement_timeout_ms: int | None = None, read_only: bool = False) -> Engine:
    """Create an engine with the project's settings applied on every connection.

    `durable` False trades the durability of the newest commits for speed (replay
    stores): SQLite syncs less (WAL keeps every transaction atomic), PostgreSQL commits
    with synchronous_commit off; a crash loses at most the newest commits, which a
    resumed replay simply redoes. `busy_timeout_ms` is SQLite's busy timeout and
    PostgreSQL's lock_timeout; `statement_timeout_ms` (PostgreSQL only; None leaves the
    server's setting) bounds every statement. `read_only`: for commands that only read
    (status, report): no file is created, no setting is changed, and every connection
    refuses writes (SQLite `query_only`, PostgreSQL `default_transaction_read_only`).
    """
    url = normalise_url(url)
    kind = backend(url)
    if kind == POSTGRESQL:
        return _create_postgresql(_parse(url), durable=durable, lock_timeout_ms=busy_timeout_ms,
                                  statement_timeout_ms=statement_timeout_ms, read_only=read_only)
    return _create_sqlite(url, durable=durable, busy_timeout_ms=busy_timeout_ms,
                          read_only=read_only)


def _create_sqlite(url: str, *, durable: bool, busy_timeout_ms: int,
                   read_only: bool = False) -> Engine:
    path = sqlite_path(url)
    if read_only:
        if path is not None and not path.exists():
            raise StorageError(f"store {path} does not exist")
    elif path is not None:
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
        if read_only:
            cur.execute("PRAGMA query_only = ON")
        elif path is not None:
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


def _pg_connect_args(u: URL, *, options: list[str], application_name: str) -> dict[str, Any]:
    """psycopg connect() keywords that add to, never replace, what the URL says."""
    own = u.query.get("options")
    given = [own] if isinstance(own, str) else list(own or ())
    args: dict[str, Any] = {"options": " ".join([*given, *options])}
    if "application_name" not in u.query:
        args["application_name"] = application_name
    if "connect_timeout" not in u.query:
        args["connect_timeout"] = CONNECT_TIMEOUT_S
    return args


def _create_postgresql(u: URL, *, durable: bool, lock_timeout_ms: int,
                       statement_timeout_ms: int | None, read_only: bool = False) -> Engine:
    try:
        import psycopg  # noqa: F401 - only to say clearly what is missing
    except ImportError as e:
        raise StoreConfigError("storage.url: PostgreSQL needs psycopg 3: "
                               "pip install 'psycopg[binary]'") from e
    # Server settings for every connection of the pool, sent with the start-up packet (no
    # extra round trip). Integers only: nothing from outside reaches this text.
    options = [f"-c lock_timeout={int(lock_timeout_ms)}"]
    if statement_timeout_ms is not None:
        options.append(f"-c statement_timeout={int(statement_timeout_ms)}")
    if not durable:
        options.append("-c synchronous_commit=off")
    if read_only:
        options.append("-c default_transaction_read_only=on")
    return create_engine(
        u, pool_pre_ping=True,
        connect_args=_pg_connect_args(u, options=options, application_name="tickcast"))


def read_options(bind: Connection | Engine) -> dict[str, Any]:
    """Execution options of a read transaction: one consistent snapshot, no writes.

    SQLite gets it from a deferred BEGIN (see _on_begin); PostgreSQL from REPEATABLE READ
    READ ONLY (its default READ COMMITTED would give every statement its own snapshot).
    """
    if name(bind) == POSTGRESQL:
        return {"tickcast_read": True, "isolation_level": "REPEATABLE READ",
                "postgresql_readonly": True}
    return {"tickcast_read": True}

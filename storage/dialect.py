"""Everything that differs between database back-ends lives here.

Two back-ends: SQLite (the default: one file, one writer process) and PostgreSQL through
psycopg 3 (several daemons, one per exchange and timeframe, on any number of hosts).
Upserts, the bulk-insert hot paths (executemany, COPY), pragmas, time formatting, error
translation, locking and backup are in this one module; the rest of ``storage`` speaks
SQLAlchemy Core only.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import socket
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Engine,
    Table,
    create_engine,
    event,
    func,
    literal,
    select,
)
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.sql import Insert

from .errors import StorageError, StoreBusy, StoreConfigError, StoreCorrupt, StoreUnavailable
from .results import InsertResult, as_row

SQLITE = "sqlite"
POSTGRESQL = "postgresql"

BUSY_TIMEOUT_MS = 10_000
WAL_SIZE_LIMIT = 4 * 1024 * 1024
# PostgreSQL: how long a connection attempt may take before it counts as "unavailable"
# (unless the URL sets connect_timeout itself).
CONNECT_TIMEOUT_S = 10
# Below this many rows a candle batch goes through executemany (one pipelined round
# trip); from it on, through COPY (a handful of round trips, then ~1M rows/s).
COPY_MIN_ROWS = 500

# -- URLs and engines ----------------------------------------------------------------------


def normalise_url(url_or_path: str) -> str:
    """Accept a SQLAlchemy URL or a plain file path (the CLI allows both).

    ``postgresql://`` and ``postgres://`` mean psycopg 3 (``postgresql+psycopg://``).
    """
    if "://" not in url_or_path:
        return f"sqlite:///{Path(url_or_path).expanduser().absolute()}"
    scheme, rest = url_or_path.split("://", 1)
    if scheme.lower() in ("postgresql", "postgres"):
        return f"postgresql+psycopg://{rest}"
    return url_or_path


def _parse(url: str) -> URL:
    try:
        return make_url(normalise_url(url))
    except ArgumentError as e:
        raise StoreConfigError(f"storage.url: not a database URL or path: {url!r}") from e


def backend(url: str) -> str:
    """'sqlite' or 'postgresql'; any other URL is a StoreConfigError."""
    u = _parse(url)
    if u.drivername.startswith("sqlite"):
        return SQLITE
    if u.drivername == "postgresql+psycopg":
        return POSTGRESQL
    if u.drivername.startswith("postgresql"):
        raise StoreConfigError(
            f"storage.url: driver {u.drivername!r} is not supported; tickcast speaks to "
            "PostgreSQL through psycopg 3: write postgresql://user@host/db")
    raise StoreConfigError(
        f"storage.url: back-end {u.drivername!r} is not supported "
        "(sqlite:///path or postgresql://user@host/db)")


def display_url(url: str) -> str:
    """The URL with any password masked, for logs and messages."""
    try:
        return _parse(url).render_as_string(hide_password=True)
    except StorageError:
        return "<invalid storage.url>"


def name(bind: Connection | Engine) -> str:
    """The back-end of a connection or engine: 'sqlite' or 'postgresql'."""
    return str(bind.dialect.name)


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL, or None for other back-ends and memory."""
    u = _parse(url)
    if not u.drivername.startswith("sqlite"):
        return None
    if not u.database or u.database == ":memory:":
        return None
    return Path(u.database)


def create(url: str, *, durable: bool = True, busy_timeout_ms: int = BUSY_TIMEOUT_MS,
           statement_timeout_ms: int | None = None) -> Engine:
    """Create an engine with the project's settings applied on every connection.

    `durable` False trades the durability of the newest commits for speed (replay
    stores): SQLite syncs less (WAL keeps every transaction atomic), PostgreSQL commits
    with synchronous_commit off; a crash loses at most the newest commits, which a
    resumed replay simply redoes. `busy_timeout_ms` is SQLite's busy timeout and
    PostgreSQL's lock_timeout; `statement_timeout_ms` (PostgreSQL only; None leaves the
    server's setting) bounds every statement.
    """
    url = normalise_url(url)
    kind = backend(url)
    if kind == POSTGRESQL:
        return _create_postgresql(_parse(url), durable=durable, lock_timeout_ms=busy_timeout_ms,
                                  statement_timeout_ms=statement_timeout_ms)
    return _create_sqlite(url, read_only=read_only, durable=durable,
                          busy_timeout_ms=busy_timeout_ms)


def _create_sqlite(url: str, *, read_only: bool, durable: bool, busy_timeout_ms: int) -> Engine:
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
                       statement_timeout_ms: int | None) -> Engine:
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


# -- statements -------------------------------------------------------------------------------


def insert_ignore(bind: Connection | Engine, table: Table) -> Insert:
    """INSERT that silently skips rows whose unique key already exists."""
    if name(bind) == POSTGRESQL:
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table).on_conflict_do_nothing()
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table).on_conflict_do_nothing()


def insert_ignore_rows(conn: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> int:
    """Insert dict rows, skipping those whose unique key exists; returns how many went in.

    SQLite's driver counts the rows of an executemany; psycopg's does not through
    SQLAlchemy (rowcount -1), so PostgreSQL counts the keys RETURNING gives back.
    """
    if not rows:
        return 0
    stmt = insert_ignore(conn, table)
    if name(conn) == POSTGRESQL:
        pk = list(table.primary_key.columns)[0]
        return len(conn.execute(stmt.returning(pk), list(rows)).all())
    return max(conn.execute(stmt, list(rows)).rowcount or 0, 0)


def insert_ignore_sql(bind: Connection | Engine, table: Table, columns: list[str]) -> str:
    """Plain positional INSERT ... ON CONFLICT DO NOTHING, for the bulk-import hot path,
    in the driver's own placeholder style (sqlite3 `?`, psycopg `%s`).

    Bulk candle import runs at hundreds of thousands of rows per second; building
    a parameter dict per row through Core costs a third of that, so the one hot
    statement is rendered once here and fed tuples.
    """
    for c in columns:
        if c not in table.c:
            raise ValueError(f"{table.name} has no column {c}")
    mark = "%s" if name(bind) == POSTGRESQL else "?"
    cols = ", ".join(columns)
    marks = ", ".join(mark for _ in columns)
    return f"INSERT INTO {table.name} ({cols}) VALUES ({marks}) ON CONFLICT DO NOTHING"


def executemany(conn: Connection, sql: str, params: Iterable[tuple[Any, ...]]) -> int:
    """Run a statement over an iterable of parameter tuples on the driver's cursor.

    SQLAlchemy wants a list for executemany; the import hot path streams rows
    from columns instead of materialising a million tuples first (psycopg 3 pipelines
    them). Driver errors surface as the driver's own exceptions (the Store translates
    them). Returns the rows affected.
    """
    dbapi_conn = conn.connection.dbapi_connection
    assert dbapi_conn is not None
    cur = dbapi_conn.cursor()
    try:
        cur.executemany(sql, params)
        return max(cur.rowcount, 0)
    finally:
        cur.close()


def opaque_to_planner(bind: Connection | Engine, column: ColumnElement[Any]) -> ColumnElement[Any]:
    """`column + 0` on SQLite, the bare column elsewhere.

    A bare column lets SQLite's planner pick the target_ts index for the scoring UPDATE
    and walk every forecast ever scored (O(store) per tick: 0.7 s at a million rows); the
    expression leaves it the partial index of unscored rows. PostgreSQL's planner uses
    statistics and needs no hint.
    """
    return column + 0 if name(bind) == SQLITE else column


def iso_time_sql(column: str, kind: str = SQLITE) -> str:
    """SQL expression rendering an epoch-ms column as ISO-8601 UTC text (for views).

    Both give 'YYYY-MM-DDTHH:MM:SSZ', seconds truncated (integer division by 1000).
    """
    if kind == POSTGRESQL:
        return (f"to_char(to_timestamp({column} / 1000) AT TIME ZONE 'UTC', "
                "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')")
    return f"strftime('%Y-%m-%dT%H:%M:%SZ', {column} / 1000, 'unixepoch')"


# A stable advisory-lock key (64-bit) for schema migrations: one migrating process at a time.
MIGRATION_LOCK_KEY = 0x7469636B63617374  # "tickcast"


def migration_lock(conn: Connection) -> None:
    """Serialise migrations between processes, inside the step's transaction.

    SQLite: BEGIN IMMEDIATE already holds the write lock. PostgreSQL (transactional DDL):
    a transaction-scoped advisory lock, released by the commit or rollback.
    """
    if name(conn) == POSTGRESQL:
        conn.execute(select(func.pg_advisory_xact_lock(literal(MIGRATION_LOCK_KEY, BigInteger))))


# -- checks, maintenance, size --------------------------------------------------------------


def quick_check(conn: Connection) -> list[str]:
    """Problems found by the back-end's cheap integrity check; empty means fine.

    PostgreSQL has no cheap whole-database check (it checksums pages as it reads them and
    reports damage as XX001/XX002 errors, which become StoreCorrupt): nothing to do.
    """
    if name(conn) != SQLITE:
        return []
    rows = conn.exec_driver_sql("PRAGMA quick_check").fetchall()
    msgs = [str(r[0]) for r in rows]
    return [] if msgs == ["ok"] else msgs


def checkpoint_wal(engine: Engine) -> tuple[int, int, int]:
    """Fold the WAL back into the main file and truncate it; returns SQLite's (busy, WAL
    frames, frames checkpointed). On the bare DB-API connection: through SQLAlchemy the
    statement would run inside the BEGIN IMMEDIATE the begin event opens, where SQLite
    refuses to checkpoint ("database table is locked"). PostgreSQL manages its own WAL:
    a no-op there, (0, 0, 0)."""
    if name(engine) != SQLITE:
        return (0, 0, 0)
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
        raise StorageError("backup: only SQLite files can be backed up this way; "
                           "back up a PostgreSQL store with pg_dump")
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


def store_size_bytes(engine: Engine) -> int | None:
    """Bytes the store takes where the back-end can tell: the SQLite file plus its WAL,
    pg_database_size() of the PostgreSQL database; None for an in-memory SQLite store."""
    if name(engine) == POSTGRESQL:
        with engine.connect() as conn:
            v = conn.execute(select(func.pg_database_size(func.current_database()))).scalar()
        return None if v is None else int(v)
    path = sqlite_path(str(engine.url))
    if path is None:
        return None
    total = 0
    for p in (path, path.with_name(path.name + "-wal")):
        try:
            total += p.stat().st_size
        except FileNotFoundError:
            pass
    return total


# -- the PostgreSQL bulk path: COPY ------------------------------------------------------------

# A session-private staging table; ON COMMIT DELETE ROWS empties it at every commit.
_COPY_PREPARE = (
    "CREATE TEMP TABLE IF NOT EXISTS tickcast_candles_in ("
    "seq BIGINT NOT NULL, ts BIGINT NOT NULL, open DOUBLE PRECISION NOT NULL, "
    "high DOUBLE PRECISION NOT NULL, low DOUBLE PRECISION NOT NULL, "
    "close DOUBLE PRECISION NOT NULL, volume DOUBLE PRECISION NOT NULL"
    ") ON COMMIT DELETE ROWS; "
    "DELETE FROM tickcast_candles_in"
)
_COPY_IN = ("COPY tickcast_candles_in (seq, ts, open, high, low, close, volume) "
            "FROM STDIN (FORMAT BINARY)")
_COPY_TYPES = ["int8", "int8", "float8", "float8", "float8", "float8", "float8"]
# New candles only, first arrival winning within the batch (DISTINCT ON ... seq), as with
# executemany; a plain INSERT of the rows an anti-join finds missing runs about twice as
# fast as ON CONFLICT's speculative insertion of every row.
_COPY_INSERT_NEW = (
    "INSERT INTO candles (exchange, symbol, timeframe, ts, open, high, low, close, volume) "
    "SELECT DISTINCT ON (t.ts) %(ex)s::varchar, %(sym)s::varchar, %(tf)s::varchar, "
    "t.ts, t.open, t.high, t.low, t.close, t.volume "
    "FROM tickcast_candles_in AS t "
    "WHERE NOT EXISTS (SELECT 1 FROM candles AS c WHERE c.exchange = %(ex)s::varchar "
    "AND c.symbol = %(sym)s::varchar AND c.timeframe = %(tf)s::varchar AND c.ts = t.ts) "
    "ORDER BY t.ts, t.seq"
)
# The same with ON CONFLICT DO NOTHING, for when another session inserted some of these
# candles between the anti-join and the insert (the plain INSERT then fails 23505 and is
# rolled back to its savepoint).
_COPY_INSERT_IGNORE = _COPY_INSERT_NEW.replace(
    "ORDER BY t.ts, t.seq", "ORDER BY t.ts, t.seq ON CONFLICT DO NOTHING")
# Rows whose stored candle differs. A row inserted by this batch is its own stored candle
# and can never differ, so this finds exactly the conflicts among the rows not inserted
# (including a second, different copy of a time inside the batch); it runs only when some
# rows were not inserted.
_COPY_CONFLICTS = (
    "SELECT c.ts, c.open, c.high, c.low, c.close, c.volume, "
    "t.ts, t.open, t.high, t.low, t.close, t.volume "
    "FROM tickcast_candles_in AS t JOIN candles AS c "
    "ON c.exchange = %(ex)s::varchar AND c.symbol = %(sym)s::varchar "
    "AND c.timeframe = %(tf)s::varchar AND c.ts = t.ts "
    "WHERE (c.open, c.high, c.low, c.close, c.volume) "
    "IS DISTINCT FROM (t.open, t.high, t.low, t.close, t.volume) "
    "ORDER BY t.seq"
)


def supports_copy(bind: Connection | Engine) -> bool:
    return name(bind) == POSTGRESQL


def copy_candles(conn: Connection, exchange: str, symbol: str, timeframe: str,
                 cols: Sequence[Sequence[Any]]) -> InsertResult:
    """Insert candles given as six columns (ts, open, high, low, close, volume) through
    binary COPY into a session-private temporary table, then one INSERT ... SELECT of the
    rows not stored yet (redone with ON CONFLICT DO NOTHING if another session raced us to
    some of them). Its row count is all that is needed: a row this batch inserted equals
    its stored candle, so comparing the batch with the stored candles finds exactly the
    conflicts among the others.

    Same contract and result as the executemany path of ``candles.insert_columns``:
    rows already stored are skipped; those that differ from the stored candle come back
    as (stored, incoming) conflicts, in input order; a CHECK violation aborts the
    batch (the caller's transaction rolls back). PostgreSQL only.
    """
    import psycopg

    n = len(cols[0])
    if n == 0:
        return InsertResult()
    raw = conn.connection.driver_connection
    assert raw is not None
    cur = raw.cursor()
    try:
        cur.execute(_COPY_PREPARE)
        with cur.copy(_COPY_IN) as cp:
            cp.set_types(_COPY_TYPES)
            write = cp.write_row
            for row in zip(count(), map(int, cols[0]), *cols[1:]):
                write(row)
        key = {"ex": exchange, "sym": symbol, "tf": timeframe}
        cur.execute("SAVEPOINT tickcast_copy")
        try:
            cur.execute(_COPY_INSERT_NEW, key)
        except psycopg.errors.UniqueViolation:
            cur.execute("ROLLBACK TO SAVEPOINT tickcast_copy")
            cur.execute(_COPY_INSERT_IGNORE, key)
        inserted = max(cur.rowcount, 0)
        cur.execute("RELEASE SAVEPOINT tickcast_copy")
        result = InsertResult(inserted=inserted)
        if inserted == n:
            return result
        cur.execute(_COPY_CONFLICTS, key)
        for r in cur.fetchall():
            result.conflicts.append((as_row(r[:6]), as_row(r[6:])))
        result.unchanged = n - inserted - len(result.conflicts)
        return result
    finally:
        cur.close()


# -- errors ------------------------------------------------------------------------------------

# SQLite primary result codes (sqlite_errorname carries the extended name, e.g.
# SQLITE_BUSY_SNAPSHOT, SQLITE_IOERR_WRITE).
_SQLITE_BUSY = ("SQLITE_BUSY", "SQLITE_LOCKED")
_SQLITE_WRITE = ("SQLITE_FULL", "SQLITE_IOERR")
_SQLITE_CORRUPT = ("SQLITE_CORRUPT", "SQLITE_NOTADB")

# PostgreSQL SQLSTATEs (Appendix A of its manual), by what the caller must do.
_PG_UNAVAILABLE = ("57P01", "57P02", "57P03", "53300", "53200")
_PG_BUSY = ("55P03", "57014", "40001", "40P01")
_PG_CONFIG = ("3D000", "42501")
_PG_CORRUPT = ("XX001", "XX002")
# libpq reports a refused start-up (bad login, unknown database) without a SQLSTATE: the
# server's FATAL message is the only thing it passes on. These are the English texts of
# those messages (and of libpq's own); anything else at connect time counts as
# "unavailable" (retry), the safe side: a config error taken for an outage only
# restarts, an outage taken for a config error would stop the service.
_PG_REFUSED_AT_CONNECT = (
    "authentication failed",
    "no pg_hba.conf entry",
    "does not exist",
    "permission denied",
    "no password supplied",
    "server does not support ssl",
    "invalid connection option",
    "invalid sslmode",
    "invalid port",
    "invalid integer value",
)


def translate_error(e: BaseException, what: str) -> StorageError:
    """Map a driver error (raw, or wrapped by SQLAlchemy) to the project's storage errors,
    by SQLite result code or PostgreSQL SQLSTATE rather than message text."""
    orig = getattr(e, "orig", None) or e
    msg = str(orig).strip()
    if isinstance(orig, sqlite3.Error):
        return _translate_sqlite(orig, msg, what)
    if type(orig).__module__.split(".")[0] == "psycopg":
        return _translate_pg(e, orig, msg, what)
    if isinstance(e, DBAPIError) and e.connection_invalidated:
        return StoreUnavailable(f"{what}: lost the connection to the database: {msg}")
    return StorageError(f"{what}: {msg}")


def _translate_sqlite(orig: sqlite3.Error, msg: str, what: str) -> StorageError:
    code = getattr(orig, "sqlite_errorname", None)
    if code is None:
        # Raised by the sqlite3 module itself (no result code): the message is all there is.
        low = msg.lower()
        code = ("SQLITE_BUSY" if "locked" in low or "busy" in low else
                "SQLITE_FULL" if "disk is full" in low or "disk i/o error" in low else
                "SQLITE_CORRUPT" if "malformed" in low or "not a database" in low else "")
    if code.startswith(_SQLITE_BUSY):
        return StoreBusy(f"{what}: store is locked by another process ({msg})")
    if code.startswith(_SQLITE_WRITE):
        return StorageError(f"{what}: cannot write the store: {msg}")
    if code.startswith(_SQLITE_CORRUPT):
        return StoreCorrupt(f"{what}: store file is damaged: {msg}")
    if code.startswith("SQLITE_CANTOPEN"):
        return StorageError(f"{what}: cannot open the store file: {msg}")
    return StorageError(f"{what}: {msg}")


def _translate_pg(e: BaseException, orig: BaseException, msg: str, what: str) -> StorageError:
    state = getattr(orig, "sqlstate", None) or ""
    first = msg.splitlines()[0] if msg else type(orig).__name__
    if state:
        if state == "53100":
            return StorageError(f"{what}: the database server is out of disk space: {first}")
        if state.startswith("08") or state in _PG_UNAVAILABLE:
            return StoreUnavailable(f"{what}: database server unavailable: {first}")
        if state in _PG_BUSY:
            return StoreBusy(f"{what}: store is locked or the statement timed out "
                             f"(SQLSTATE {state}): {first}")
        if state.startswith("28") or state in _PG_CONFIG:
            return StoreConfigError(f"{what}: the database refused this login or database "
                                    f"(SQLSTATE {state}): {first}")
        if state in _PG_CORRUPT:
            return StoreCorrupt(f"{what}: the database reports damaged data: {first}")
        return StorageError(f"{what}: {first} (SQLSTATE {state})")
    # No SQLSTATE: raised by libpq/psycopg on the client side.
    import psycopg

    if isinstance(orig, psycopg.OperationalError) or (
            isinstance(e, DBAPIError) and e.connection_invalidated):
        pgconn = getattr(orig, "pgconn", None)
        if getattr(pgconn, "needs_password", False):
            return StoreConfigError(f"{what}: the database wants a password and the URL has "
                                    f"none: {first}")
        low = msg.lower()
        if any(p in low for p in _PG_REFUSED_AT_CONNECT):
            return StoreConfigError(f"{what}: the database refused the connection: "
                                    f"{_one_line(msg)}")
        return StoreUnavailable(f"{what}: database server unavailable: {_one_line(msg)}")
    if isinstance(orig, psycopg.ProgrammingError) and "connection option" in msg.lower():
        return StoreConfigError(f"{what}: storage.url: {first}")
    return StorageError(f"{what}: {first}")


def _one_line(msg: str) -> str:
    return " ".join(part.strip() for part in msg.splitlines() if part.strip())


# -- locks ---------------------------------------------------------------------------------------


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
    """Take the one-writer lock of a SQLite store, or raise StoreBusy naming the holder.

    flock rather than a PID file: kill -9 releases it, so a crashed daemon never
    blocks its own restart. None for stores without a file (PostgreSQL: see
    acquire_writer_lock).
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
            f"another tickcast run (host {socket.gethostname()} pid {holder}) already holds "
            f"the store {sqlite_path(url)}"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return InstanceLock(lp, fd)


def lock_is_held(url: str) -> bool:
    """Whether some process holds the SQLite instance lock (for `tickcast status`)."""
    return _file_lock_holder(url) is not None


def _file_lock_holder(url: str) -> str | None:
    lp = lock_path(url)
    if lp is None or not lp.exists():
        return None
    fd = os.open(lp, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            return f"host {socket.gethostname()} pid {pid}"
    finally:
        os.close(fd)
    return None


def writer_lock_key(exchange: str, timeframe: str) -> int:
    """A stable signed 64-bit advisory-lock key for one (exchange, timeframe) writer."""
    digest = hashlib.blake2b(f"tickcast-writer\0{exchange}\0{timeframe}".encode(),
                             digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _key_halves(key: int) -> tuple[int, int]:
    """pg_locks shows a bigint advisory key as classid (high 32 bits) and objid (low)."""
    u = key & 0xFFFF_FFFF_FFFF_FFFF
    return u >> 32, u & 0xFFFF_FFFF


_APP_PREFIX = "tickcast-writer "
_PG_HOLDER = (
    "SELECT a.application_name, l.pid, a.client_addr::text "
    "FROM pg_locks AS l LEFT JOIN pg_stat_activity AS a ON a.pid = l.pid "
    "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
    "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
    "AND l.classid = %s::bigint::oid AND l.objid = %s::bigint::oid "
    "LIMIT 1"
)
_PG_HOLDS = (
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
    "AND objsubid = 1 AND pid = pg_backend_pid() "
    "AND classid = %s::bigint::oid AND objid = %s::bigint::oid"
)


def _holder_tag() -> str:
    """application_name of a lock connection: who holds it, readable from any host."""
    host = socket.gethostname().encode("ascii", "replace").decode()
    tag = f"{_APP_PREFIX}host {host} pid {os.getpid()}"
    if len(tag) > 63:  # NAMEDATALEN - 1: the server would cut it anyway; keep the pid
        tail = f" pid {os.getpid()}"
        tag = tag[:63 - len(tail)] + tail
    return tag


class WriterLock:
    """One writer per store (SQLite) or per exchange and timeframe (PostgreSQL).

    ``holder`` says who holds it ("host H pid P"). ``ensure()`` (call it every tick)
    re-takes a lock whose connection was lost, raising StoreBusy if another daemon took
    it meanwhile, StoreUnavailable while the server cannot be reached.
    """

    holder: str = ""

    def is_alive(self) -> bool:
        return True

    def reacquire(self) -> None:
        return None

    def ensure(self) -> None:
        if not self.is_alive():
            self.reacquire()

    def release(self) -> None:
        return None

    def __enter__(self) -> WriterLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class FileWriterLock(WriterLock):
    """SQLite: the flock lock file beside the store; the kernel drops it with the process."""

    def __init__(self, lock: InstanceLock | None) -> None:
        self.lock = lock
        self.holder = f"host {socket.gethostname()} pid {os.getpid()}"

    def is_alive(self) -> bool:
        return True  # a held flock cannot be lost while the fd is open

    def release(self) -> None:
        if self.lock is not None:
            lock, self.lock = self.lock, None
            lock.release()


class PgAdvisoryLock(WriterLock):
    """PostgreSQL: a session advisory lock on a dedicated connection outside the pool.

    The holder is recorded as that connection's application_name ("tickcast-writer host H
    pid P"), which pg_stat_activity shows to every role; the server drops the lock with
    the session (process killed, host gone once TCP keepalives give up, connection
    closed), so a crashed daemon never blocks its successor for long.
    """

    def __init__(self, url: str, exchange: str, timeframe: str) -> None:
        self.url = normalise_url(url)
        self.exchange = exchange
        self.timeframe = timeframe
        self.key = writer_lock_key(exchange, timeframe)
        self.holder = _holder_tag()[len(_APP_PREFIX):]
        self._conn: Any = None

    def acquire(self) -> None:
        conn = _pg_raw_connect(self.url, application_name=_holder_tag(), lock=True)
        try:
            got = conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()
            if not (got and got[0]):
                other = _pg_holder(conn, self.key)
                raise StoreBusy(
                    f"another tickcast run ({other or 'holder unknown'}) already holds "
                    f"{self.exchange} {self.timeframe} in the store {display_url(self.url)}")
        except BaseException as e:
            conn.close()
            if isinstance(e, StorageError):
                raise
            if type(e).__module__.split(".")[0] == "psycopg":
                raise translate_error(e, "taking the writer lock") from e
            raise
        self._conn = conn

    def is_alive(self) -> bool:
        conn = self._conn
        if conn is None or conn.closed:
            return False
        try:
            row = conn.execute(_PG_HOLDS, _key_halves(self.key)).fetchone()
        except Exception:  # noqa: BLE001 - any failure means: not held any more
            return False
        return bool(row and row[0])

    def reacquire(self) -> None:
        self._close()
        self.acquire()

    def release(self) -> None:
        conn = self._conn
        if conn is None:
            return
        try:
            if not conn.closed:
                conn.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
        except Exception:  # noqa: BLE001 - closing the session releases it anyway
            pass
        finally:
            self._close()

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001
                pass


def _pg_raw_connect(url: str, *, application_name: str, lock: bool = False) -> Any:
    """A psycopg connection outside any pool, from the same URL the engine uses."""
    import psycopg

    u = _parse(url)
    cargs, cparams = u.get_dialect()().create_connect_args(u)
    options = []
    if lock:
        # Let the server notice a vanished host (and free the lock) within about a minute.
        options = ["-c tcp_keepalives_idle=30", "-c tcp_keepalives_interval=10",
                   "-c tcp_keepalives_count=3", "-c statement_timeout=30000"]
        cparams.update(keepalives=1, keepalives_idle=30, keepalives_interval=10,
                       keepalives_count=3)
    extra = _pg_connect_args(u, options=options, application_name=application_name)
    extra["application_name"] = application_name
    cparams.update(extra)
    try:
        return psycopg.connect(*cargs, autocommit=True, **cparams)
    except psycopg.Error as e:
        raise translate_error(e, "connecting to the store") from e


def _pg_holder(conn: Any, key: int) -> str | None:
    row = conn.execute(_PG_HOLDER, _key_halves(key)).fetchone()
    if row is None:
        return None
    app, pid, addr = row
    if app and str(app).startswith(_APP_PREFIX):
        return str(app)[len(_APP_PREFIX):]
    where = f" from {addr}" if addr else ""
    return f"server backend pid {pid}{where}"


def acquire_writer_lock(url: str, exchange: str, timeframe: str) -> WriterLock:
    """The one-writer lock a `tickcast run` takes before touching the store.

    SQLite: the store's flock file (one writer process per store, whatever the exchange).
    PostgreSQL: an advisory lock per (exchange, timeframe), so one daemon per exchange and
    timeframe on any host. Raises StoreBusy naming the holder ("host H pid P").
    """
    if backend(url) == POSTGRESQL:
        lock = PgAdvisoryLock(url, exchange, timeframe)
        lock.acquire()
        return lock
    return FileWriterLock(acquire_instance_lock(url))


def writer_lock_holder(url: str, exchange: str, timeframe: str) -> str | None:
    """Who holds the writer lock ("host H pid P"), or None (for `tickcast status`)."""
    if backend(url) == POSTGRESQL:
        conn = _pg_raw_connect(url, application_name="tickcast-status")
        try:
            return _pg_holder(conn, writer_lock_key(exchange, timeframe))
        except Exception as e:
            if type(e).__module__.split(".")[0] == "psycopg":
                raise translate_error(e, "reading the writer lock") from e
            raise
        finally:
            conn.close()
    return _file_lock_holder(url)

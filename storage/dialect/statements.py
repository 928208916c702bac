"""Statements that differ between back-ends: upserts, the executemany hot path, time
formatting, planner hints, the migration lock, integrity checks, WAL, backup, size."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Sequence
from itertools import repeat
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Engine,
    Table,
    func,
    literal,
    select,
)
from sqlalchemy.engine import Connection
from sqlalchemy.sql import Insert

from ..errors import StorageError
from .clauses import quote, upsert_tail
from .pg_copy import copy_upsert
from .urls import BUSY_TIMEOUT_MS, POSTGRESQL, SQLITE, name, sqlite_path


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


# Rows per statement of SQLite's bulk insert: 3 + 6 x 160 = 963 parameters, under the 999
# that SQLite builds before 3.32 allow.
BULK_ROWS = 160


def bulk_insert_ignore_sql(table: Table, fixed: list[str], columns: list[str],
                           rows: int) -> str:
    """SQLite: one INSERT of `rows` rows that share the values of the `fixed` columns.

    ``INSERT INTO t (f1, f2, c1, c2) SELECT ?1, ?2, column1, column2 FROM (VALUES (?, ?),
    ...) WHERE true ON CONFLICT DO NOTHING``: the shared values are bound once (?1..?k),
    each row binds only its own columns, and one statement step stores `rows` rows. Twice
    the speed of executemany of one row per step (the ``WHERE true`` is how SQLite's
    grammar tells the upsert clause from a join). Built from code constants only.
    """
    for c in (*fixed, *columns):
        if c not in table.c:
            raise ValueError(f"{table.name} has no column {c}")
    head = ", ".join([*fixed, *columns])
    shared = ", ".join(f"?{i + 1}" for i in range(len(fixed)))
    picked = ", ".join(f"column{j + 1}" for j in range(len(columns)))
    one = "(" + ", ".join("?" for _ in columns) + ")"
    values = ", ".join(one for _ in range(rows))
    return (f"INSERT INTO {table.name} ({head}) SELECT {shared}, {picked} "
            f"FROM (VALUES {values}) WHERE true ON CONFLICT DO NOTHING")


def bulk_insert_ignore(conn: Connection, table: Table, fixed: dict[str, Any],
                       columns: list[str], flat: list[Any]) -> int:
    """SQLite: insert rows given flat in row-major order (`len(columns)` values a row) that
    share the `fixed` column values, skipping rows whose key exists; returns how many
    went in. BULK_ROWS rows a statement, the rest one row a statement."""
    width = len(columns)
    n = len(flat) // width
    names = list(fixed)
    shared = [fixed[k] for k in names]
    full, per = n // BULK_ROWS, BULK_ROWS * width
    inserted = 0
    if full:
        sql = bulk_insert_ignore_sql(table, names, columns, BULK_ROWS)
        inserted += executemany(conn, sql, (shared + flat[i * per:(i + 1) * per]
                                            for i in range(full)))
    rest = flat[full * per:]
    if rest:
        sql = bulk_insert_ignore_sql(table, names, columns, 1)
        inserted += executemany(conn, sql, (shared + rest[i:i + width]
                                            for i in range(0, len(rest), width)))
    return inserted


def insert_ignore_columns(conn: Connection, table: Table, fixed: dict[str, Any],
                          columns: list[str], cols: Sequence[Sequence[Any]]) -> int:
    """Insert rows given as columns (lists or numpy arrays) that share the `fixed` column
    values, skipping rows whose key exists; returns how many went in. SQLite: 160 rows a
    statement (`bulk_insert_ignore`); PostgreSQL: executemany, pipelined by psycopg."""
    import numpy as np  # only the bulk write paths need it: `status` stays light

    n = len(cols[0])
    if name(conn) == SQLITE:
        # Row-major Python values through an object array: int64 becomes int, float64 float.
        flat = np.empty((n, len(columns)), dtype=object)
        for j, c in enumerate(cols):
            flat[:, j] = c
        return bulk_insert_ignore(conn, table, fixed, columns, flat.ravel().tolist())
    sql = insert_ignore_sql(conn, table, [*fixed, *columns])
    values = [np.asarray(c).tolist() for c in cols]  # numpy scalars to Python numbers
    # repeat() is endless: the columns decide the length.
    return executemany(conn, sql, zip(*(repeat(v) for v in fixed.values()), *values,
                                      strict=False))


def executemany(conn: Connection, sql: str, params: Iterable[Sequence[Any]]) -> int:
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


def upsert_rows(conn: Connection, table: Table, rows: Sequence[Sequence[Any]]) -> int:
    """Insert rows holding every column of `table` (in its column order) or, where the
    primary key exists, update the columns that differ; returns the rows written. The copy
    path of `tickcast copy-store`: COPY through a temporary table on PostgreSQL
    (``pg_copy.copy_upsert``), executemany on SQLite."""
    if not rows:
        return 0
    if name(conn) == POSTGRESQL:
        return copy_upsert(conn, table, rows)
    cols = ", ".join(quote(conn, c.name) for c in table.c)
    marks = ", ".join("?" for _ in table.c)
    sql = (f"INSERT INTO {quote(conn, table.name)} ({cols}) VALUES ({marks}) "
           f"{upsert_tail(conn, table)}")
    return executemany(conn, sql, rows)


def reset_identity(conn: Connection, table: Table) -> None:
    """Move an id sequence past the ids stored (after rows were copied in with their ids):
    PostgreSQL's identity sequence restarts at max(id) + 1. SQLite needs nothing: a rowid
    table hands out max(rowid) + 1."""
    if name(conn) != POSTGRESQL or "id" not in table.c:
        return
    t = quote(conn, table.name)
    conn.exec_driver_sql(
        f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
        f"COALESCE((SELECT max(id) FROM {t}), 0) + 1, false)")


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

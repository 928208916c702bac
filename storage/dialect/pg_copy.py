"""PostgreSQL's COPY paths: candles (COPY into a temporary table, then one INSERT) and
copy-store's upserts (COPY into a temporary twin of the table, then one INSERT ... ON
CONFLICT). Named for PostgreSQL's COPY statement; copying one store into another is
`storage.copy_store`."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import count
from typing import Any

from sqlalchemy import (
    BigInteger,
    Engine,
    Float,
    Integer,
    LargeBinary,
    String,
    Table,
)
from sqlalchemy.engine import Connection

from ..results import InsertResult, as_row
from .clauses import quote, upsert_tail
from .urls import POSTGRESQL, name

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
# fast as ON CONFLICT's speculative insertion of every row. The stored side is bounded by
# the batch's time range: unbounded, the planner hashes the whole series for every batch
# (quadratic over a long import).
_COPY_INSERT_NEW = (
    "INSERT INTO candles (exchange, symbol, timeframe, ts, open, high, low, close, volume) "
    "SELECT DISTINCT ON (t.ts) %(ex)s::varchar, %(sym)s::varchar, %(tf)s::varchar, "
    "t.ts, t.open, t.high, t.low, t.close, t.volume "
    "FROM tickcast_candles_in AS t "
    "WHERE NOT EXISTS (SELECT 1 FROM candles AS c WHERE c.exchange = %(ex)s::varchar "
    "AND c.symbol = %(sym)s::varchar AND c.timeframe = %(tf)s::varchar AND c.ts = t.ts "
    "AND c.ts BETWEEN %(lo)s::bigint AND %(hi)s::bigint) "
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
    "AND c.ts BETWEEN %(lo)s::bigint AND %(hi)s::bigint "
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
        ts = list(map(int, cols[0]))
        lo, hi = min(ts), max(ts)
        with cur.copy(_COPY_IN) as cp:
            cp.set_types(_COPY_TYPES)
            write = cp.write_row
            for row in zip(count(), ts, *cols[1:]):
                write(row)
        key = {"ex": exchange, "sym": symbol, "tf": timeframe, "lo": lo, "hi": hi}
        # The DISTINCT ON sort of a large batch fits in memory instead of spilling to disk.
        cur.execute("SET LOCAL work_mem = '64MB'")
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


def _copy_type(col: Any) -> str:
    """The binary COPY type of a column, as psycopg names it."""
    t = col.type
    for kind, pg in ((BigInteger, "int8"), (Integer, "int4"), (Float, "float8"),
                     (LargeBinary, "bytea"), (String, "text")):
        if isinstance(t, kind):
            return pg
    raise TypeError(f"{col}: no COPY type for {t!r}")


def copy_upsert(conn: Connection, table: Table, rows: Sequence[Sequence[Any]]) -> int:
    """Rows holding every column of `table` (in its column order): binary COPY into a
    session-private temporary twin of the table, then one INSERT ... SELECT that inserts
    the new keys and updates the stored rows that differ (``clauses.upsert_tail``).
    Returns the rows written. PostgreSQL only."""
    raw = conn.connection.driver_connection
    assert raw is not None
    t = quote(conn, table.name)
    tmp = quote(conn, f"tickcast_copy_{table.name}")
    cols = ", ".join(quote(conn, c.name) for c in table.c)
    cur = raw.cursor()
    try:
        cur.execute(f"CREATE TEMP TABLE IF NOT EXISTS {tmp} (LIKE {t}) ON COMMIT DELETE ROWS")
        cur.execute(f"DELETE FROM {tmp}")
        with cur.copy(f"COPY {tmp} ({cols}) FROM STDIN (FORMAT BINARY)") as cp:
            cp.set_types([_copy_type(c) for c in table.c])
            for r in rows:
                cp.write_row(r)
        cur.execute(f"INSERT INTO {t} ({cols}) SELECT {cols} FROM {tmp} "
                    f"{upsert_tail(conn, table, 'EXCLUDED')}")
        return max(cur.rowcount, 0)
    finally:
        cur.close()

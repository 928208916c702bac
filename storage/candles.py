"""Candle rows: idempotent insert, newest candle, internal gaps, ranges.

A candle row here is the tuple ``(ts, open, high, low, close, volume)``;
validation happens before this module (the daemon's job), the CHECK constraints
are only a backstop.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from sqlalchemy import BigInteger, and_, bindparam, func, select, tuple_
from sqlalchemy.engine import Connection

from .dialect import (
    COPY_MIN_ROWS,
    copy_candles,
    insert_ignore_columns,
    insert_ignore_rows,
    supports_copy,
)
from .results import InsertResult, Row
from .schema import candles, empty_candles

__all__ = ["InsertResult", "Row"]  # the result types live in .results; re-exported here

_COLS = ["exchange", "symbol", "timeframe", "ts", "open", "high", "low", "close", "volume"]
_ROW_COLS = (candles.c.ts, candles.c.open, candles.c.high, candles.c.low, candles.c.close,
             candles.c.volume)


def _series(exchange: str, symbol: str, timeframe: str):  # type: ignore[no-untyped-def]
    return and_(
        candles.c.exchange == exchange,
        candles.c.symbol == symbol,
        candles.c.timeframe == timeframe,
    )


def _row(r: Sequence[float]) -> Row:
    return (int(r[0]), float(r[1]), float(r[2]), float(r[3]), float(r[4]), float(r[5]))


def insert(
    conn: Connection, exchange: str, symbol: str, timeframe: str, rows: Sequence[Row]
) -> InsertResult:
    """Insert rows, skipping those already stored; report stored-vs-incoming conflicts."""
    if not rows:
        return InsertResult()
    cols = [list(c) for c in zip(*rows, strict=True)]
    return insert_columns(conn, exchange, symbol, timeframe, cols)


def insert_columns(
    conn: Connection, exchange: str, symbol: str, timeframe: str, cols: Sequence[Sequence[Any]],
    *, method: Literal["auto", "executemany", "copy"] = "auto",
) -> InsertResult:
    """`insert` for data held as six columns (ts, open, high, low, close, volume).

    The bulk-import path (columns may be lists or numpy arrays): on SQLite, 160 rows a
    statement (`dialect.insert_ignore_columns`); on PostgreSQL a batch of COPY_MIN_ROWS
    rows or more goes through COPY (`dialect.copy_candles`), a smaller one through
    executemany; both give the same result (`method` forces one, for tests and
    benchmarks).
    """
    import numpy as np  # only the bulk write paths need it: `status` stays light

    n = len(cols[0])
    if n == 0:
        return InsertResult()
    if method == "copy" or (method == "auto" and n >= COPY_MIN_ROWS and supports_copy(conn)):
        return copy_candles(conn, exchange, symbol, timeframe, cols)
    inserted = insert_ignore_columns(conn, candles, {
        "exchange": exchange, "symbol": symbol, "timeframe": timeframe}, _COLS[3:], cols)
    result = InsertResult(inserted=inserted)
    if inserted == n:
        return result
    # Some rows were already there: find out whether they agree with what is stored. A row
    # this batch inserted is its own stored candle, so comparing the whole batch with what
    # is stored finds exactly the conflicts among the rows not inserted.
    ts = np.asarray(cols[0], dtype=np.int64)
    vals = np.column_stack([np.asarray(c, dtype=np.float64) for c in cols[1:]])
    q = (select(*_ROW_COLS)
         .where(_series(exchange, symbol, timeframe), candles.c.ts >= int(ts.min()),
                candles.c.ts <= int(ts.max()))
         .order_by(candles.c.ts))
    got = np.array([tuple(r) for r in conn.execute(q)], dtype=np.float64).reshape(-1, 6)
    s_ts, s_vals = got[:, 0].astype(np.int64), got[:, 1:]
    at = np.minimum(np.searchsorted(s_ts, ts), max(len(s_ts) - 1, 0))
    found = (s_ts[at] == ts) if len(s_ts) else np.zeros(n, dtype=bool)
    differ = found & np.any(s_vals[at] != vals, axis=1) if len(s_ts) else found
    for i in np.flatnonzero(differ).tolist():
        result.conflicts.append((_row(got[at[i]]), _row((ts[i], *vals[i]))))
    result.unchanged = n - inserted - len(result.conflicts)
    return result


def newest_ts(conn: Connection, exchange: str, symbol: str, timeframe: str,
              at_or_before: int | None = None) -> int | None:
    q = select(func.max(candles.c.ts)).where(_series(exchange, symbol, timeframe))
    if at_or_before is not None:
        q = q.where(candles.c.ts <= at_or_before)
    out = conn.execute(q).scalar()
    return None if out is None else int(out)


def oldest_ts(conn: Connection, exchange: str, symbol: str, timeframe: str) -> int | None:
    v = conn.execute(select(func.min(candles.c.ts)).where(_series(exchange, symbol, timeframe)))
    out = v.scalar()
    return None if out is None else int(out)


def count(
    conn: Connection,
    exchange: str,
    symbol: str,
    timeframe: str,
    start: int | None = None,
    end: int | None = None,
) -> int:
    q = select(func.count()).select_from(candles).where(_series(exchange, symbol, timeframe))
    if start is not None:
        q = q.where(candles.c.ts >= start)
    if end is not None:
        q = q.where(candles.c.ts < end)
    return int(conn.execute(q).scalar() or 0)


_KEY = (candles.c.exchange, candles.c.symbol, candles.c.timeframe, candles.c.ts)
_FIRST_SERIES = select(*_KEY[:3]).order_by(*_KEY).limit(1)
_NEXT_SERIES = (select(*_KEY[:3])
                .where(tuple_(*_KEY) > tuple_(bindparam("e"), bindparam("s"), bindparam("t"),
                                              bindparam("ts", type_=BigInteger)))
                .order_by(*_KEY).limit(1))
_TS_MAX = 2**63 - 1


def series(conn: Connection) -> list[tuple[str, str, str]]:
    """Every (exchange, symbol, timeframe) that has candles, in order.

    One primary-key seek per series (past the last candle of the one before), not a walk
    over every candle: a plain DISTINCT read the whole table (0.07 s a year of minutes,
    on every `status`)."""
    out: list[tuple[str, str, str]] = []
    row = conn.execute(_FIRST_SERIES).first()
    while row is not None:
        out.append((row[0], row[1], row[2]))
        row = conn.execute(_NEXT_SERIES, {"e": row[0], "s": row[1], "t": row[2],
                                          "ts": _TS_MAX}).first()
    return out


def range_rows(
    conn: Connection, exchange: str, symbol: str, timeframe: str, start: int, end: int
) -> list[Row]:
    """Stored candles with start <= ts < end, ascending."""
    q = (
        select(*_ROW_COLS)
        .where(_series(exchange, symbol, timeframe), candles.c.ts >= start, candles.c.ts < end)
        .order_by(candles.c.ts)
    )
    return [_row(r) for r in conn.execute(q)]


def mark_empty(
    conn: Connection, exchange: str, symbol: str, timeframe: str, ts: Sequence[int], now_ms: int
) -> int:
    """Remember candle times the exchange answered for without a candle."""
    if not ts:
        return 0
    return insert_ignore_rows(conn, empty_candles, [
        {"exchange": exchange, "symbol": symbol, "timeframe": timeframe, "ts": int(t),
         "checked_at": now_ms} for t in ts])


def empty_ts(
    conn: Connection, exchange: str, symbol: str, timeframe: str, start: int, end: int
) -> list[int]:
    """Known no-trade candle times with start <= ts < end, ascending."""
    q = (
        select(empty_candles.c.ts)
        .where(
            empty_candles.c.exchange == exchange,
            empty_candles.c.symbol == symbol,
            empty_candles.c.timeframe == timeframe,
            empty_candles.c.ts >= start,
            empty_candles.c.ts < end,
        )
        .order_by(empty_candles.c.ts)
    )
    return [int(r[0]) for r in conn.execute(q)]


# Built once: the history window reads these every tick, and building a Core statement
# costs more than running it on a small range.
_WINDOW_ROWS = (
    select(candles.c.symbol, *_ROW_COLS)
    .where(candles.c.exchange == bindparam("exchange"),
           candles.c.timeframe == bindparam("timeframe"),
           candles.c.symbol.in_(bindparam("symbols", expanding=True)),
           candles.c.ts >= bindparam("start"), candles.c.ts < bindparam("end"))
)
_WINDOW_EMPTY = (
    select(empty_candles.c.symbol, empty_candles.c.ts)
    .where(empty_candles.c.exchange == bindparam("exchange"),
           empty_candles.c.timeframe == bindparam("timeframe"),
           empty_candles.c.symbol.in_(bindparam("symbols", expanding=True)),
           empty_candles.c.ts >= bindparam("start"), empty_candles.c.ts < bindparam("end"))
)


def window_rows(conn: Connection, exchange: str, timeframe: str, symbols: Sequence[str],
                start: int, end: int) -> tuple[list[tuple[Any, ...]], list[tuple[str, int]]]:
    """Candles (symbol, ts, o, h, l, c, v) and known no-trade times (symbol, ts) of some
    symbols with start <= ts < end, in any order: what a history window is built from."""
    p = {"exchange": exchange, "timeframe": timeframe, "symbols": list(symbols),
         "start": start, "end": end}
    return ([tuple(r) for r in conn.execute(_WINDOW_ROWS, p)],
            [(r[0], int(r[1])) for r in conn.execute(_WINDOW_EMPTY, p)])


# The symbols are named so that the primary key (exchange, symbol, timeframe, ts) bounds the
# scan to the window: without them SQLite walks every candle of the exchange, a cost that grew
# with the store on every tick (2.5 ms at 43,000 candles; a year of minutes is 1,000,000).
_COUNTS = (select(candles.c.symbol, func.count())
           .where(candles.c.exchange == bindparam("exchange"),
                  candles.c.symbol.in_(bindparam("symbols", expanding=True)),
                  candles.c.timeframe == bindparam("timeframe"),
                  candles.c.ts >= bindparam("start"), candles.c.ts < bindparam("end"))
           .group_by(candles.c.symbol))
_EMPTY_COUNTS = (select(empty_candles.c.symbol, func.count())
                 .where(empty_candles.c.exchange == bindparam("exchange"),
                        empty_candles.c.symbol.in_(bindparam("symbols", expanding=True)),
                        empty_candles.c.timeframe == bindparam("timeframe"),
                        empty_candles.c.ts >= bindparam("start"),
                        empty_candles.c.ts < bindparam("end"))
                 .group_by(empty_candles.c.symbol))


def counts(conn: Connection, exchange: str, timeframe: str, symbols: Sequence[str],
           start: int, end: int) -> tuple[dict[str, int], dict[str, int]]:
    """(stored candles, known no-trade times) per symbol with start <= ts < end."""
    p = {"exchange": exchange, "timeframe": timeframe, "symbols": list(symbols),
         "start": start, "end": end}
    return ({sym: int(n) for sym, n in conn.execute(_COUNTS, p)},
            {sym: int(n) for sym, n in conn.execute(_EMPTY_COUNTS, p)})


def gaps(
    conn: Connection,
    exchange: str,
    symbol: str,
    timeframe: str,
    step_ms: int,
    start: int | None = None,
    end: int | None = None,
) -> list[tuple[int, int]]:
    """Internal holes as [first_missing_ts, next_present_ts) ranges.

    A candle time counts as present when a candle is stored or the exchange
    confirmed it has none (``empty_candles``); only the space between the first
    and the last present time in [start, end) is examined.
    """
    c_where = [
        candles.c.exchange == exchange,
        candles.c.symbol == symbol,
        candles.c.timeframe == timeframe,
    ]
    e_where = [
        empty_candles.c.exchange == exchange,
        empty_candles.c.symbol == symbol,
        empty_candles.c.timeframe == timeframe,
    ]
    if start is not None:
        c_where.append(candles.c.ts >= start)
        e_where.append(empty_candles.c.ts >= start)
    if end is not None:
        c_where.append(candles.c.ts < end)
        e_where.append(empty_candles.c.ts < end)
    present = (
        select(candles.c.ts.label("ts")).where(*c_where)
        .union(select(empty_candles.c.ts.label("ts")).where(*e_where))
        .subquery()
    )
    lagged = select(
        present.c.ts.label("ts"),
        func.lag(present.c.ts).over(order_by=present.c.ts).label("prev"),
    ).subquery()
    q = (
        select(lagged.c.prev, lagged.c.ts)
        .where(lagged.c.prev.is_not(None), lagged.c.ts - lagged.c.prev > step_ms)
        .order_by(lagged.c.ts)
    )
    return [(int(prev) + step_ms, int(ts)) for prev, ts in conn.execute(q)]

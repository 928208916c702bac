"""Read-only queries behind `tickcast report --plot`: the newest forecast per model and
symbol with the closes before it, and a recent stretch of forecasts against actuals."""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, desc, func, select
from sqlalchemy.engine import Connection

from .schema import candles, forecasts


def busiest_series(conn: Connection) -> tuple[str, str] | None:
    """The (exchange, timeframe) with the most forecasts: what a plot shows."""
    f = forecasts.c
    row = conn.execute(select(f.exchange, f.timeframe, func.count().label("n"))
                       .group_by(f.exchange, f.timeframe).order_by(desc("n")).limit(1)).first()
    return None if row is None else (row[0], row[1])


def newest_forecasts(conn: Connection, exchange: str, timeframe: str) -> list[dict[str, Any]]:
    """Every row of the newest issue time per model and symbol, ascending by horizon."""
    f = forecasts.c
    newest = (select(f.model, f.symbol, func.max(f.issued_ts).label("issued"))
              .where(f.exchange == exchange, f.timeframe == timeframe)
              .group_by(f.model, f.symbol).subquery())
    q = (select(f.model, f.symbol, f.issued_ts, f.target_ts, f.horizon, f.yhat, f.lower,
                f.upper)
         .join(newest, and_(newest.c.model == f.model, newest.c.symbol == f.symbol,
                            newest.c.issued == f.issued_ts))
         .where(f.exchange == exchange, f.timeframe == timeframe)
         .order_by(f.symbol, f.model, f.horizon))
    return [dict(r._mapping) for r in conn.execute(q)]


def closes(conn: Connection, exchange: str, symbol: str, timeframe: str, start: int,
           end: int) -> list[tuple[int, float]]:
    """(ts, close) of stored candles with start <= ts <= end, ascending."""
    c = candles.c
    q = (select(c.ts, c.close)
         .where(c.exchange == exchange, c.symbol == symbol, c.timeframe == timeframe,
                c.ts >= start, c.ts <= end)
         .order_by(c.ts))
    return [(int(t), float(v)) for t, v in conn.execute(q)]


def scored_stretch(conn: Connection, exchange: str, timeframe: str, horizon: int,
                   since: int) -> list[dict[str, Any]]:
    """Scored forecasts of one horizon issued since a time, by symbol, model, target time."""
    f = forecasts.c
    q = (select(f.model, f.symbol, f.target_ts, f.yhat, f.lower, f.upper, f.actual)
         .where(f.exchange == exchange, f.timeframe == timeframe, f.horizon == horizon,
                f.issued_ts >= since, f.actual.is_not(None))
         .order_by(f.symbol, f.model, f.target_ts))
    return [dict(r._mapping) for r in conn.execute(q)]


def newest_issue(conn: Connection) -> int | None:
    v = conn.execute(select(func.max(forecasts.c.issued_ts))).scalar()
    return None if v is None else int(v)

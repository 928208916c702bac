"""Read-only queries behind `tickcast report --plot`: the newest forecast per model and
symbol with the closes before it, and a recent stretch of forecasts against actuals."""

from __future__ import annotations

from typing import Any

from sqlalchemy import desc, func, select
from sqlalchemy.engine import Connection

from .schema import accuracy_daily, candles, forecasts


def busiest_series(conn: Connection) -> tuple[str, str] | None:
    """The (exchange, timeframe) with the most scored forecasts (the daily sums; a store
    with none scored yet: the most waiting ones): what a plot shows. Counting every
    forecast row took 18 s on a year of minutes."""
    d = accuracy_daily.c
    row = conn.execute(select(d.exchange, d.timeframe, func.sum(d.n).label("n"))
                       .group_by(d.exchange, d.timeframe)
                       .order_by(desc("n"), d.exchange, d.timeframe).limit(1)).first()
    if row is None:
        f = forecasts.c
        row = conn.execute(select(f.exchange, f.timeframe, func.count().label("n"))
                           .where(f.actual.is_(None)).group_by(f.exchange, f.timeframe)
                           .order_by(desc("n"), f.exchange, f.timeframe).limit(1)).first()
    return None if row is None else (row[0], row[1])


def newest_forecasts(conn: Connection, exchange: str, timeframe: str) -> list[dict[str, Any]]:
    """Every row of the newest issue time per model and symbol, ascending by horizon.

    The models and symbols come from the daily sums and the waiting rows, and each newest
    issue time from one seek of the forecasts' unique key: a GROUP BY over the rows of the
    series walked all of them (23 s a year of minutes)."""
    f, d = forecasts.c, accuracy_daily.c
    keys = set(conn.execute(select(d.model, d.symbol).distinct()
                            .where(d.exchange == exchange, d.timeframe == timeframe)).all())
    keys |= set(conn.execute(select(f.model, f.symbol).distinct()
                             .where(f.actual.is_(None), f.exchange == exchange,
                                    f.timeframe == timeframe)).all())
    out: list[dict[str, Any]] = []
    for model, symbol in sorted(keys, key=lambda k: (k[1], k[0])):
        mine = (f.model == model, f.exchange == exchange, f.symbol == symbol,
                f.timeframe == timeframe)
        issued = conn.execute(select(func.max(f.issued_ts)).where(*mine)).scalar()
        if issued is None:
            continue
        q = (select(f.model, f.symbol, f.issued_ts, f.target_ts, f.horizon, f.yhat, f.lower,
                    f.upper).where(*mine, f.issued_ts == issued).order_by(f.horizon))
        out += [dict(r._mapping) for r in conn.execute(q)]
    return out


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
    res = conn.execute(q)
    keys = list(res.keys())
    return [dict(zip(keys, r, strict=True)) for r in res]  # 80,000 rows a week of minutes


def newest_issue(conn: Connection) -> int | None:
    v = conn.execute(select(func.max(forecasts.c.issued_ts))).scalar()
    return None if v is None else int(v)

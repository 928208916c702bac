"""Forecast rows: idempotent persist, scoring against stored candles, queries."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import Update, func, select, text, update
from sqlalchemy.engine import Connection

from .dialect import insert_ignore_rows, opaque_to_planner
from .schema import candles, forecasts
from .views import accuracy_sql


@dataclass(frozen=True)
class ForecastRow:
    model: str
    model_version: str
    exchange: str
    symbol: str
    timeframe: str
    issued_ts: int
    target_ts: int
    horizon: int
    yhat: float
    lower: float | None
    upper: float | None
    created_at: int


def insert(conn: Connection, rows: Sequence[ForecastRow]) -> int:
    """Persist forecasts; a forecast already stored under the same key is left as it is."""
    return insert_ignore_rows(conn, forecasts, [asdict(r) for r in rows])


def insert_by_model(conn: Connection, rows: Sequence[ForecastRow]) -> dict[str, int]:
    """:func:`insert`, saying how many new rows of each model went in (for metrics)."""
    out: dict[str, int] = {}
    for model in dict.fromkeys(r.model for r in rows):
        out[model] = insert(conn, [r for r in rows if r.model == model])
    return out


def score(conn: Connection, now_ms: int, timeframe: str | None = None,
          step_ms: int | None = None, *, exchange: str | None = None) -> int:
    """Fill actual, error and scored_at of every forecast whose target candle is stored.

    One correlated UPDATE, portable SQL: the target candle is looked up by the
    forecast's own exchange, symbol, timeframe and target_ts. With `timeframe` and
    `step_ms`, only forecasts of that timeframe whose target candle has closed by
    `now_ms` are scored: a store that already holds later candles (a resumed replay,
    a clock set back) is scored exactly as time reaches them. With `exchange`, only that
    exchange's forecasts: daemons of several exchanges sharing a store each score their own.
    """
    stmt = _score_stmt(conn, now_ms, timeframe, step_ms, exchange)
    return max(conn.execute(stmt).rowcount or 0, 0)


def score_by_model(conn: Connection, now_ms: int, timeframe: str | None = None,
                   step_ms: int | None = None, *,
                   exchange: str | None = None) -> dict[str, int]:
    """:func:`score`, saying how many forecasts of each model it scored (for metrics).

    The same UPDATE with RETURNING where the back-end has it (PostgreSQL, SQLite 3.35+);
    elsewhere the rows are counted first in the same write transaction, which holds
    SQLite's write lock, so the count is the UPDATE's.
    """
    stmt = _score_stmt(conn, now_ms, timeframe, step_ms, exchange)
    if conn.dialect.update_returning:
        return dict(Counter(conn.execute(stmt.returning(forecasts.c.model)).scalars()))
    where = stmt.whereclause
    assert where is not None
    q = select(forecasts.c.model, func.count()).where(where).group_by(forecasts.c.model)
    counts = {str(m): int(n) for m, n in conn.execute(q)}
    conn.execute(stmt)
    return counts


def _score_stmt(conn: Connection, now_ms: int, timeframe: str | None,
                step_ms: int | None, exchange: str | None = None) -> Update:
    target_close = (
        select(candles.c.close)
        .where(
            candles.c.exchange == forecasts.c.exchange,
            candles.c.symbol == forecasts.c.symbol,
            candles.c.timeframe == forecasts.c.timeframe,
            candles.c.ts == forecasts.c.target_ts,
        )
        .scalar_subquery()
    )
    stmt = (
        update(forecasts)
        .where(forecasts.c.actual.is_(None), target_close.is_not(None))
        .values(actual=target_close, error=target_close - forecasts.c.yhat, scored_at=now_ms)
    )
    if timeframe is not None and step_ms is not None:
        # On SQLite `target_ts + 0`, not `target_ts`: a bare column lets its planner pick the
        # target_ts index and walk every forecast ever scored (O(store) per tick: 0.7 s at a
        # million rows); the expression leaves it the partial index of unscored rows.
        stmt = stmt.where(forecasts.c.timeframe == timeframe,
                          opaque_to_planner(conn, forecasts.c.target_ts) <= now_ms - step_ms)
    if exchange is not None:
        stmt = stmt.where(forecasts.c.exchange == exchange)
    return stmt


def pending_count(conn: Connection) -> int:
    q = select(func.count()).select_from(forecasts).where(forecasts.c.actual.is_(None))
    return int(conn.execute(q).scalar() or 0)


def max_issued(conn: Connection) -> int | None:
    v = conn.execute(select(func.max(forecasts.c.issued_ts))).scalar()
    return None if v is None else int(v)


def recent_mae(conn: Connection, since_ms: int) -> list[dict[str, object]]:
    """MAE per model, symbol and horizon of forecasts scored for targets since a time."""
    q = (
        select(
            forecasts.c.model,
            forecasts.c.symbol,
            forecasts.c.horizon,
            func.count().label("n"),
            func.avg(func.abs(forecasts.c.error)).label("mae"),
        )
        .where(forecasts.c.actual.is_not(None), forecasts.c.target_ts >= since_ms)
        .group_by(forecasts.c.model, forecasts.c.symbol, forecasts.c.horizon)
        .order_by(forecasts.c.symbol, forecasts.c.horizon, forecasts.c.model)
    )
    return [dict(r._mapping) for r in conn.execute(q)]


def accuracy(conn: Connection, since: int | None = None) -> list[dict[str, Any]]:
    """Rows of the forecast_accuracy view, or of the same SQL over forecasts issued since a
    time: `tickcast report --since` and the view can never disagree."""
    sql = accuracy_sql(since_param="since" if since is not None else None)
    res = conn.execute(text(sql), {"since": since} if since is not None else {})
    return [dict(r._mapping) for r in res]

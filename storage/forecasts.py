"""Forecast rows: idempotent persist, scoring against stored candles, queries."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import Update, delete, func, select, update
from sqlalchemy.engine import Connection

from . import accuracy as sums
from .dialect import insert_ignore_rows, opaque_to_planner
from .schema import candles, forecasts


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
    """Fill actual, error and scored_at of every forecast whose target candle is stored,
    and add them to the accuracy sums in the same transaction (storage/accuracy.py).

    One correlated UPDATE, portable SQL: the target candle is looked up by the
    forecast's own exchange, symbol, timeframe and target_ts. With `timeframe` and
    `step_ms`, only forecasts of that timeframe whose target candle has closed by
    `now_ms` are scored: a store that already holds later candles (a resumed replay,
    a clock set back) is scored exactly as time reaches them. With `exchange`, only that
    exchange's forecasts: daemons of several exchanges sharing a store each score their own.
    """
    return len(_score(conn, _score_stmt(conn, now_ms, timeframe, step_ms, exchange)))


def score_by_model(conn: Connection, now_ms: int, timeframe: str | None = None,
                   step_ms: int | None = None, *,
                   exchange: str | None = None) -> dict[str, int]:
    """:func:`score`, saying how many forecasts of each model it scored (for metrics)."""
    rows = _score(conn, _score_stmt(conn, now_ms, timeframe, step_ms, exchange))
    return dict(Counter(str(r[1]) for r in rows))


def _score(conn: Connection, stmt: Update) -> list[tuple[Any, ...]]:
    """Run the scoring UPDATE and add what it scored to the accuracy sums; returns those
    rows (accuracy.SCORED_COLUMNS). The UPDATE names them with RETURNING where the
    back-end has it (PostgreSQL, SQLite 3.35+); elsewhere their ids are read first in the
    same write transaction, which holds SQLite's write lock, so they are the UPDATE's."""
    if conn.dialect.update_returning:
        rows = [tuple(r) for r in conn.execute(stmt.returning(*sums.SCORED_COLUMNS))]
    else:
        where = stmt.whereclause
        assert where is not None
        ids = list(conn.execute(select(forecasts.c.id).where(where)).scalars())
        conn.execute(stmt)
        rows = []
        for i in range(0, len(ids), 500):
            rows += [tuple(r) for r in conn.execute(
                select(*sums.SCORED_COLUMNS).where(forecasts.c.id.in_(ids[i:i + 500])))]
    sums.add_scored(conn, rows)
    return rows


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


def accuracy(conn: Connection, since: int | None = None, *,
             horizon: int | None = None) -> list[dict[str, Any]]:
    """Rows of the forecast_accuracy view, or the same numbers over forecasts issued since
    a time (the rows of the partial first day plus the daily sums after it; `horizon`:
    of one horizon): `tickcast report --since` and the view can never disagree."""
    return sums.read(conn, since, horizon=horizon)


def delete_scored(conn: Connection, exchange: str, timeframe: str, before: int, *,
                  after: int | None = None, limit: int = 5000) -> tuple[int, int | None]:
    """Delete up to `limit` scored forecasts of one exchange and timeframe issued before
    `before` (and at or after `after`), oldest first; returns (rows deleted, the newest
    issue time deleted: where the next batch starts). Unscored rows stay. The accuracy
    sums are left alone: they keep the history (storage.keep_forecast_rows_days)."""
    f = forecasts.c
    q = (select(f.id, f.issued_ts)
         .where(f.exchange == exchange, f.timeframe == timeframe, f.issued_ts < before,
                f.actual.is_not(None))
         .order_by(f.issued_ts).limit(limit))
    if after is not None:
        q = q.where(f.issued_ts >= after)
    found = conn.execute(q).all()
    if not found:
        return 0, after
    ids = [int(r[0]) for r in found]
    for i in range(0, len(ids), 500):
        conn.execute(delete(forecasts).where(f.id.in_(ids[i:i + 500])))
    return len(ids), int(found[-1][1])

"""training_runs rows and the small store_meta key/value table."""

from __future__ import annotations

from typing import Any

from sqlalchemy import desc, func, insert, select
from sqlalchemy.engine import Connection

from .dialect import insert_ignore
from .schema import store_meta, training_runs


def record(conn: Connection, *, status: str, **values: Any) -> int:
    """Record one finished training run with its outcome (`status`: accepted, rejected or
    failed) and the columns of `values`; returns its id. Runs are recorded once they have
    ended, in the same transaction as an accepted model's checkpoint, so no row says
    'running' (the status the schema still allows)."""
    res = conn.execute(insert(training_runs).values(status=status, **values))
    pk = res.inserted_primary_key
    assert pk is not None
    return int(pk[0])


def latest(
    conn: Connection, model: str, *, status: str | None = None, exchange: str | None = None,
    timeframe: str | None = None,
) -> dict[str, Any] | None:
    q = select(training_runs).where(training_runs.c.model == model)
    if status is not None:
        q = q.where(training_runs.c.status == status)
    if exchange is not None:
        q = q.where(training_runs.c.exchange == exchange)
    if timeframe is not None:
        q = q.where(training_runs.c.timeframe == timeframe)
    row = conn.execute(q.order_by(desc(training_runs.c.id)).limit(1)).first()
    return None if row is None else dict(row._mapping)


def last_attempt_end(conn: Connection, exchange: str, timeframe: str) -> int | None:
    """data_end_ts of the newest recorded training run of any model and outcome."""
    t = training_runs
    v = conn.execute(select(t.c.data_end_ts).where(t.c.exchange == exchange,
                                                   t.c.timeframe == timeframe)
                     .order_by(desc(t.c.id)).limit(1)).scalar()
    return None if v is None else int(v)


def get_meta(conn: Connection, key: str) -> str | None:
    v = conn.execute(select(store_meta.c.value).where(store_meta.c.key == key)).scalar()
    return None if v is None else str(v)


def set_meta(conn: Connection, key: str, value: str, *, overwrite: bool = True) -> None:
    if overwrite:
        conn.execute(store_meta.delete().where(store_meta.c.key == key))
    conn.execute(insert_ignore(conn, store_meta).values(key=key, value=value))


def unaccepted_in_a_row(conn: Connection, model: str, exchange: str | None = None,
                        timeframe: str | None = None) -> int:
    """Training runs of `model` recorded after its newest accepted one (rejected or
    failed): how long retraining has kept the old model."""
    t = training_runs
    where = [t.c.model == model]
    if exchange is not None:
        where.append(t.c.exchange == exchange)
    if timeframe is not None:
        where.append(t.c.timeframe == timeframe)
    last_ok = select(func.max(t.c.id)).where(*where, t.c.status == "accepted").scalar_subquery()
    q = select(func.count()).select_from(t).where(
        *where, t.c.status.in_(("rejected", "failed")), t.c.id > func.coalesce(last_ok, 0))
    return int(conn.execute(q).scalar() or 0)

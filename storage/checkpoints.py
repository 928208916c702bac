"""Accepted models as bytes in the store: any host, any working directory serves them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import delete, desc, insert, select
from sqlalchemy.engine import Connection

from .schema import checkpoints


@dataclass(frozen=True)
class StoredCheckpoint:
    id: int
    model: str
    model_version: str
    created_at: int
    format_version: int
    data: bytes


def put(conn: Connection, *, model: str, model_version: str, exchange: str, timeframe: str,
        created_at: int, format_version: int, data: bytes) -> int:
    """Store a checkpoint; returns its id (the caller commits it with its training run)."""
    res = conn.execute(insert(checkpoints).values(
        model=model, model_version=model_version, exchange=exchange, timeframe=timeframe,
        created_at=created_at, format_version=format_version, data=data))
    pk = res.inserted_primary_key
    assert pk is not None
    return int(pk[0])


def newest_first(conn: Connection, model: str, exchange: str,
                 timeframe: str) -> Iterator[StoredCheckpoint]:
    """Checkpoints of a model for one exchange and timeframe, newest first (read lazily:
    the first that loads is usually the only one needed)."""
    c = checkpoints.c
    ids = conn.execute(select(c.id).where(c.model == model, c.exchange == exchange,
                                          c.timeframe == timeframe)
                       .order_by(desc(c.id))).scalars().all()
    for i in ids:
        row = conn.execute(select(c.id, c.model, c.model_version, c.created_at,
                                  c.format_version, c.data).where(c.id == i)).first()
        if row is not None:
            yield StoredCheckpoint(int(row[0]), row[1], row[2], int(row[3]), int(row[4]),
                                   bytes(row[5]))


def prune(conn: Connection, model: str, exchange: str, timeframe: str, keep: int) -> int:
    """Delete all but the `keep` newest checkpoints of a model; returns how many went."""
    c = checkpoints.c
    ids = conn.execute(select(c.id).where(c.model == model, c.exchange == exchange,
                                          c.timeframe == timeframe)
                       .order_by(desc(c.id))).scalars().all()
    old = ids[keep:]
    if old:
        conn.execute(delete(checkpoints).where(c.id.in_(old)))
    return len(old)

"""Reading any store, SQLite or PostgreSQL, from a test: plain SQL through SQLAlchemy, every
table's rows in key order, and the invariants a store must keep on either back-end."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, select, text
from sqlalchemy.pool import NullPool

from storage import Store, dialect
from storage.copy_store import TABLES


def new_store(made: list[Store], url: str, **kw: Any) -> Store:
    """A Store the test closes at its end through the `stores` fixture (PostgreSQL
    connections must not leak between tests)."""
    s = Store(url, **kw)
    made.append(s)
    return s


def engine_for(url: str | Path) -> Any:
    return create_engine(dialect.normalise_url(str(url)), poolclass=NullPool)


def query(url: str | Path, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    """Rows of one statement (``:name`` parameters); [] while the table does not exist."""
    eng = engine_for(url)
    try:
        with eng.connect() as conn:
            try:
                return [tuple(r) for r in conn.execute(text(sql), params)]
            except Exception as e:  # noqa: BLE001 - not migrated yet
                if "no such table" in str(e) or "does not exist" in str(e):
                    return []
                raise
    finally:
        eng.dispose()


def dump(url: str | Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every copied table's rows, all columns, in primary-key order (bytes as bytes)."""
    eng = engine_for(url)
    try:
        with eng.connect() as conn:
            return {t.name: [tuple(bytes(v) if isinstance(v, memoryview) else v for v in r)
                             for r in conn.execute(select(*t.c).order_by(
                                 *t.primary_key.columns))]
                    for t in TABLES}
    finally:
        eng.dispose()


def no_duplicate_forecasts(url: str | Path) -> bool:
    return query(url, "select count(*) from (select 1 from forecasts group by model, exchange, "
                      "symbol, timeframe, issued_ts, horizon having count(*) > 1) d") == [(0,)]


def candle_times(url: str | Path, symbol: str, exchange: str | None = None) -> list[int]:
    sql = "select ts from candles where symbol = :s" + (" and exchange = :e" if exchange else "")
    return [int(r[0]) for r in query(url, sql + " order by ts", s=symbol, e=exchange)]

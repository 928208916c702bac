"""Copying one store into another, whatever their back-ends (`tickcast copy-store`).

Every table but ``schema_version`` (the target has its own migrations), read from one
snapshot of the source in primary-key order and written in batches, each batch one
transaction on the target: a row whose key is new is inserted, a stored row that differs is
updated, an equal one is left alone (``dialect.upsert_rows``; COPY through a temporary table
on PostgreSQL). So a copy interrupted at any point (kill -9 included) and run again ends with
exactly the source's rows, without duplicates, and a copy run twice writes nothing the
second time. Ids are copied as they are; the target's id sequences are then moved past them
(``dialect.reset_identity``). The caller compares the row counts at the end (`counts`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy import Table, func, select
from sqlalchemy.engine import Connection

from . import dialect
from .migrations import current_version
from .schema import (
    accuracy_daily,
    candles,
    checkpoints,
    empty_candles,
    forecasts,
    store_meta,
    training_runs,
)
from .store import Store

# What `snapshot` yields: one read transaction on the source (a name for the commands, which
# do not import SQLAlchemy).
Snapshot = Connection

# In this order; no foreign keys between them.
# The accuracy sums are copied as they are (they hold the history of rows a retention
# deleted), not recomputed in the target.
TABLES: tuple[Table, ...] = (candles, empty_candles, forecasts, training_runs, checkpoints,
                             store_meta, accuracy_daily)
BATCH_ROWS = 20_000
# Checkpoints are a few hundred kB each: small batches keep memory and transactions small.
_BATCH = {"checkpoints": 8}


def batch_rows(table: Table) -> int:
    return _BATCH.get(table.name, BATCH_ROWS)


def schema_version_of(conn: Connection) -> int:
    """The schema version of a store (0: empty), read without migrating it."""
    return current_version(conn)


def counts(conn: Connection) -> dict[str, int]:
    """Rows per copied table."""
    return {t.name: int(conn.execute(select(func.count()).select_from(t)).scalar() or 0)
            for t in TABLES}


@contextmanager
def snapshot(source: Store) -> Iterator[Snapshot]:
    """One consistent read of the source for the whole copy (a daemon may go on writing
    to it; what it writes meanwhile is not copied and not counted)."""
    with source.read("read the source store") as conn:
        yield conn


def copy_table(src: Connection, target: Store, table: Table,
               on_batch: Callable[[int, int], None] | None = None) -> int:
    """Copy one table from a source snapshot into the target; returns the rows read.
    `on_batch(rows read, rows written)` after each committed batch."""
    n = batch_rows(table)
    q = select(*table.c).order_by(*table.primary_key.columns)
    result = src.execution_options(yield_per=n).execute(q)
    done = 0
    for part in result.partitions(n):
        rows = [tuple(r) for r in part]
        with target.write(f"copy {table.name}") as conn:
            written = dialect.upsert_rows(conn, table, rows)
        done += len(rows)
        if on_batch is not None:
            on_batch(len(rows), written)
    with target.write(f"id sequence of {table.name}") as conn:
        dialect.reset_identity(conn, table)
    return done

"""Versioned schema migrations.

A brand-new store is created at the latest version in one transaction. An older
store is brought forward one step at a time, each step in its own transaction
together with its row in ``schema_version``, so a crash mid-migration leaves the
store at the previous version, never half-way. A store newer than this code is
refused: guessing at a future schema is how data gets corrupted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Engine, func, insert, inspect, select
from sqlalchemy.engine import Connection

from .errors import SchemaTooNew
from .schema import metadata, schema_version
from .views import accuracy_sql, forecast_errors_sql

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    apply: Callable[[Connection], None]


def _create_views(conn: Connection) -> None:
    conn.exec_driver_sql("DROP VIEW IF EXISTS forecast_errors")
    conn.exec_driver_sql("DROP VIEW IF EXISTS forecast_accuracy")
    conn.exec_driver_sql(f"CREATE VIEW forecast_errors AS {forecast_errors_sql()}")
    conn.exec_driver_sql(f"CREATE VIEW forecast_accuracy AS {accuracy_sql()}")


def _v1(conn: Connection) -> None:
    metadata.create_all(conn)
    _create_views(conn)


# Append new steps here; never edit a step that has shipped.
MIGRATIONS: list[Migration] = [
    Migration(1, "candles, empty_candles, forecasts, training_runs, views", _v1),
]
LATEST = MIGRATIONS[-1].version

def current_version(conn: Connection) -> int:
    """0 for an empty database, else the highest applied version."""
    if not inspect(conn).has_table("schema_version"):
        return 0
    v = conn.execute(select(func.max(schema_version.c.version))).scalar()
    return int(v or 0)


def migrate(engine: Engine, *, now_ms: int) -> int:
    """Bring the store to LATEST; returns the version it is at. Raises SchemaTooNew."""
    with engine.connect() as conn:
        with conn.begin():
            found = current_version(conn)
    if found > LATEST:
        raise SchemaTooNew(
            f"store schema version {found} is newer than this tickcast understands ({LATEST}); "
            "upgrade tickcast or use a backup made by this version"
        )
    if found == LATEST:
        return found
    if found == 0:
        # A fresh store gets today's schema in one step, recorded as LATEST.
        steps = [Migration(LATEST, "initial schema", _v1)]
    else:
        steps = [m for m in MIGRATIONS if m.version > found]
    for step in steps:
        with engine.begin() as conn:
            # Re-read under the write lock: another process may have migrated meanwhile.
            if current_version(conn) >= step.version:
                continue
            log.info("migrating store to schema version %d: %s", step.version, step.description)
            step.apply(conn)
            conn.execute(
                insert(schema_version).values(
                    version=step.version, applied_at=now_ms, description=step.description
                )
            )
    return LATEST

"""Versioned schema migrations.

Every store, a brand-new one too, goes through the steps in order, each in its
own transaction together with its row in ``schema_version``: a crash
mid-migration leaves the store at the previous version, never half-way (SQLite and
PostgreSQL both have transactional DDL). A store newer than this code is refused:
guessing at a future schema is how data gets corrupted.

Each step's DDL is frozen text per back-end (``ddl.V1[SQLITE]``, ``ddl.V1[POSTGRESQL]``,
...): the same tables, columns, constraints, indexes and views on both, in each one's
types (PostgreSQL: BIGINT, DOUBLE PRECISION, BYTEA, identity ids). Two processes opening
a fresh store at once do not both migrate: each step takes the back-end's write lock
first (SQLite: BEGIN IMMEDIATE; PostgreSQL: pg_advisory_xact_lock) and re-reads the
version under it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, func, insert, inspect, select
from sqlalchemy.engine import Connection

from . import accuracy, ddl
from .dialect import POSTGRESQL, SQLITE, migration_lock
from .dialect import name as dialect_name
from .errors import SchemaTooNew, SchemaTooOld, StoreConfigError
from .schema import checkpoints, schema_version, training_runs
from .views import accuracy_from_rows_sql, accuracy_sql, forecast_errors_sql

log = logging.getLogger("tickcast.storage")


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    apply: Callable[[Connection], None]




def _kind(conn: Connection) -> str:
    kind = dialect_name(conn)
    if kind not in (SQLITE, POSTGRESQL):
        raise StoreConfigError(f"no migrations for back-end {kind!r}")
    return kind


# Progress of a long step: (what, done, total); the caller's, else log lines.
Progress = Callable[[str, int, int], None]
PROGRESS_KEY = "tickcast_migration_progress"  # where migrate() leaves it in conn.info


def _create_views(conn: Connection, accuracy_view: str | None = None) -> None:
    """Both views; forecast_accuracy as of schema version 3 (from every row) unless
    `accuracy_view` is given."""
    kind = _kind(conn)
    conn.exec_driver_sql("DROP VIEW IF EXISTS forecast_errors")
    conn.exec_driver_sql("DROP VIEW IF EXISTS forecast_accuracy")
    conn.exec_driver_sql(f"CREATE VIEW forecast_errors AS {forecast_errors_sql(kind)}")
    conn.exec_driver_sql(
        f"CREATE VIEW forecast_accuracy AS {accuracy_view or accuracy_from_rows_sql()}")


def _v1(conn: Connection) -> None:
    for statement in ddl.V1[_kind(conn)]:
        conn.exec_driver_sql(statement)
    _create_views(conn)


def _v2(conn: Connection) -> None:
    conn.exec_driver_sql("CREATE INDEX forecasts_target ON forecasts (target_ts)")




def _v3(conn: Connection) -> None:
    kind = _kind(conn)
    for statement in ddl.V3[kind]:
        conn.exec_driver_sql(statement)
    _create_views(conn)
    if kind == SQLITE:
        # PostgreSQL stores were born after checkpoints moved into the store: no files.
        _import_checkpoint_files(conn)


def _import_checkpoint_files(conn: Connection) -> None:
    """Stores from before v3 kept accepted checkpoints as files beside the store; their
    paths are in training_runs.checkpoint. Import each file that still exists (nothing
    lost); a missing or unreadable file is logged and skipped, as a bad file always was."""
    rows = conn.execute(
        select(training_runs.c.model, training_runs.c.model_version, training_runs.c.exchange,
               training_runs.c.timeframe, training_runs.c.finished_at,
               training_runs.c.checkpoint)
        .where(training_runs.c.status == "accepted", training_runs.c.checkpoint.is_not(None))
        .order_by(training_runs.c.id)
    ).fetchall()
    for model, version, exchange, timeframe, finished, path in rows:
        try:
            data = Path(path).read_bytes()
        except OSError as e:
            log.warning("checkpoint of %s %s not imported: %s", model, version, e)
            continue
        conn.execute(insert(checkpoints).values(
            model=model, model_version=version, exchange=exchange or "", timeframe=timeframe or "",
            created_at=finished or 0, format_version=1, data=data))
        log.info("imported checkpoint %s of %s from %s", version, model, path)


def _v4(conn: Connection) -> None:
    """The daily accuracy sums, filled from every scored row once (a week of issue times a
    statement, with progress), forecast_accuracy reading them, the index of waiting
    forecasts. Self-contained: the sums' DDL is frozen in ddl.V4."""
    for statement in ddl.V4[_kind(conn)]:
        conn.exec_driver_sql(statement)
    progress: Progress | None = conn.info.get(PROGRESS_KEY)
    accuracy.fill(conn, None if progress is None else (
        lambda done, total: progress("accuracy sums", done, total)))
    _create_views(conn, accuracy_sql())


def _v5(conn: Connection) -> None:
    # Same text on both back-ends: TEXT is TEXT.
    conn.exec_driver_sql("ALTER TABLE training_runs ADD COLUMN evidence TEXT")


# Append new steps here; never edit a step that has shipped.
MIGRATIONS: list[Migration] = [
    Migration(1, "candles, empty_candles, forecasts, training_runs, views", _v1),
    Migration(2, "index forecasts by target time (recent-error queries)", _v2),
    Migration(3, "checkpoints in the store; interval score and skill in forecast_accuracy", _v3),
    Migration(4, "daily accuracy sums kept by scoring; forecast_accuracy reads them; index of "
                 "waiting forecasts", _v4),
    Migration(5, "training_runs.evidence: why each retrain moved the median or kept it", _v5),
]
LATEST = MIGRATIONS[-1].version


def current_version(conn: Connection) -> int:
    """0 for an empty database, else the highest applied version."""
    if not inspect(conn).has_table("schema_version"):
        return 0
    v = conn.execute(select(func.max(schema_version.c.version))).scalar()
    return int(v or 0)


def require_current(conn: Connection, where: str = "the store") -> int:
    """The store's schema version when it is exactly this code's; raises SchemaTooNew or
    SchemaTooOld otherwise. Reads only (for commands that never migrate)."""
    found = current_version(conn)
    if found > LATEST:
        raise SchemaTooNew(_too_new(found))
    if found < LATEST:
        what = "holds no tickcast schema" if found == 0 else \
            f"is at schema version {found}, this tickcast reads version {LATEST}"
        raise SchemaTooOld(
            f"{where} {what}: a command that only reads never migrates a store (a daemon of "
            "the older version may still use it); `tickcast run` of this version migrates "
            "it at start (as do backfill, import, or replay --out into it)")
    return found


def _too_new(found: int) -> str:
    return (f"store schema version {found} is newer than this tickcast understands ({LATEST}); "
            "upgrade tickcast or use a backup made by this version")


def migrate(engine: Engine, *, now_ms: int, target: int | None = None,
            on_step: Callable[[int], None] | None = None,
            progress: Progress | None = None) -> int:
    """Bring the store to LATEST (or `target`); returns its version. Raises SchemaTooNew.

    `on_step(version)` runs inside each step's transaction after its DDL, before the
    commit (crash-point tests use it). `progress(what, done, total)` hears how a long step
    (filling the accuracy sums from a big store) advances.
    """
    target = LATEST if target is None else target
    with engine.connect() as conn:
        with conn.begin():
            found = current_version(conn)
    if found > LATEST:
        raise SchemaTooNew(_too_new(found))
    if found >= target:
        return found
    for step in (m for m in MIGRATIONS if found < m.version <= target):
        with engine.begin() as conn:
            # Re-read under the write lock: another process may have migrated meanwhile.
            migration_lock(conn)
            if current_version(conn) >= step.version:
                continue
            log.info("migrating store to schema version %d: %s", step.version, step.description)
            conn.info[PROGRESS_KEY] = progress
            try:
                step.apply(conn)
            finally:
                conn.info.pop(PROGRESS_KEY, None)
            conn.execute(
                insert(schema_version).values(
                    version=step.version, applied_at=now_ms, description=step.description
                )
            )
            if on_step is not None:
                on_step(step.version)
    return target

"""Everything that differs between database back-ends lives in this package.

Two back-ends: SQLite (the default: one file, one writer process) and PostgreSQL through
psycopg 3 (several daemons, one per exchange and timeframe, on any number of hosts).
Engines and connection settings, upserts, the bulk-insert hot paths (executemany, COPY),
pragmas, time formatting, error translation, locking and backup are here, one module per
concept; the rest of ``storage`` speaks SQLAlchemy Core only and imports them as
``storage.dialect``.
"""

from .clauses import upsert_tail
from .engine import create, read_options
from .locks import (
    FileWriterLock,
    InstanceLock,
    PgAdvisoryLock,
    WriterLock,
    acquire_instance_lock,
    acquire_writer_lock,
    lock_is_held,
    lock_path,
    writer_lock_holder,
    writer_lock_key,
)
from .pg_copy import copy_candles, copy_upsert, supports_copy
from .statements import (
    BULK_ROWS,
    MIGRATION_LOCK_KEY,
    backup,
    bulk_insert_ignore,
    bulk_insert_ignore_sql,
    checkpoint_wal,
    executemany,
    insert_ignore,
    insert_ignore_columns,
    insert_ignore_rows,
    insert_ignore_sql,
    iso_time_sql,
    migration_lock,
    opaque_to_planner,
    quick_check,
    reset_identity,
    store_size_bytes,
    upsert_rows,
)
from .translate import translate_error
from .urls import (
    BUSY_TIMEOUT_MS,
    CONNECT_TIMEOUT_S,
    COPY_MIN_ROWS,
    POSTGRESQL,
    SQLITE,
    WAL_SIZE_LIMIT,
    backend,
    display_url,
    name,
    normalise_url,
    sqlite_path,
)

__all__ = [
    "BULK_ROWS", "BUSY_TIMEOUT_MS", "CONNECT_TIMEOUT_S", "COPY_MIN_ROWS", "MIGRATION_LOCK_KEY",
    "POSTGRESQL", "SQLITE", "WAL_SIZE_LIMIT", "FileWriterLock", "InstanceLock", "PgAdvisoryLock",
    "WriterLock", "acquire_instance_lock", "acquire_writer_lock", "backend", "backup",
    "bulk_insert_ignore", "bulk_insert_ignore_sql", "checkpoint_wal", "copy_candles",
    "copy_upsert", "create", "display_url", "executemany", "insert_ignore",
    "insert_ignore_columns", "insert_ignore_rows", "insert_ignore_sql", "iso_time_sql",
    "lock_is_held", "lock_path", "migration_lock", "name", "normalise_url", "opaque_to_planner",
    "quick_check", "read_options", "reset_identity", "sqlite_path", "store_size_bytes",
    "supports_copy", "translate_error", "upsert_rows", "upsert_tail", "writer_lock_holder",
    "writer_lock_key"
]

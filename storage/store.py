"""The Store: an engine plus read/write transactions with errors translated.

Every SQLAlchemy/DBAPI error crossing this boundary becomes a
:mod:`storage.errors` exception, so callers decide retry-or-stop by type, not by
parsing driver messages.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from . import dialect
from .errors import StorageError, StoreBusy, StoreCorrupt
from .migrations import migrate


def translate(e: Exception, what: str) -> StorageError:
    """Map a driver error to the project's storage errors (callers `raise ... from e`)."""
    msg = str(getattr(e, "orig", None) or e)
    low = msg.lower()
    if "locked" in low or "busy" in low:
        return StoreBusy(f"{what}: store is locked by another process ({msg})")
    if "disk is full" in low or "disk i/o error" in low or "full" in low:
        return StorageError(f"{what}: cannot write the store: {msg}")
    if "malformed" in low or "not a database" in low:
        return StoreCorrupt(f"{what}: store file is damaged: {msg}")
    return StorageError(f"{what}: {msg}")


class Store:
    """One database. Cheap to create; `open()` checks and migrates it."""

    def __init__(self, url: str, *, durable: bool = True,
                 busy_timeout_ms: int | None = None) -> None:
        self.url = dialect.normalise_url(url)
        timeout = dialect.BUSY_TIMEOUT_MS if busy_timeout_ms is None else busy_timeout_ms
        try:
            self.engine = dialect.create(self.url, durable=durable, busy_timeout_ms=timeout)
        except OSError as e:
            raise StorageError(f"cannot create store {url}: {e.strerror or e}") from e

    @property
    def _driver_error(self) -> type[Exception]:
        # Errors raised by the driver directly (the bulk path bypasses SQLAlchemy).
        return self.engine.dialect.loaded_dbapi.Error  # type: ignore[no-any-return]

    @property
    def path(self) -> Path | None:
        return dialect.sqlite_path(self.url)

    def open(self, now_ms: int, *, check: bool = True,
             on_migration_step: Callable[[int], None] | None = None) -> int:
        """Quick-check (optional) and migrate; returns the schema version."""
        try:
            if check and self.path is not None and self.path.stat().st_size > 0:
                with self.read() as conn:
                    problems = dialect.quick_check(conn)
                if problems:
                    raise StoreCorrupt(
                        f"store {self.path} failed its integrity check: {'; '.join(problems[:5])}"
                    )
            return migrate(self.engine, now_ms=now_ms, on_step=on_migration_step)
        except StorageError:
            raise
        except (SQLAlchemyError, OSError) as e:
            raise translate(e, f"opening store {self.url}") from e

    @contextmanager
    def write(self, what: str = "write") -> Iterator[Connection]:
        """A write transaction (BEGIN IMMEDIATE on SQLite); commits on success."""
        try:
            with self.engine.begin() as conn:
                yield conn
        except StorageError:
            raise
        except (DBAPIError, SQLAlchemyError, self._driver_error) as e:
            raise translate(e, what) from e
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
                raise StorageError(f"{what}: no space left for the store: {e}") from e
            raise

    @contextmanager
    def read(self, what: str = "read") -> Iterator[Connection]:
        """A read transaction that does not take the write lock."""
        try:
            with self.engine.connect() as conn:
                conn = conn.execution_options(tickcast_read=True)
                with conn.begin():
                    yield conn
        except StorageError:
            raise
        except (DBAPIError, SQLAlchemyError) as e:
            raise translate(e, what) from e

    def checkpoint_wal(self) -> tuple[int, int, int]:
        try:
            return dialect.checkpoint_wal(self.engine)
        except (DBAPIError, SQLAlchemyError) as e:
            raise translate(e, "WAL checkpoint") from e

    def close(self) -> None:
        self.engine.dispose()


"""The Store: an engine plus read/write transactions with errors translated.

Every SQLAlchemy/DBAPI error crossing this boundary becomes a
:mod:`storage.errors` exception (by SQLite result code or PostgreSQL SQLSTATE, see
``dialect.translate_error``), so callers decide retry-or-stop by type, not by parsing
driver messages.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from . import dialect
from .errors import StorageError, StoreCorrupt
from .migrations import migrate, require_current


def translate(e: BaseException, what: str) -> StorageError:
    """Map a driver error to the project's storage errors (callers `raise ... from e`)."""
    return dialect.translate_error(e, what)


class Store:
    """One database. Cheap to create (connects lazily); `open()` checks and migrates it.

    `url`: a SQLite path or URL, or ``postgresql://user@host/db`` (psycopg 3).
    `durable` False: replay stores (see ``dialect.create``). `busy_timeout_ms`: SQLite's
    busy timeout, PostgreSQL's lock_timeout. `statement_timeout_ms`: PostgreSQL's
    statement_timeout on every connection (None: the server's own setting).
    """

    def __init__(self, url: str, *, durable: bool = True,
                 busy_timeout_ms: int | None = None,
                 statement_timeout_ms: int | None = None, read_only: bool = False) -> None:
        self.url = dialect.normalise_url(url)
        self.backend = dialect.backend(self.url)
        timeout = dialect.BUSY_TIMEOUT_MS if busy_timeout_ms is None else busy_timeout_ms
        try:
            self.engine = dialect.create(self.url, durable=durable, busy_timeout_ms=timeout,
                                         statement_timeout_ms=statement_timeout_ms,
                                         read_only=read_only)
        except OSError as e:
            raise StorageError(f"cannot create store {url}: {e.strerror or e}") from e

    @property
    def display_url(self) -> str:
        """The URL with any password masked, for logs."""
        return dialect.display_url(self.url)

    @property
    def _driver_error(self) -> type[Exception]:
        # Errors raised by the driver directly (the bulk path bypasses SQLAlchemy).
        return self.engine.dialect.loaded_dbapi.Error  # type: ignore[no-any-return]

    @property
    def path(self) -> Path | None:
        return dialect.sqlite_path(self.url)

    def open(self, now_ms: int, *, check: bool = False,
             on_migration_step: Callable[[int], None] | None = None,
             progress: Callable[[str, int, int], None] | None = None) -> int:
        """Migrate (and, with `check`, first run the integrity check); returns the schema
        version. Nothing here reads the whole store unless a migration must (once per
        upgrade) or `check` asks: opening a year of minutes takes milliseconds.
        `progress(what, done, total)`: how a long migration step advances."""
        try:
            if check:
                problems = self.check()
                if problems:
                    raise StoreCorrupt(
                        f"store {self.display_url} failed its integrity check: "
                        f"{'; '.join(problems[:5])}")
            return migrate(self.engine, now_ms=now_ms, on_step=on_migration_step,
                           progress=progress)
        except StorageError:
            raise
        except (SQLAlchemyError, OSError, self._driver_error) as e:
            raise translate(e, f"opening store {self.display_url}") from e

    def check(self) -> list[str]:
        """The back-end's integrity check, explicitly (it reads every page: 12 s on a year of
        minutes, so no command runs it at open): SQLite's PRAGMA quick_check; PostgreSQL
        checks pages as it reads them and has nothing cheap to run. [] means fine."""
        if self.path is None or not self.path.exists() or self.path.stat().st_size == 0:
            return []
        try:
            with self.read("integrity check") as conn:
                return dialect.quick_check(conn)
        except StorageError:
            raise
        except (SQLAlchemyError, OSError, self._driver_error) as e:
            raise translate(e, f"checking store {self.display_url}") from e

    def open_read_only(self) -> int:
        """Check, without writing anything, that the store has this code's schema (for a
        Store made with `read_only`); returns its version. Raises SchemaTooNew for a newer
        store and SchemaTooOld for one that needs migrating: a command that only reads
        never migrates (an older daemon may still be running on it)."""
        try:
            with self.read("reading the schema version") as conn:
                return require_current(conn, self.display_url)
        except StorageError:
            raise
        except (SQLAlchemyError, OSError, self._driver_error) as e:
            raise translate(e, f"opening store {self.display_url}") from e

    @contextmanager
    def write(self, what: str = "write") -> Iterator[Connection]:
        """A write transaction (BEGIN IMMEDIATE on SQLite, READ COMMITTED on PostgreSQL);
        commits on success."""
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
        """A read transaction on one snapshot that does not take the write lock (SQLite:
        deferred BEGIN; PostgreSQL: REPEATABLE READ READ ONLY: no writes in it)."""
        try:
            with self.engine.connect() as conn:
                conn = conn.execution_options(**dialect.read_options(conn))
                with conn.begin():
                    yield conn
        except StorageError:
            raise
        except (DBAPIError, SQLAlchemyError, self._driver_error) as e:
            raise translate(e, what) from e

    def checkpoint_wal(self) -> tuple[int, int, int]:
        """SQLite: fold the WAL into the file; PostgreSQL: nothing to do, (0, 0, 0)."""
        try:
            return dialect.checkpoint_wal(self.engine)
        except (DBAPIError, SQLAlchemyError) as e:
            raise translate(e, "WAL checkpoint") from e

    def store_size_bytes(self) -> int | None:
        """Bytes the store takes (SQLite file + WAL, PostgreSQL pg_database_size), or None
        where the back-end cannot tell (in-memory SQLite)."""
        try:
            return dialect.store_size_bytes(self.engine)
        except (DBAPIError, SQLAlchemyError, self._driver_error) as e:
            raise translate(e, "store size") from e


    def close(self) -> None:
        self.engine.dispose()


"""Driver errors to storage errors, by SQLite error name and PostgreSQL SQLSTATE."""

from __future__ import annotations

import sqlite3

from sqlalchemy.exc import DBAPIError

from ..errors import StorageError, StoreBusy, StoreConfigError, StoreCorrupt, StoreUnavailable

# SQLite primary result codes (sqlite_errorname carries the extended name, e.g.
# SQLITE_BUSY_SNAPSHOT, SQLITE_IOERR_WRITE).
_SQLITE_BUSY = ("SQLITE_BUSY", "SQLITE_LOCKED")
_SQLITE_WRITE = ("SQLITE_FULL", "SQLITE_IOERR")
_SQLITE_CORRUPT = ("SQLITE_CORRUPT", "SQLITE_NOTADB")

# PostgreSQL SQLSTATEs (Appendix A of its manual), by what the caller must do.
_PG_UNAVAILABLE = ("57P01", "57P02", "57P03", "53300", "53200")
_PG_BUSY = ("55P03", "57014", "40001", "40P01")
_PG_CONFIG = ("3D000", "42501")
_PG_CORRUPT = ("XX001", "XX002")
# libpq reports a refused start-up (bad login, unknown database) without a SQLSTATE: the
# server's FATAL message is the only thing it passes on. These are the English texts of
# those messages (and of libpq's own); anything else at connect time counts as
# "unavailable" (retry), the safe side: a config error taken for an outage only
# restarts, an outage taken for a config error would stop the service.
_PG_REFUSED_AT_CONNECT = (
    "authentication failed",
    "no pg_hba.conf entry",
    "does not exist",
    "permission denied",
    "no password supplied",
    "server does not support ssl",
    "invalid connection option",
    "invalid sslmode",
    "invalid port",
    "invalid integer value",
)


def translate_error(e: BaseException, what: str) -> StorageError:
    """Map a driver error (raw, or wrapped by SQLAlchemy) to the project's storage errors,
    by SQLite result code or PostgreSQL SQLSTATE rather than message text."""
    orig = getattr(e, "orig", None) or e
    msg = str(orig).strip()
    if isinstance(orig, sqlite3.Error):
        return _translate_sqlite(orig, msg, what)
    if type(orig).__module__.split(".")[0] == "psycopg":
        return _translate_pg(e, orig, msg, what)
    if isinstance(e, DBAPIError) and e.connection_invalidated:
        return StoreUnavailable(f"{what}: lost the connection to the database: {msg}")
    return StorageError(f"{what}: {msg}")


def _translate_sqlite(orig: sqlite3.Error, msg: str, what: str) -> StorageError:
    code = getattr(orig, "sqlite_errorname", None)
    if code is None:
        # Raised by the sqlite3 module itself (no result code): the message is all there is.
        low = msg.lower()
        code = ("SQLITE_BUSY" if "locked" in low or "busy" in low else
                "SQLITE_FULL" if "disk is full" in low or "disk i/o error" in low else
                "SQLITE_CORRUPT" if "malformed" in low or "not a database" in low else "")
    if code.startswith(_SQLITE_BUSY):
        return StoreBusy(f"{what}: store is locked by another process ({msg})")
    if code.startswith(_SQLITE_WRITE):
        return StorageError(f"{what}: cannot write the store: {msg}")
    if code.startswith(_SQLITE_CORRUPT):
        return StoreCorrupt(f"{what}: store file is damaged: {msg}")
    if code.startswith("SQLITE_CANTOPEN"):
        return StorageError(f"{what}: cannot open the store file: {msg}")
    return StorageError(f"{what}: {msg}")


def _translate_pg(e: BaseException, orig: BaseException, msg: str, what: str) -> StorageError:
    state = getattr(orig, "sqlstate", None) or ""
    first = msg.splitlines()[0] if msg else type(orig).__name__
    if state:
        if state == "53100":
            return StorageError(f"{what}: the database server is out of disk space: {first}")
        if state.startswith("08") or state in _PG_UNAVAILABLE:
            return StoreUnavailable(f"{what}: database server unavailable: {first}")
        if state in _PG_BUSY:
            return StoreBusy(f"{what}: store is locked or the statement timed out "
                             f"(SQLSTATE {state}): {first}")
        if state.startswith("28") or state in _PG_CONFIG:
            return StoreConfigError(f"{what}: the database refused this login or database "
                                    f"(SQLSTATE {state}): {first}")
        if state in _PG_CORRUPT:
            return StoreCorrupt(f"{what}: the database reports damaged data: {first}")
        return StorageError(f"{what}: {first} (SQLSTATE {state})")
    # No SQLSTATE: raised by libpq/psycopg on the client side.
    import psycopg

    if isinstance(orig, psycopg.OperationalError) or (
            isinstance(e, DBAPIError) and e.connection_invalidated):
        pgconn = getattr(orig, "pgconn", None)
        if getattr(pgconn, "needs_password", False):
            return StoreConfigError(f"{what}: the database wants a password and the URL has "
                                    f"none: {first}")
        low = msg.lower()
        if any(p in low for p in _PG_REFUSED_AT_CONNECT):
            return StoreConfigError(f"{what}: the database refused the connection: "
                                    f"{_one_line(msg)}")
        return StoreUnavailable(f"{what}: database server unavailable: {_one_line(msg)}")
    if isinstance(orig, psycopg.ProgrammingError) and "connection option" in msg.lower():
        return StoreConfigError(f"{what}: storage.url: {first}")
    return StorageError(f"{what}: {first}")


def _one_line(msg: str) -> str:
    return " ".join(part.strip() for part in msg.splitlines() if part.strip())

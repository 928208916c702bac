"""Which back-end a store URL names, and the URL forms both accept."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import (
    Engine,
)
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError

from ..errors import StorageError, StoreConfigError

SQLITE = "sqlite"
POSTGRESQL = "postgresql"

BUSY_TIMEOUT_MS = 10_000
WAL_SIZE_LIMIT = 4 * 1024 * 1024
# PostgreSQL: how long a connection attempt may take before it counts as "unavailable"
# (unless the URL sets connect_timeout itself).
CONNECT_TIMEOUT_S = 10
# Below this many rows a candle batch goes through executemany (one pipelined round
# trip); from it on, through COPY (a handful of round trips, then ~1M rows/s).
COPY_MIN_ROWS = 500



def normalise_url(url_or_path: str) -> str:
    """Accept a SQLAlchemy URL or a plain file path (the CLI allows both).

    ``postgresql://`` and ``postgres://`` mean psycopg 3 (``postgresql+psycopg://``).
    """
    if "://" not in url_or_path:
        return f"sqlite:///{Path(url_or_path).expanduser().absolute()}"
    scheme, rest = url_or_path.split("://", 1)
    if scheme.lower() in ("postgresql", "postgres"):
        return f"postgresql+psycopg://{rest}"
    return url_or_path


def _parse(url: str) -> URL:
    try:
        return make_url(normalise_url(url))
    except ArgumentError as e:
        raise StoreConfigError(f"storage.url: not a database URL or path: {url!r}") from e


def backend(url: str) -> str:
    """'sqlite' or 'postgresql'; any other URL is a StoreConfigError."""
    u = _parse(url)
    if u.drivername.startswith("sqlite"):
        return SQLITE
    if u.drivername == "postgresql+psycopg":
        return POSTGRESQL
    if u.drivername.startswith("postgresql"):
        raise StoreConfigError(
            f"storage.url: driver {u.drivername!r} is not supported; tickcast speaks to "
            "PostgreSQL through psycopg 3: write postgresql://user@host/db")
    raise StoreConfigError(
        f"storage.url: back-end {u.drivername!r} is not supported "
        "(sqlite:///path or postgresql://user@host/db)")


def display_url(url: str) -> str:
    """The URL with any password masked, for logs and messages."""
    try:
        return _parse(url).render_as_string(hide_password=True)
    except StorageError:
        return "<invalid storage.url>"


def name(bind: Connection | Engine) -> str:
    """The back-end of a connection or engine: 'sqlite' or 'postgresql'."""
    return str(bind.dialect.name)


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL, or None for other back-ends and memory."""
    u = _parse(url)
    if not u.drivername.startswith("sqlite"):
        return None
    if not u.database or u.database == ":memory:":
        return None
    return Path(u.database)

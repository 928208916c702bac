"""The one-writer rule: a file lock per SQLite store, a session advisory lock per
exchange and timeframe on PostgreSQL, and who holds it."""

from __future__ import annotations

import fcntl
import hashlib
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import StorageError, StoreBusy
from .engine import _pg_connect_args
from .translate import translate_error
from .urls import POSTGRESQL, _parse, backend, display_url, normalise_url, sqlite_path


@dataclass
class InstanceLock:
    """Held for the life of one writer process; the OS releases it if the process dies."""

    path: Path
    fd: int

    def release(self) -> None:
        try:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        finally:
            os.close(self.fd)


def lock_path(url: str) -> Path | None:
    path = sqlite_path(url)
    return None if path is None else path.with_name(path.name + ".lock")


def acquire_instance_lock(url: str) -> InstanceLock | None:
    """Take the one-writer lock of a SQLite store, or raise StoreBusy naming the holder.

    flock rather than a PID file: kill -9 releases it, so a crashed daemon never
    blocks its own restart. None for stores without a file (PostgreSQL: see
    acquire_writer_lock).
    """
    lp = lock_path(url)
    if lp is None:
        return None
    lp.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lp, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise StoreBusy(
            f"another tickcast run (host {socket.gethostname()} pid {holder}) already holds "
            f"the store {sqlite_path(url)}"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return InstanceLock(lp, fd)


def lock_is_held(url: str) -> bool:
    """Whether some `tickcast run` writes to the store: holds the SQLite instance lock, or
    on PostgreSQL a writer lock of any exchange and timeframe in that database (for
    `tickcast status` and `copy-store`)."""
    if backend(url) == POSTGRESQL:
        with _pg_reader(url, "reading the writer locks") as conn:
            return bool(conn.execute(_PG_ANY_WRITER, (_APP_PREFIX + "%",)).fetchone()[0])
    return _file_lock_holder(url) is not None


def _file_lock_holder(url: str) -> str | None:
    lp = lock_path(url)
    if lp is None or not lp.exists():
        return None
    fd = os.open(lp, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            return f"host {socket.gethostname()} pid {pid}"
    finally:
        os.close(fd)
    return None


def writer_lock_key(exchange: str, timeframe: str) -> int:
    """A stable signed 64-bit advisory-lock key for one (exchange, timeframe) writer."""
    digest = hashlib.blake2b(f"tickcast-writer\0{exchange}\0{timeframe}".encode(),
                             digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _key_halves(key: int) -> tuple[int, int]:
    """pg_locks shows a bigint advisory key as classid (high 32 bits) and objid (low)."""
    u = key & 0xFFFF_FFFF_FFFF_FFFF
    return u >> 32, u & 0xFFFF_FFFF


_APP_PREFIX = "tickcast-writer "
_PG_HOLDER = (
    "SELECT a.application_name, l.pid, a.client_addr::text "
    "FROM pg_locks AS l LEFT JOIN pg_stat_activity AS a ON a.pid = l.pid "
    "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
    "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
    "AND l.classid = %s::bigint::oid AND l.objid = %s::bigint::oid "
    "LIMIT 1"
)
_PG_ANY_WRITER = (
    "SELECT count(*) FROM pg_locks AS l JOIN pg_stat_activity AS a ON a.pid = l.pid "
    "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
    "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
    "AND a.application_name LIKE %s"
)
_PG_HOLDS = (
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
    "AND objsubid = 1 AND pid = pg_backend_pid() "
    "AND classid = %s::bigint::oid AND objid = %s::bigint::oid"
)


def _holder_tag() -> str:
    """application_name of a lock connection: who holds it, readable from any host."""
    host = socket.gethostname().encode("ascii", "replace").decode()
    tag = f"{_APP_PREFIX}host {host} pid {os.getpid()}"
    if len(tag) > 63:  # NAMEDATALEN - 1: the server would cut it anyway; keep the pid
        tail = f" pid {os.getpid()}"
        tag = tag[:63 - len(tail)] + tail
    return tag


class WriterLock:
    """One writer per store (SQLite) or per exchange and timeframe (PostgreSQL).

    ``holder`` says who holds it ("host H pid P"). ``ensure()`` (call it every tick)
    re-takes a lock whose connection was lost, raising StoreBusy if another daemon took
    it meanwhile, StoreUnavailable while the server cannot be reached.
    """

    holder: str = ""

    def is_alive(self) -> bool:
        return True

    def reacquire(self) -> None:
        return None

    def ensure(self) -> None:
        if not self.is_alive():
            self.reacquire()

    def release(self) -> None:
        return None

    def __enter__(self) -> WriterLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class FileWriterLock(WriterLock):
    """SQLite: the flock lock file beside the store; the kernel drops it with the process."""

    def __init__(self, lock: InstanceLock | None) -> None:
        self.lock = lock
        self.holder = f"host {socket.gethostname()} pid {os.getpid()}"

    def is_alive(self) -> bool:
        return True  # a held flock cannot be lost while the fd is open

    def release(self) -> None:
        if self.lock is not None:
            lock, self.lock = self.lock, None
            lock.release()


class PgAdvisoryLock(WriterLock):
    """PostgreSQL: a session advisory lock on a dedicated connection outside the pool.

    The holder is recorded as that connection's application_name ("tickcast-writer host H
    pid P"), which pg_stat_activity shows to every role; the server drops the lock with
    the session (process killed, host gone once TCP keepalives give up, connection
    closed), so a crashed daemon never blocks its successor for long.
    """

    def __init__(self, url: str, exchange: str, timeframe: str) -> None:
        self.url = normalise_url(url)
        self.exchange = exchange
        self.timeframe = timeframe
        self.key = writer_lock_key(exchange, timeframe)
        self.holder = _holder_tag()[len(_APP_PREFIX):]
        self._conn: Any = None

    def acquire(self) -> None:
        conn = _pg_raw_connect(self.url, application_name=_holder_tag(), lock=True)
        try:
            got = conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()
            if not (got and got[0]):
                other = _pg_holder(conn, self.key)
                raise StoreBusy(
                    f"another tickcast run ({other or 'holder unknown'}) already holds "
                    f"{self.exchange} {self.timeframe} in the store {display_url(self.url)}")
        except BaseException as e:
            conn.close()
            if isinstance(e, StorageError):
                raise
            if _is_psycopg(e):
                raise translate_error(e, "taking the writer lock") from e
            raise
        self._conn = conn

    def is_alive(self) -> bool:
        conn = self._conn
        if conn is None or conn.closed:
            return False
        try:
            row = conn.execute(_PG_HOLDS, _key_halves(self.key)).fetchone()
        except Exception:  # noqa: BLE001 - any failure means: not held any more
            return False
        return bool(row and row[0])

    def reacquire(self) -> None:
        self._close()
        self.acquire()

    def release(self) -> None:
        conn = self._conn
        if conn is None:
            return
        try:
            if not conn.closed:
                conn.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
        except Exception:  # noqa: BLE001 - closing the session releases it anyway
            pass
        finally:
            self._close()

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001
                pass


def _pg_raw_connect(url: str, *, application_name: str, lock: bool = False) -> Any:
    """A psycopg connection outside any pool, from the same URL the engine uses."""
    import psycopg

    u = _parse(url)
    cargs, cparams = u.get_dialect()().create_connect_args(u)
    options = []
    if lock:
        # Let the server notice a vanished host (and free the lock) within about a minute.
        options = ["-c tcp_keepalives_idle=30", "-c tcp_keepalives_interval=10",
                   "-c tcp_keepalives_count=3", "-c statement_timeout=30000"]
        cparams.update(keepalives=1, keepalives_idle=30, keepalives_interval=10,
                       keepalives_count=3)
    extra = _pg_connect_args(u, options=options, application_name=application_name)
    extra["application_name"] = application_name
    cparams.update(extra)
    try:
        return psycopg.connect(*cargs, autocommit=True, **cparams)
    except psycopg.Error as e:
        raise translate_error(e, "connecting to the store") from e


def _is_psycopg(e: BaseException) -> bool:
    return type(e).__module__.split(".")[0] == "psycopg"


@contextmanager
def _pg_reader(url: str, what: str) -> Iterator[Any]:
    """A short connection of its own for reading the lock table (status, copy-store);
    driver errors come out as storage errors."""
    conn = _pg_raw_connect(url, application_name="tickcast-status")
    try:
        yield conn
    except Exception as e:
        if _is_psycopg(e):
            raise translate_error(e, what) from e
        raise
    finally:
        conn.close()


def _pg_holder(conn: Any, key: int) -> str | None:
    row = conn.execute(_PG_HOLDER, _key_halves(key)).fetchone()
    if row is None:
        return None
    app, pid, addr = row
    if app and str(app).startswith(_APP_PREFIX):
        return str(app)[len(_APP_PREFIX):]
    where = f" from {addr}" if addr else ""
    return f"server backend pid {pid}{where}"


def acquire_writer_lock(url: str, exchange: str, timeframe: str) -> WriterLock:
    """The one-writer lock a `tickcast run` takes before touching the store.

    SQLite: the store's flock file (one writer process per store, whatever the exchange).
    PostgreSQL: an advisory lock per (exchange, timeframe), so one daemon per exchange and
    timeframe on any host. Raises StoreBusy naming the holder ("host H pid P").
    """
    if backend(url) == POSTGRESQL:
        lock = PgAdvisoryLock(url, exchange, timeframe)
        lock.acquire()
        return lock
    return FileWriterLock(acquire_instance_lock(url))


def writer_lock_holder(url: str, exchange: str, timeframe: str) -> str | None:
    """Who holds the writer lock ("host H pid P"), or None (for `tickcast status`)."""
    if backend(url) == POSTGRESQL:
        with _pg_reader(url, "reading the writer lock") as conn:
            return _pg_holder(conn, writer_lock_key(exchange, timeframe))
    return _file_lock_holder(url)

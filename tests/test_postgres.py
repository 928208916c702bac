"""PostgreSQL beside SQLite: same schema, same numbers, the COPY path, error translation by
SQLSTATE, writer (advisory) locks, and a migration race between two processes.

Tests that need a server take `pg_url`/`pg_admin_url` (conftest): they skip in one line when
TICKCAST_TEST_PG_URL is unset and fail when it is set but unreachable.
"""

from __future__ import annotations

import math
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.exc import OperationalError as SAOperationalError

from storage import (
    SCHEMA_VERSION,
    StorageError,
    Store,
    StoreBusy,
    StoreConfigError,
    StoreCorrupt,
    StoreUnavailable,
    candles,
    dialect,
    views,
)
from storage.forecasts import ForecastRow, score
from storage.forecasts import insert as insert_forecasts
from tests.helpers import ROOT, wait_until
from tests.helpers.stores import new_store

EX, TF, STEP = "bitstamp", "1m", 60_000
T = 1_700_000_040_000
DEADLINE_S = 60.0


def opened(stores: list[Store], url: str, **kw: Any) -> Store:
    s = new_store(stores, url, **kw)
    s.open(now_ms=T)
    return s


def admin(pg_url: str) -> Any:
    import psycopg

    from tests.pg_server import _admin_conninfo

    return psycopg.connect(_admin_conninfo(pg_url), autocommit=True)


def candle_rows(n: int, start: int = T, price: float = 100.0, seed: int = 1) -> list[tuple[
        int, float, float, float, float, float]]:
    rnd = random.Random(seed)
    out = []
    p = price
    for i in range(n):
        o = p
        c = max(1.0, o * math.exp(rnd.gauss(0, 0.002)))
        hi = max(o, c) * (1 + abs(rnd.gauss(0, 0.001)))
        lo = min(o, c) * (1 - abs(rnd.gauss(0, 0.001)))
        out.append((start + i * STEP, o, hi, lo, c, abs(rnd.gauss(5, 2))))
        p = c
    return out


# -- URLs and error translation (no server needed) ----------------------------------------------


def test_postgresql_urls_mean_psycopg_3_and_other_back_ends_are_config_errors() -> None:
    for url in ("postgresql://u@h/db", "postgres://u@h/db", "postgresql+psycopg://u@h/db"):
        assert dialect.normalise_url(url) == "postgresql+psycopg://u@h/db"
        assert dialect.backend(url) == "postgresql"
    assert dialect.backend("/tmp/x.db") == "sqlite"
    assert dialect.sqlite_path("postgresql://u@h/db") is None
    for bad in ("postgresql+psycopg2://u@h/db", "mysql://u@h/db", "://nowhere"):
        with pytest.raises(StoreConfigError):
            Store(bad)
    assert dialect.display_url("postgresql://u:s3cret@h/db") == "postgresql+psycopg://u:***@h/db"


@pytest.mark.parametrize(("sqlstate", "expected"), [
    ("53100", StorageError),  # disk full: stop, like SQLite's FULL (exit 74)
    ("57P01", StoreUnavailable),  # admin shutdown (server restarting)
    ("57P03", StoreUnavailable),  # cannot connect now (starting up)
    ("08006", StoreUnavailable),  # connection failure
    ("53300", StoreUnavailable),  # too many connections
    ("55P03", StoreBusy),  # lock_timeout
    ("57014", StoreBusy),  # statement_timeout
    ("40P01", StoreBusy),  # deadlock detected
    ("28P01", StoreConfigError),  # password authentication failed
    ("3D000", StoreConfigError),  # unknown database
    ("42501", StoreConfigError),  # insufficient privilege
    ("XX001", StoreCorrupt),  # data corrupted
    ("23514", StorageError),  # check violation
    ("25006", StorageError),  # a write inside a read-only transaction: a bug, not an outage
])
def test_postgresql_errors_are_translated_by_sqlstate(sqlstate: str,
                                                     expected: type[StorageError]) -> None:
    import psycopg

    cls = psycopg.errors.lookup(sqlstate)
    # The message says nothing useful on purpose: only the SQLSTATE may decide.
    for err in (cls("something went wrong"),
                SAOperationalError("SELECT 1", {}, cls("something went wrong"))):
        got = dialect.translate_error(err, "tick")
        assert type(got) is expected, (sqlstate, got)
        assert str(got).startswith("tick: ")


@pytest.mark.parametrize(("name", "expected"), [
    ("SQLITE_BUSY", StoreBusy),
    ("SQLITE_BUSY_SNAPSHOT", StoreBusy),
    ("SQLITE_LOCKED", StoreBusy),
    ("SQLITE_FULL", StorageError),
    ("SQLITE_IOERR_WRITE", StorageError),
    ("SQLITE_CORRUPT", StoreCorrupt),
    ("SQLITE_NOTADB", StoreCorrupt),
    ("SQLITE_CONSTRAINT_CHECK", StorageError),
])
def test_sqlite_errors_are_translated_by_result_code(name: str,
                                                     expected: type[StorageError]) -> None:
    e = sqlite3.OperationalError("the full moon is locked")  # a message that would mislead
    e.sqlite_errorname = name  # type: ignore[attr-defined]
    assert type(dialect.translate_error(e, "w")) is expected


def test_an_unreachable_server_is_unavailable_not_a_config_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = Store(f"postgresql://tickcast@127.0.0.1:{port}/tickcast")
    try:
        with pytest.raises(StoreUnavailable, match="unavailable"):
            store.open(now_ms=T)
    finally:
        store.close()


# -- login, privileges, timeouts, lost connections ---------------------------------------------


def test_refused_login_and_unknown_database_are_config_errors(pg_url: str) -> None:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(pg_url)
    no_role = urlunsplit(parts._replace(netloc=f"nobody_here@{parts.hostname}:{parts.port}"))
    no_db = urlunsplit(parts._replace(path="/no_such_database_here"))
    for url in (no_role, no_db):
        s = Store(url)
        try:
            with pytest.raises(StoreConfigError, match="refused"):
                s.open(now_ms=T)
        finally:
            s.close()


def test_a_role_without_privileges_is_a_config_error(pg_url: str) -> None:
    from urllib.parse import urlsplit, urlunsplit

    with admin(pg_url) as c:
        c.execute("DROP ROLE IF EXISTS tickcast_nopriv")
        c.execute("CREATE ROLE tickcast_nopriv LOGIN")
    parts = urlsplit(pg_url)
    url = urlunsplit(parts._replace(netloc=f"tickcast_nopriv@{parts.hostname}:{parts.port}"))
    s = Store(url)
    try:
        with pytest.raises(StoreConfigError, match="42501"):
            s.open(now_ms=T)  # PostgreSQL 15: no CREATE on schema public for others
    finally:
        s.close()
        with admin(pg_url) as c:
            c.execute("DROP ROLE IF EXISTS tickcast_nopriv")


def test_lock_timeout_and_statement_timeout_are_busy(pg_url: str, stores: list[Store]) -> None:
    s = opened(stores, pg_url, busy_timeout_ms=150, statement_timeout_ms=300)
    with s.read() as conn:
        assert conn.exec_driver_sql("SHOW lock_timeout").scalar() == "150ms"
        assert conn.exec_driver_sql("SHOW statement_timeout").scalar() == "300ms"
    holder = s.engine.connect()
    try:
        holder.exec_driver_sql("LOCK TABLE candles IN ACCESS EXCLUSIVE MODE")
        with pytest.raises(StoreBusy, match="55P03"):
            with s.write() as conn:
                candles.insert(conn, EX, "BTC/USD", TF, candle_rows(1))
    finally:
        holder.rollback()
        holder.close()
    with pytest.raises(StoreBusy, match="57014"):
        with s.read() as conn:
            conn.exec_driver_sql("SELECT pg_sleep(5)")
    with s.write() as conn:  # the store is usable again at once
        assert candles.insert(conn, EX, "BTC/USD", TF, candle_rows(1)).inserted == 1


def test_a_lost_connection_is_unavailable_and_the_next_transaction_reconnects(
        pg_url: str, stores: list[Store]) -> None:
    s = opened(stores, pg_url)
    with pytest.raises(StoreUnavailable):
        with s.write() as conn:
            pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
            with admin(pg_url) as c:
                c.execute("SELECT pg_terminate_backend(%s)", (pid,))
            candles.insert(conn, EX, "BTC/USD", TF, candle_rows(3))
    with s.write() as conn:  # a daemon's next tick: a fresh connection from the pool
        assert candles.insert(conn, EX, "BTC/USD", TF, candle_rows(3)).inserted == 3


def test_a_write_inside_a_read_transaction_is_refused(pg_url: str, stores: list[Store]) -> None:
    s = opened(stores, pg_url)
    with pytest.raises(StorageError, match="25006") as info:
        with s.read() as conn:
            candles.insert(conn, EX, "BTC/USD", TF, candle_rows(1))
    assert not isinstance(info.value, StoreBusy)


def test_maintenance_calls_are_sqlite_only_or_no_ops(pg_url: str, stores: list[Store],
                                                     tmp_path: Path) -> None:
    s = opened(stores, pg_url)
    assert s.checkpoint_wal() == (0, 0, 0)
    with s.read() as conn:
        assert dialect.quick_check(conn) == []
    with pytest.raises(StorageError, match="pg_dump"):
        dialect.backup(s.engine, tmp_path / "b.db")
    assert dialect.lock_path(pg_url) is None and dialect.acquire_instance_lock(pg_url) is None


# -- one schema, one set of numbers -------------------------------------------------------------


def _family(t: Any) -> str:
    name = type(t).__name__.upper()
    for fam, keys in (("int", ("INT",)), ("float", ("FLOAT", "DOUBLE", "REAL", "NUMERIC")),
                      ("bytes", ("BLOB", "BYTEA", "BINARY")),
                      ("text", ("CHAR", "TEXT", "STRING"))):
        if any(k in name for k in keys):
            return fam
    return name


def test_both_back_ends_have_the_same_schema(tmp_path: Path, pg_url: str,
                                            stores: list[Store]) -> None:
    def describe(s: Store) -> dict[str, Any]:
        insp = inspect(s.engine)
        out: dict[str, Any] = {"views": sorted(insp.get_view_names())}
        for t in sorted(insp.get_table_names()):
            out[t] = {
                "columns": [(c["name"], _family(c["type"]), c["nullable"])
                            for c in insp.get_columns(t)],
                "pk": insp.get_pk_constraint(t)["constrained_columns"],
                "checks": sorted(c["name"] for c in insp.get_check_constraints(t)),
                "uniques": sorted((u["name"], tuple(u["column_names"]))
                                  for u in insp.get_unique_constraints(t)),
                "indexes": sorted((i["name"], tuple(i["column_names"]))
                                  for i in insp.get_indexes(t)
                                  if not i.get("duplicates_constraint")),
            }
        return out

    lite = describe(opened(stores, str(tmp_path / "s.db")))
    pg = describe(opened(stores, pg_url))
    assert lite == pg
    insp = inspect(stores[1].engine)
    for t in ("forecasts", "training_runs", "checkpoints"):
        col = next(c for c in insp.get_columns(t) if c["name"] == "id")
        assert type(col["type"]).__name__ == "BIGINT" and col.get("identity"), t
    assert type(next(c for c in insp.get_columns("candles") if c["name"] == "ts")["type"]
                ).__name__ == "BIGINT"


def test_epoch_milliseconds_read_the_same_as_text_on_both(pg_url: str) -> None:
    import psycopg

    from tests.pg_server import _admin_conninfo

    samples = [0, 999, 1000, 59_999, T, T + 59_999, 951_782_400_000,  # 2000-02-29
               4_102_444_800_000, 253_402_300_799_999]  # 2100-01-01, 9999-12-31T23:59:59
    lite = sqlite3.connect(":memory:")
    with psycopg.connect(_admin_conninfo(pg_url)) as pg:
        for ts in [*samples, None]:
            a = lite.execute(f"SELECT {dialect.iso_time_sql('x', 'sqlite')} FROM (SELECT ? AS x)",
                             (ts,)).fetchone()[0]
            b = pg.execute(f"SELECT {dialect.iso_time_sql('x', 'postgresql')} "
                           "FROM (SELECT %s::bigint AS x) AS s", (ts,)).fetchone()[0]
            assert a == b, ts
            if ts is not None:
                assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", a)


def _fill_same_rows(s: Store) -> None:
    """Candles and forecasts of three models, two symbols, three horizons; most scored."""
    rnd = random.Random(7)
    data = {sym: candle_rows(240, price=p, seed=k)
            for k, (sym, p) in enumerate((("BTC/USD", 30_000.0), ("BTC/EUR", 27_000.0)))}
    rows = []
    for sym, cs in data.items():
        for i in range(0, 230, 3):
            issued = cs[i][0]
            last = cs[i][4]
            for h in (1, 5, 15):
                for model in ("naive", "drift", "seq2seq"):
                    if model == "seq2seq" and rnd.random() < 0.2:
                        continue  # some issue times without a model forecast
                    y = last if model == "naive" else last * (1 + rnd.gauss(0, 0.001))
                    w = last * 0.002 * math.sqrt(h) * (0.5 + rnd.random())
                    band = (None, None) if model == "drift" and h == 15 else (y - w, y + w)
                    rows.append(ForecastRow(model, f"{model}-1", EX, sym, TF, issued,
                                            issued + h * STEP, h, y, band[0], band[1],
                                            issued + 1000))
    with s.write() as conn:
        for sym, cs in data.items():
            candles.insert(conn, EX, sym, TF, cs[:200])  # the last targets stay unscored
        insert_forecasts(conn, rows)
        score(conn, T + 10**9)


def _norm(v: Any) -> Any:
    if isinstance(v, Decimal):
        return float(v)
    return v


def _same(a: list[tuple[Any, ...]], b: list[tuple[Any, ...]], what: str) -> None:
    assert len(a) == len(b), what
    assert len(a) > 0, what
    for ra, rb in zip(a, b, strict=True):
        assert len(ra) == len(rb), what
        for x, y in zip(ra, rb, strict=True):
            x, y = _norm(x), _norm(y)
            if isinstance(x, float) or isinstance(y, float):
                assert x == pytest.approx(y, rel=1e-12, abs=1e-9), (what, ra, rb)
            else:
                assert x == y, (what, ra, rb)


def readme_queries() -> list[tuple[str, str | None, str]]:
    """(label, back-end or None for both, SQL) of the README's "Queries you will want"."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("### Queries you will want", 1)[1].split("```sql", 1)[1]
    block = block.split("```", 1)[0]
    out = []
    for chunk in re.split(r"\n(?=-- \d+\.)", block.strip()):
        head, sql = chunk.split("\n", 1)
        kind = ("sqlite" if head.rstrip().endswith("(SQLite)") else
                "postgresql" if head.rstrip().endswith("(PostgreSQL)") else None)
        out.append((head, kind, sql.strip().rstrip(";")))
    return out


def test_readme_queries_and_views_give_the_same_results_on_both(
        tmp_path: Path, pg_url: str, stores: list[Store]) -> None:
    lite = opened(stores, str(tmp_path / "s.db"))
    pg = opened(stores, pg_url)
    for s in (lite, pg):
        _fill_same_rows(s)

    def run(s: Store, sql: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        with s.read() as conn:
            res = conn.execute(text(sql), params or {})
            got = [tuple(r) for r in res]
        return got if "ORDER BY" in sql.upper().split("FROM")[-1] else sorted(
            got, key=lambda r: tuple(str(x) for x in r))

    queries = readme_queries()
    assert len(queries) == 7 and [k for _, k, _ in queries].count(None) == 5
    for label, kind, sql in queries:
        if kind is None:
            _same(run(lite, sql), run(pg, sql), label)
    q6 = {kind: sql for _, kind, sql in queries if kind}
    _same(run(lite, q6["sqlite"]), run(pg, q6["postgresql"]), "query 6")

    for view in ("forecast_accuracy", "forecast_errors"):
        order = ("model, exchange, symbol, timeframe, horizon" if view == "forecast_accuracy"
                 else "model, symbol, horizon, issued_ts")
        sql = f"SELECT * FROM {view} ORDER BY {order}"
        with lite.read() as c1, pg.read() as c2:
            r1, r2 = c1.execute(text(sql)), c2.execute(text(sql))
            assert list(r1.keys()) == list(r2.keys())
            a, b = [tuple(r) for r in r1], [tuple(r) for r in r2]
        _same(a, b, view)
    # The accuracy view carries the interval score and skill, with real values in both.
    with pg.read() as conn:
        acc = [dict(r._mapping) for r in conn.execute(text(
            "SELECT * FROM forecast_accuracy ORDER BY model, symbol, horizon"))]
    seq = [r for r in acc if r["model"] == "seq2seq"]
    assert seq and all(r["interval_score"] > 0 and r["interval_skill"] > 0 for r in seq)
    assert all(isinstance(r["coverage"], float) for r in acc if r["coverage"] is not None)
    assert any(r["coverage"] is None for r in acc)  # drift at h=15 has no band
    # `tickcast report --since`: the rows of the partial first day plus the daily sums.
    since = T + 60 * STEP
    sql = views.accuracy_since_sql() + " ORDER BY model, exchange, symbol, timeframe, horizon"
    p = {"since": since, "day": since - since % 86_400_000 + 86_400_000}
    _same(run(lite, sql, p), run(pg, sql, p), "report --since")


# -- the COPY path ----------------------------------------------------------------------------------


def _batch() -> tuple[list[Any], list[Any], list[Any]]:
    """(stored before, incoming batch) with new rows, equal rows, conflicting rows and two
    copies of one new time inside the batch (one equal, one different)."""
    base = candle_rows(1200, seed=3)
    stored = base[100:400]
    incoming = list(base[:1200])
    for i in (150, 250, 399):  # arrive again with a different close
        r = incoming[i]
        incoming[i] = (r[0], r[1], r[2], r[3], (r[3] + r[4]) / 2, r[5])
    dup = incoming[700]
    incoming.insert(701, dup)  # the same candle twice: unchanged the second time
    incoming.insert(900, (dup[0], dup[1], dup[2], dup[3], dup[4], dup[5] + 1))  # differs
    return base, stored, incoming


def test_copy_import_equals_executemany_import(pg_url: str, tmp_path: Path,
                                               stores: list[Store]) -> None:
    _, stored, incoming = _batch()
    cols = [list(c) for c in zip(*incoming, strict=True)]
    pg = opened(stores, pg_url)
    lite = opened(stores, str(tmp_path / "s.db"))
    results = {}
    for s, sym, method in ((pg, "BTC/USD", "copy"), (pg, "BTC/EUR", "executemany"),
                           (lite, "BTC/USD", "executemany")):
        with s.write() as conn:
            candles.insert(conn, EX, sym, TF, stored)
        with s.write() as conn:
            results[(s.backend, method)] = candles.insert_columns(conn, EX, sym, TF, cols,
                                                                  method=method)
        with s.read() as conn:
            results[(s.backend, method, "rows")] = candles.range_rows(conn, EX, sym, TF, 0,
                                                                      2 * T)
    copy = results[("postgresql", "copy")]
    assert copy == results[("postgresql", "executemany")] == results[("sqlite", "executemany")]
    assert copy.inserted == 1200 - 300 and len(copy.conflicts) == 4
    assert copy.unchanged == len(incoming) - copy.inserted - 4
    assert [c[0][0] for c in copy.conflicts] == sorted(c[0][0] for c in copy.conflicts)
    rows_copy = results[("postgresql", "copy", "rows")]
    assert rows_copy == results[("postgresql", "executemany", "rows")]
    assert rows_copy == results[("sqlite", "executemany", "rows")]


def test_copy_batches_share_a_transaction_and_survive_a_rolled_back_one(
        pg_url: str, stores: list[Store]) -> None:
    s = opened(stores, pg_url)
    data = candle_rows(3000, seed=5)
    cols = [list(c) for c in zip(*data, strict=True)]
    bad = [list(c) for c in zip(*data[:1000], strict=True)]
    bad[4][500] = float("nan")  # one non-finite close: the whole batch is refused
    with pytest.raises(StorageError):
        with s.write() as conn:
            candles.insert_columns(conn, EX, "BTC/USD", TF, bad, method="copy")
    with s.write() as conn:  # same pooled connection: its temp table went with the rollback
        a = candles.insert_columns(conn, EX, "BTC/USD", TF, [c[:2000] for c in cols])
        b = candles.insert_columns(conn, EX, "BTC/USD", TF, [c[1000:] for c in cols])
    assert (a.inserted, a.unchanged, b.inserted, b.unchanged) == (2000, 0, 1000, 1000)
    assert a.conflicts == b.conflicts == []
    with s.read() as conn:
        assert candles.range_rows(conn, EX, "BTC/USD", TF, 0, 2 * T) == data


def test_copy_gives_way_to_another_session_inserting_the_same_candles(
        pg_url: str, stores: list[Store]) -> None:
    """Another session inserts one of the batch's candles after the COPY path looked: its
    plain INSERT waits, then fails on the key, and the batch is redone with ON CONFLICT."""
    import threading

    s = opened(stores, pg_url)
    data = candle_rows(1000, seed=9)
    cols = [list(c) for c in zip(*data, strict=True)]
    other = s.engine.connect()
    tx = other.begin()
    candles.insert(other, EX, "BTC/USD", TF, [data[500]])  # not committed yet
    result: dict[str, Any] = {}

    def copy() -> None:
        try:
            with s.write() as conn:
                result["r"] = candles.insert_columns(conn, EX, "BTC/USD", TF, cols,
                                                     method="copy")
        except Exception as e:  # noqa: BLE001 - reported below
            result["e"] = e

    th = threading.Thread(target=copy)
    th.start()
    try:
        with admin(pg_url) as c:
            wait_until(lambda: c.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'").fetchone()[0] == 1 or not th.is_alive(),
                "the COPY insert to wait on the other session's candle")
        tx.commit()
    finally:
        other.close()
        th.join(DEADLINE_S)
    assert "e" not in result, result.get("e")
    r = result["r"]
    assert (r.inserted, r.unchanged, r.conflicts) == (999, 1, [])
    with s.read() as conn:
        assert candles.range_rows(conn, EX, "BTC/USD", TF, 0, 2 * T) == data


# -- writer locks (advisory) ------------------------------------------------------------------------

_HOLD_LOCK = """
import sys
from storage import dialect
lock = dialect.acquire_writer_lock(sys.argv[1], sys.argv[2], sys.argv[3])
print("locked", lock.holder, flush=True)
sys.stdin.read()
"""


def test_advisory_lock_names_its_holder_and_goes_with_a_killed_process(pg_url: str) -> None:
    p = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, pg_url, EX, TF], cwd=ROOT,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None
        line = p.stdout.readline()
        assert line.startswith("locked"), line
        with pytest.raises(StoreBusy, match=rf"host \S+ pid {p.pid}\b.*already holds"):
            dialect.acquire_writer_lock(pg_url, EX, TF)
        assert dialect.writer_lock_holder(pg_url, EX, TF) == line.split(" ", 1)[1].strip()
        # Other exchanges and timeframes have their own writer.
        with dialect.acquire_writer_lock(pg_url, "kraken", TF), \
                dialect.acquire_writer_lock(pg_url, EX, "1h"):
            pass
        p.send_signal(signal.SIGKILL)
        p.wait(DEADLINE_S)

        def take() -> dialect.WriterLock | None:
            try:
                return dialect.acquire_writer_lock(pg_url, EX, TF)
            except StoreBusy:
                return None

        lock = wait_until(take, "the server to drop the killed holder's lock")
        assert str(os.getpid()) in (dialect.writer_lock_holder(pg_url, EX, TF) or "")
        lock.release()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        if p.stdout:
            p.stdout.close()
        if p.stdin:
            p.stdin.close()


def test_a_dropped_lock_connection_is_noticed_and_retaken(pg_url: str) -> None:
    lock = dialect.acquire_writer_lock(pg_url, EX, TF)
    assert isinstance(lock, dialect.PgAdvisoryLock)
    try:
        pid = lock._conn.info.backend_pid
        with admin(pg_url) as c:
            c.execute("SELECT pg_terminate_backend(%s)", (pid,))
        wait_until(lambda: not lock.is_alive(), "the lock to report itself lost")
        lock.ensure()  # nobody took it meanwhile: taken again
        assert lock.is_alive()
        # Lost again, and this time another daemon is faster: ensure() says who.
        with admin(pg_url) as c:
            c.execute("SELECT pg_terminate_backend(%s)", (lock._conn.info.backend_pid,))
        wait_until(lambda: not lock.is_alive(), "the lock to report itself lost")
        other = dialect.acquire_writer_lock(pg_url, EX, TF)
        try:
            with pytest.raises(StoreBusy, match="already holds"):
                lock.ensure()
        finally:
            other.release()
    finally:
        lock.release()
    assert dialect.writer_lock_holder(pg_url, EX, TF) is None


def test_writer_lock_keys_are_stable_and_distinct() -> None:
    k = dialect.writer_lock_key("bitstamp", "1m")
    assert k == dialect.writer_lock_key("bitstamp", "1m")
    assert -2**63 <= k < 2**63
    keys = {dialect.writer_lock_key(e, t) for e in ("bitstamp", "kraken", "coinbase")
            for t in ("1m", "5m", "1h")}
    assert len(keys) == 9


# -- a migration race ---------------------------------------------------------------------------------

_OPEN = """
import sys, time, pathlib
from storage import Store
url, hold = sys.argv[1], sys.argv[2]
def on_step(version):
    if hold != "-" and version == 1:
        d = pathlib.Path(hold)
        (d / "in-step").touch()
        end = time.monotonic() + 120
        while not (d / "release").exists():
            if time.monotonic() > end:
                sys.exit(3)
            time.sleep(0.01)
s = Store(url)
print(s.open(now_ms=int(time.time() * 1000), on_migration_step=on_step), flush=True)
s.close()
"""


def test_two_processes_opening_a_fresh_store_at_once_migrate_it_once(
        pg_url: str, tmp_path: Path, stores: list[Store]) -> None:
    """A is inside step 1 (DDL done, not committed) when B opens the same fresh store: B must
    wait on the migration lock, then find the work done; one consistent schema results."""
    a = subprocess.Popen([sys.executable, "-c", _OPEN, pg_url, str(tmp_path)], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    b = None
    try:
        wait_until(lambda: (tmp_path / "in-step").exists() or a.poll() is not None,
                 "process A to reach the middle of step 1")
        assert a.poll() is None, a.communicate()
        b = subprocess.Popen([sys.executable, "-c", _OPEN, pg_url, "-"], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        with admin(pg_url) as c:
            wait_until(lambda: c.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            ).fetchone()[0] == 1 or b.poll() is not None, "process B to wait on the lock")
        assert b.poll() is None, b.communicate()
        (tmp_path / "release").touch()
        out_a, err_a = a.communicate(timeout=DEADLINE_S)
        out_b, err_b = b.communicate(timeout=DEADLINE_S)
    finally:
        for p in (a, b):
            if p is not None and p.poll() is None:
                p.kill()
                p.communicate()
    assert a.returncode == 0, err_a[-2000:]
    assert b.returncode == 0, err_b[-2000:]
    assert out_a.strip() == out_b.strip() == str(SCHEMA_VERSION)
    s = opened(stores, pg_url)
    with s.read() as conn:
        versions = conn.execute(text("SELECT version FROM schema_version ORDER BY version")
                                ).scalars().all()
        assert versions == list(range(1, SCHEMA_VERSION + 1))
        insp = inspect(conn)
        assert {"candles", "forecasts", "checkpoints"} <= set(insp.get_table_names())
        assert {"forecast_errors", "forecast_accuracy"} <= set(insp.get_view_names())

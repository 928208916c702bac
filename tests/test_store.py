"""The store on real SQLite files: migrations, constraints, idempotence, gaps, transactions."""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import CheckConstraint, UniqueConstraint
from sqlalchemy.exc import IntegrityError

from storage import SCHEMA_VERSION, SchemaTooNew, StorageError, Store, StoreBusy, candles, dialect
from storage.forecasts import ForecastRow, score
from storage.forecasts import insert as insert_forecasts

EX, SYM, TF, STEP = "bitstamp", "BTC/USD", "1m", 60_000
T = 1_700_000_040_000  # a minute boundary


def rows(n: int, start: int = T, price: float = 100.0) -> list[tuple[int, float, float, float, float, float]]:
    return [(start + i * STEP, price + i, price + i + 2, price + i - 2, price + i + 1, 1.5)
            for i in range(n)]


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(str(tmp_path / "t.db"))
    s.open(now_ms=T)
    return s


def test_fresh_store_is_migrated_and_reopen_is_a_no_op(tmp_path: Path) -> None:
    path = tmp_path / "fresh.db"
    s = Store(str(path))
    assert s.open(now_ms=T) == SCHEMA_VERSION
    s.close()
    s2 = Store(str(path))
    assert s2.open(now_ms=T + 1) == SCHEMA_VERSION
    con = sqlite3.connect(path)
    assert con.execute("select count(*) from schema_version").fetchone()[0] == SCHEMA_VERSION
    names = {r[0] for r in con.execute("select name from sqlite_master")}
    assert {"candles", "forecasts", "training_runs", "empty_candles", "forecast_errors",
            "forecast_accuracy", "schema_version"} <= names


def _sql(text: str) -> str:
    """SQL text compared modulo layout: whitespace, parentheses and quotes."""
    return re.sub(r"\s+", " ", re.sub(r"[()\"]", " ", text)).strip().lower()


def test_every_migration_step_together_gives_exactly_the_declared_schema(tmp_path: Path) -> None:
    """The frozen steps, applied in order, must build what schema.py and views.py declare
    (and the queries use): columns with their types and nullability, keys, every CHECK
    constraint with its expression, indexes, and the views' bodies."""
    from sqlalchemy import inspect
    from sqlalchemy.dialects import sqlite as sqlite_dialect

    from storage import migrations, views
    from storage.schema import metadata

    s = Store(str(tmp_path / "steps.db"))
    assert migrations.migrate(s.engine, now_ms=T, target=1) == 1
    with s.read() as conn:
        assert migrations.current_version(conn) == 1
    assert s.open(now_ms=T) == SCHEMA_VERSION
    insp = inspect(s.engine)
    d = sqlite_dialect.dialect()
    for table in metadata.sorted_tables:
        name = table.name
        cols = [(c["name"], str(c["type"]), c["nullable"]) for c in insp.get_columns(name)]
        want = [(c.name, str(c.type.compile(dialect=d)), c.nullable) for c in table.columns]
        assert cols == want, name
        assert insp.get_pk_constraint(name)["constrained_columns"] == [
            c.name for c in table.primary_key.columns], name
        assert {(u["name"], tuple(u["column_names"])) for u in
                insp.get_unique_constraints(name)} == {
            (u.name, tuple(c.name for c in u.columns)) for u in table.constraints
            if isinstance(u, UniqueConstraint)}, name
        assert {c["name"]: _sql(c["sqltext"]) for c in insp.get_check_constraints(name)} == {
            c.name: _sql(str(c.sqltext)) for c in table.constraints
            if isinstance(c, CheckConstraint)}, name
        assert {(i["name"], tuple(i["column_names"])) for i in insp.get_indexes(name)} == {
            (i.name, tuple(c.name for c in i.columns)) for i in table.indexes}, name
    with s.read() as conn:
        got = dict(conn.exec_driver_sql(
            "select name, sql from sqlite_master where type = 'view'").fetchall())
    # The public columns users' SQL relies on (README, SPEC §6); more may be added.
    documented = {
        "forecast_errors": {"issued_at", "target_at", "abs_error", "abs_pct_error", "pct_error",
                            "in_interval", "model", "symbol", "horizon", "yhat", "actual"},
        "forecast_accuracy": {"model", "exchange", "symbol", "timeframe", "horizon", "n", "mae",
                              "rmse", "mape", "bias", "coverage", "mase"},
    }
    for view, columns in documented.items():
        assert columns <= {c["name"] for c in insp.get_columns(view)}, view
    assert {k: _sql(v) for k, v in got.items()} == {
        "forecast_errors": _sql(f"CREATE VIEW forecast_errors AS {views.forecast_errors_sql()}"),
        "forecast_accuracy": _sql(f"CREATE VIEW forecast_accuracy AS {views.accuracy_sql()}"),
    }


def test_an_old_store_is_upgraded_keeping_its_rows(tmp_path: Path) -> None:
    from storage import migrations

    s = Store(str(tmp_path / "old.db"))
    migrations.migrate(s.engine, now_ms=T, target=1)
    with s.write() as conn:
        candles.insert(conn, EX, SYM, TF, rows(7))
    assert s.open(now_ms=T + 5) == SCHEMA_VERSION
    with s.read() as conn:
        assert candles.count(conn, EX, SYM, TF) == 7
        applied = conn.exec_driver_sql("select version, applied_at from schema_version "
                                       "order by version").fetchall()
    assert applied[0] == (1, T) and applied[-1] == (SCHEMA_VERSION, T + 5)


def test_newer_schema_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    Store(str(path)).open(now_ms=T)
    con = sqlite3.connect(path)
    con.execute("insert into schema_version values (?, ?, 'from the future')",
                (SCHEMA_VERSION + 1, T))
    con.commit()
    con.close()
    before = path.read_bytes()
    with pytest.raises(SchemaTooNew, match="newer"):
        Store(str(path)).open(now_ms=T)
    con = sqlite3.connect(path)
    assert con.execute("select max(version) from schema_version").fetchone()[0] == SCHEMA_VERSION + 1
    assert len(path.read_bytes()) == len(before)


def test_sqlite_settings_wal_busy_timeout_and_owner_only(store: Store) -> None:
    with store.read() as conn:
        assert conn.exec_driver_sql("pragma journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("pragma busy_timeout").scalar() == dialect.BUSY_TIMEOUT_MS
    assert store.path is not None
    assert store.path.stat().st_mode & 0o777 == 0o600


def test_write_transactions_begin_immediate(store: Store) -> None:
    """A write transaction takes the write lock at BEGIN, before its first statement."""
    assert store.path is not None
    other = sqlite3.connect(store.path, timeout=0.05, isolation_level=None)
    with store.write() as conn:
        conn.exec_driver_sql("select 1")  # no write yet: only BEGIN has run
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("begin immediate")
    other.execute("begin immediate")
    other.execute("rollback")


def test_read_transactions_do_not_block_a_writer(store: Store) -> None:
    with store.read() as conn:
        conn.exec_driver_sql("select count(*) from candles").scalar()
        with store.write() as w:
            candles.insert(w, EX, SYM, TF, rows(3))
    with store.read() as conn:
        assert candles.count(conn, EX, SYM, TF) == 3


def test_locked_store_is_reported_as_busy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dialect, "BUSY_TIMEOUT_MS", 100)
    s = Store(str(tmp_path / "b.db"))
    s.open(now_ms=T)
    assert s.path is not None
    holder = sqlite3.connect(s.path, isolation_level=None)
    holder.execute("begin immediate")
    try:
        with pytest.raises(StoreBusy, match="locked"):
            with s.write() as conn:
                candles.insert(conn, EX, SYM, TF, rows(1))
    finally:
        holder.execute("rollback")


def test_insert_is_idempotent_and_conflicts_keep_the_stored_row(store: Store) -> None:
    with store.write() as conn:
        first = candles.insert(conn, EX, SYM, TF, rows(10))
        again = candles.insert(conn, EX, SYM, TF, rows(10))
        changed = [r if i != 4 else (r[0], r[1], r[2], r[3], r[4] - 0.5, r[5])
                   for i, r in enumerate(rows(10))]
        third = candles.insert(conn, EX, SYM, TF, changed)
    assert (first.inserted, again.inserted, again.unchanged) == (10, 0, 10)
    assert third.inserted == 0 and len(third.conflicts) == 1
    stored, incoming = third.conflicts[0]
    assert stored == rows(10)[4] and incoming == changed[4]
    with store.read() as conn:
        assert candles.range_rows(conn, EX, SYM, TF, T, T + 10 * STEP) == rows(10)


@pytest.mark.parametrize("bad", [
    (T, 0.0, 2.0, 0.0, 1.0, 1.0),  # non-positive prices
    (T, -1.0, 2.0, -2.0, 1.0, 1.0),
    (T, 1.0, 0.5, 2.0, 1.0, 1.0),  # high < low
    (T, 1.0, float("inf"), 0.5, 1.0, 1.0),  # not finite
    (T, float("nan"), 2.0, 0.5, 1.0, 1.0),
    (T, 1.0, 2.0, 0.5, 3.0, 1.0),  # close above high
    (T, 1.0, 2.0, 0.5, 1.0, -1.0),  # negative volume
])
def test_check_constraints_are_a_backstop(store: Store, bad: tuple[float, ...]) -> None:
    with pytest.raises(StorageError):
        with store.write() as conn:
            candles.insert(conn, EX, SYM, TF, [bad])  # type: ignore[list-item]
    with store.read() as conn:
        assert candles.count(conn, EX, SYM, TF) == 0


def test_raw_sql_insert_of_a_bad_candle_is_rejected_by_the_schema(store: Store) -> None:
    with pytest.raises(IntegrityError):
        with store.engine.begin() as conn:
            conn.exec_driver_sql(
                "insert into candles values ('x','BTC/USD','1m',0,1,0.5,2,1,1)")


def test_newest_range_and_gaps(store: Store) -> None:
    data = rows(20)
    with store.write() as conn:
        candles.insert(conn, EX, SYM, TF, data[:5] + data[8:15] + data[16:])
    with store.read() as conn:
        assert candles.newest_ts(conn, EX, SYM, TF) == data[-1][0]
        assert candles.gaps(conn, EX, SYM, TF, STEP) == [(data[5][0], data[8][0]),
                                                          (data[15][0], data[16][0])]
        assert candles.gaps(conn, EX, SYM, TF, STEP, start=data[9][0]) == [
            (data[15][0], data[16][0])]
        w = candles.range_rows(conn, EX, SYM, TF, data[3][0], data[10][0])
        assert [r[0] for r in w] == [data[i][0] for i in (3, 4, 8, 9)]
    # A no-trade time confirmed by the exchange is no longer a hole.
    with store.write() as conn:
        candles.mark_empty(conn, EX, SYM, TF, [data[15][0]], T)
    with store.read() as conn:
        assert candles.gaps(conn, EX, SYM, TF, STEP) == [(data[5][0], data[8][0])]


def test_forecast_insert_is_idempotent_and_scoring_needs_the_target_candle(store: Store) -> None:
    data = rows(5)
    f = ForecastRow("naive", "naive-1", EX, SYM, TF, data[0][0], data[0][0] + 2 * STEP, 2,
                    data[0][4], None, None, T)
    late = ForecastRow("naive", "naive-1", EX, SYM, TF, data[0][0], data[0][0] + 9 * STEP, 9,
                       data[0][4], None, None, T)
    with store.write() as conn:
        candles.insert(conn, EX, SYM, TF, data)
        assert insert_forecasts(conn, [f, late]) == 2
        assert insert_forecasts(conn, [f]) == 0
        assert score(conn, T + 1) == 1
    with store.read() as conn:
        got = conn.exec_driver_sql(
            "select horizon, actual, error, scored_at from forecasts order by horizon").fetchall()
    assert got[0] == (2, data[2][4], data[2][4] - data[0][4], T + 1)
    assert got[1] == (9, None, None, None)


def test_scoring_work_does_not_grow_with_the_rows_already_scored(tmp_path: Path) -> None:
    """A daemon scores every tick for months: the work must follow the unscored rows,
    not the millions scored before (a planner choice once made it walk them all)."""

    def vm_steps(n_scored: int) -> int:
        s = Store(str(tmp_path / f"s{n_scored}.db"))
        s.open(now_ms=T)
        data = rows(n_scored + 10)
        old = [ForecastRow("naive", "naive-1", EX, SYM, TF, c[0], c[0] + STEP, 1, c[4], None,
                           None, T) for c in data[:n_scored]]
        new = [ForecastRow("naive", "naive-1", EX, SYM, TF, c[0], c[0] + STEP, 1, c[4], None,
                           None, T) for c in data[n_scored:]]
        now = data[-1][0] + STEP
        with s.write() as conn:
            candles.insert(conn, EX, SYM, TF, data[:n_scored + 1])
            insert_forecasts(conn, old)
            assert score(conn, now, TF, STEP) == n_scored
            conn.exec_driver_sql("ANALYZE")  # as a long-lived store may have been
        with s.write() as conn:
            insert_forecasts(conn, new)
            candles.insert(conn, EX, SYM, TF, data[n_scored + 1:])
        steps = [0]

        def count() -> int:
            steps[0] += 1
            return 0

        with s.write() as conn:
            raw = conn.connection.driver_connection
            raw.set_progress_handler(count, 50)
            assert score(conn, now + 20 * STEP, TF, STEP) == 9  # the last target never closes
            raw.set_progress_handler(None, 0)
        s.close()
        return steps[0]

    small, big = vm_steps(500), vm_steps(20_000)
    assert big < 2 * small + 20, (small, big)


def test_a_wal_checkpoint_folds_and_truncates_the_wal(tmp_path: Path) -> None:
    s = Store(str(tmp_path / "w.db"))
    s.open(now_ms=T)
    with s.write() as conn:
        candles.insert(conn, EX, SYM, TF, rows(2000))
    wal = tmp_path / "w.db-wal"
    assert wal.stat().st_size > 0
    busy, frames, done = s.checkpoint_wal()
    assert busy == 0 and frames == done
    assert wal.stat().st_size == 0
    with s.read() as conn:
        assert candles.count(conn, EX, SYM, TF) == 2000
    s.close()


def test_instance_lock_is_exclusive_and_released_on_exit(tmp_path: Path) -> None:
    url = str(tmp_path / "lock.db")
    lock = dialect.acquire_instance_lock(url)
    assert lock is not None
    assert dialect.lock_is_held(url)
    with pytest.raises(StoreBusy, match="already holds"):
        dialect.acquire_instance_lock(url)
    lock.release()
    assert not dialect.lock_is_held(url)


def test_concurrent_writers_serialise_without_loss(store: Store) -> None:
    errors: list[Exception] = []

    def writer(k: int) -> None:
        try:
            for j in range(20):
                with store.write() as conn:
                    candles.insert(conn, EX, f"S{k}/USD", TF, rows(1, T + j * STEP))
                time.sleep(0.001)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with store.read() as conn:
        assert sum(candles.count(conn, EX, f"S{k}/USD", TF) for k in range(4)) == 80

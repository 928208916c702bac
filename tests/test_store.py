"""The store on both back-ends: real SQLite files and real PostgreSQL databases (the
`store_url` fixture runs a test on each; PostgreSQL needs TICKCAST_TEST_PG_URL, see
conftest). Migrations, constraints, idempotence, gaps, transactions, scoring, checkpoints.
SQLite-only behaviours (WAL, pragmas, file permissions, flock) stay SQLite-only."""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import CheckConstraint, UniqueConstraint, insert, inspect, text
from sqlalchemy.exc import IntegrityError

from storage import SCHEMA_VERSION, SchemaTooNew, StorageError, Store, StoreBusy, candles, dialect
from storage import checkpoints as ckpts
from storage.forecasts import ForecastRow, score
from storage.forecasts import insert as insert_forecasts
from storage.schema import schema_version
from tests.helpers.stores import new_store

EX, SYM, TF, STEP = "bitstamp", "BTC/USD", "1m", 60_000
T = 1_700_000_040_000  # a minute boundary
T_ = TypeVar("T_")


def rows(n: int, start: int = T, price: float = 100.0) -> list[tuple[int, float, float, float, float, float]]:
    return [(start + i * STEP, price + i, price + i + 2, price + i - 2, price + i + 1, 1.5)
            for i in range(n)]


@pytest.fixture
def store(store_url: str, stores: list[Store]) -> Store:
    s = new_store(stores, store_url)
    s.open(now_ms=T)
    return s


@pytest.fixture
def sqlite_store(tmp_path: Path, stores: list[Store]) -> Store:
    s = new_store(stores, str(tmp_path / "t.db"))
    s.open(now_ms=T)
    return s


def test_fresh_store_is_migrated_and_reopen_is_a_no_op(store_url: str, stores: list[Store]) -> None:
    s = new_store(stores, store_url)
    assert s.open(now_ms=T) == SCHEMA_VERSION
    s.close()
    s2 = new_store(stores, store_url)
    assert s2.open(now_ms=T + 1) == SCHEMA_VERSION
    with s2.read() as conn:
        assert conn.execute(text("select count(*) from schema_version")).scalar() == SCHEMA_VERSION
        insp = inspect(conn)
        names = set(insp.get_table_names()) | set(insp.get_view_names())
    assert {"candles", "forecasts", "training_runs", "empty_candles", "forecast_errors",
            "forecast_accuracy", "schema_version", "checkpoints", "store_meta"} <= names


def _sql(sql: str) -> str:
    """SQL text compared modulo layout: whitespace, parentheses and quotes."""
    return re.sub(r"\s+", " ", re.sub(r"[()\"]", " ", sql)).strip().lower()


def test_every_migration_step_together_gives_exactly_the_declared_schema(
        store_url: str, stores: list[Store]) -> None:
    """The frozen steps, applied in order, must build what schema.py and views.py declare
    (and the queries use): columns with their types and nullability, keys, every CHECK
    constraint (with its expression on SQLite; PostgreSQL re-renders expressions), indexes,
    and the views' bodies (SQLite) or columns (both)."""
    from sqlalchemy.dialects import sqlite as sqlite_dialect

    from storage import migrations, views
    from storage.schema import metadata

    s = new_store(stores, store_url)
    sqlite = s.backend == "sqlite"
    assert migrations.migrate(s.engine, now_ms=T, target=1) == 1
    with s.read() as conn:
        assert migrations.current_version(conn) == 1
    assert s.open(now_ms=T) == SCHEMA_VERSION
    insp = inspect(s.engine)
    d = sqlite_dialect.dialect()
    for table in metadata.sorted_tables:
        name = table.name
        got_cols = [(c["name"], c["nullable"]) for c in insp.get_columns(name)]
        assert got_cols == [(c.name, c.nullable) for c in table.columns], name
        if sqlite:
            types = [str(c["type"]) for c in insp.get_columns(name)]
            assert types == [str(c.type.compile(dialect=d)) for c in table.columns], name
        assert insp.get_pk_constraint(name)["constrained_columns"] == [
            c.name for c in table.primary_key.columns], name
        assert {(u["name"], tuple(u["column_names"])) for u in
                insp.get_unique_constraints(name)} == {
            (u.name, tuple(c.name for c in u.columns)) for u in table.constraints
            if isinstance(u, UniqueConstraint)}, name
        checks = {c["name"]: _sql(c["sqltext"]) for c in insp.get_check_constraints(name)}
        declared = {c.name: _sql(str(c.sqltext)) for c in table.constraints
                    if isinstance(c, CheckConstraint)}
        assert (checks if sqlite else set(checks)) == (declared if sqlite else set(declared)), name
        # PostgreSQL also lists the indexes behind UNIQUE constraints.
        assert {(i["name"], tuple(i["column_names"])) for i in insp.get_indexes(name)
                if not i.get("duplicates_constraint")} == {
            (i.name, tuple(c.name for c in i.columns)) for i in table.indexes}, name
    # The public columns users' SQL relies on (README: The store); more may be added.
    documented = {
        "forecast_errors": {"issued_at", "target_at", "abs_error", "abs_pct_error", "pct_error",
                            "in_interval", "model", "symbol", "horizon", "yhat", "actual"},
        "forecast_accuracy": {"model", "exchange", "symbol", "timeframe", "horizon", "n", "mae",
                              "rmse", "mape", "bias", "coverage", "mase", "interval_score",
                              "interval_skill"},
    }
    for view, columns in documented.items():
        assert columns <= {c["name"] for c in insp.get_columns(view)}, view
    if sqlite:
        with s.read() as conn:
            got = dict(conn.exec_driver_sql(
                "select name, sql from sqlite_master where type = 'view'").fetchall())
        assert {k: _sql(v) for k, v in got.items()} == {
            "forecast_errors": _sql(f"CREATE VIEW forecast_errors AS {views.forecast_errors_sql()}"),
            "forecast_accuracy": _sql(f"CREATE VIEW forecast_accuracy AS {views.accuracy_sql()}"),
        }


def test_an_old_store_is_upgraded_keeping_its_rows(store_url: str, stores: list[Store]) -> None:
    from storage import migrations

    s = new_store(stores, store_url)
    migrations.migrate(s.engine, now_ms=T, target=1)
    with s.write() as conn:
        candles.insert(conn, EX, SYM, TF, rows(7))
    assert s.open(now_ms=T + 5) == SCHEMA_VERSION
    with s.read() as conn:
        assert candles.count(conn, EX, SYM, TF) == 7
        applied = conn.exec_driver_sql("select version, applied_at from schema_version "
                                       "order by version").fetchall()
    assert applied[0] == (1, T) and applied[-1] == (SCHEMA_VERSION, T + 5)


def test_a_newer_schema_is_refused_on_every_back_end(store_url: str, stores: list[Store]) -> None:
    s = new_store(stores, store_url)
    s.open(now_ms=T)
    with s.write() as conn:
        conn.execute(insert(schema_version).values(version=SCHEMA_VERSION + 1, applied_at=T,
                                                   description="from the future"))
    with pytest.raises(SchemaTooNew, match="newer"):
        new_store(stores, store_url).open(now_ms=T)
    with s.read() as conn:
        assert conn.execute(text("select max(version) from schema_version")).scalar() == (
            SCHEMA_VERSION + 1)


_DIE_IN_STEP = """
import os, sys
from storage import Store
def on_step(version):
    if version == int(sys.argv[2]):
        os._exit(99)  # killed inside the step's transaction, after its DDL
Store(sys.argv[1]).open(now_ms=1, on_migration_step=on_step)
"""


def test_a_process_dying_mid_migration_leaves_the_previous_version(
        store_url: str, stores: list[Store]) -> None:
    import subprocess
    import sys

    from tests.helpers import ROOT

    p = subprocess.run([sys.executable, "-c", _DIE_IN_STEP, store_url, "2"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 99, p.stderr[-2000:]
    s = new_store(stores, store_url)
    with s.read() as conn:
        from storage import migrations

        assert migrations.current_version(conn) == 1
        assert "forecasts_target" not in {i["name"] for i in inspect(conn).get_indexes(
            "forecasts")}
    assert s.open(now_ms=T) == SCHEMA_VERSION


def test_newer_schema_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    first = Store(str(path))
    first.open(now_ms=T)
    first.close()  # explicitly: the engine sits in a reference cycle, gc would close it late
    con = sqlite3.connect(path)
    con.execute("insert into schema_version values (?, ?, 'from the future')",
                (SCHEMA_VERSION + 1, T))
    con.commit()
    con.close()
    before = path.read_bytes()
    refused = Store(str(path))
    with pytest.raises(SchemaTooNew, match="newer"):
        refused.open(now_ms=T)
    refused.close()
    con = sqlite3.connect(path)
    assert con.execute("select max(version) from schema_version").fetchone()[0] == SCHEMA_VERSION + 1
    assert len(path.read_bytes()) == len(before)


def test_sqlite_settings_wal_busy_timeout_and_owner_only(sqlite_store: Store) -> None:
    store = sqlite_store
    with store.read() as conn:
        assert conn.exec_driver_sql("pragma journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("pragma busy_timeout").scalar() == dialect.BUSY_TIMEOUT_MS
    assert store.path is not None
    assert store.path.stat().st_mode & 0o777 == 0o600


def test_write_transactions_begin_immediate(sqlite_store: Store) -> None:
    """A write transaction takes the write lock at BEGIN, before its first statement."""
    store = sqlite_store
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


def test_a_bulk_batch_skips_stored_rows_and_names_each_conflict_in_input_order(
        store: Store) -> None:
    """1,000 rows (several bulk statements and a rest; COPY on PostgreSQL), given as numpy
    columns in shuffled order, onto a series that already holds every 7th of them, every
    35th with other values: exactly those are conflicts, in input order, and kept."""
    import numpy as np

    base = rows(1000)
    pre = [r if i % 35 else (r[0], r[1], r[2], r[3], r[4] - 0.5, r[5])
           for i, r in enumerate(base) if i % 7 == 0]
    with store.write() as conn:
        assert candles.insert(conn, EX, SYM, TF, pre).inserted == len(pre)
    order = np.random.default_rng(3).permutation(1000)
    cols = [np.array([base[i][0] for i in order], dtype=np.int64)] + [
        np.array([base[i][j] for i in order]) for j in range(1, 6)]
    with store.write() as conn:
        res = candles.insert_columns(conn, EX, SYM, TF, cols)
    expect = [(next(p for p in pre if p[0] == base[i][0]), base[i]) for i in order.tolist()
              if i % 35 == 0]
    assert (res.inserted, res.unchanged) == (1000 - len(pre), len(pre) - len(expect))
    assert res.conflicts == expect
    with store.read() as conn:
        got = candles.range_rows(conn, EX, SYM, TF, T, T + 1000 * STEP)
    assert got == sorted({**{r[0]: r for r in base}, **{p[0]: p for p in pre}}.values())


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


def test_scoring_waits_until_the_target_candle_has_closed(store: Store) -> None:
    data = rows(5)
    f = ForecastRow("naive", "naive-1", EX, SYM, TF, data[0][0], data[2][0], 2, data[0][4],
                    None, None, T)
    with store.write() as conn:
        candles.insert(conn, EX, SYM, TF, data)
        insert_forecasts(conn, [f])
        assert score(conn, data[2][0] + STEP - 1, TF, STEP) == 0  # target still open
        assert score(conn, data[2][0] + STEP, TF, STEP) == 1


def test_ids_come_from_the_back_end(store: Store) -> None:
    """Row ids are the store's own (rowid on SQLite, identity on PostgreSQL): ascending."""
    from storage import runs

    with store.write() as conn:
        a = runs.record(conn, model="seq2seq", started_at=T, exchange=EX, timeframe=TF,
                        status="rejected", finished_at=T + 1)
        b = runs.record(conn, model="seq2seq", started_at=T + 1, exchange=EX, timeframe=TF,
                        status="accepted", finished_at=T + 2)
        runs.set_meta(conn, "k", "v1")
        runs.set_meta(conn, "k", "v2")
        runs.set_meta(conn, "k", "v3", overwrite=False)
    assert b > a > 0
    with store.read() as conn:
        assert runs.latest(conn, "seq2seq", status="accepted")["id"] == b  # type: ignore[index]
        assert runs.get_meta(conn, "k") == "v2"


def test_checkpoints_are_kept_as_bytes_newest_first_and_pruned(store: Store) -> None:
    blobs = [bytes(range(256)) * 40, b"", b"\x00" * 3, bytes([255, 0, 39, 92]) * 1000]
    with store.write() as conn:
        ids = [ckpts.put(conn, model="seq2seq", model_version=f"v{i}", exchange=EX,
                         timeframe=TF, created_at=T + i, format_version=2, data=b)
               for i, b in enumerate(blobs)]
        ckpts.put(conn, model="seq2seq", model_version="other", exchange="kraken",
                  timeframe=TF, created_at=T, format_version=2, data=b"k")
    with pytest.raises(StorageError):  # (model, exchange, timeframe, version) is unique
        with store.write() as conn:
            ckpts.put(conn, model="seq2seq", model_version="v0", exchange=EX, timeframe=TF,
                      created_at=T, format_version=2, data=b"again")
    with store.read() as conn:
        got = list(ckpts.newest_first(conn, "seq2seq", EX, TF))
    assert [c.id for c in got] == sorted(ids, reverse=True)
    assert [c.data for c in got] == blobs[::-1]
    assert all(isinstance(c.data, bytes) for c in got)
    assert got[0].model_version == "v3" and got[0].created_at == T + 3
    with store.write() as conn:
        assert ckpts.prune(conn, "seq2seq", EX, TF, keep=2) == 2
    with store.read() as conn:
        assert [c.model_version for c in ckpts.newest_first(conn, "seq2seq", EX, TF)] == [
            "v3", "v2"]
        assert len(list(ckpts.newest_first(conn, "seq2seq", "kraken", TF))) == 1


def test_every_read_query_runs_on_the_back_end(store: Store) -> None:
    """The read helpers of candles, forecasts, runs and reports, on a small scored store."""
    from storage import forecasts, reports, runs

    data = rows(30)
    fc = [ForecastRow(m, f"{m}-1", EX, SYM, TF, c[0], c[0] + h * STEP, h, c[4],
                      None if m == "naive" else c[4] - 1, None if m == "naive" else c[4] + 1, T)
          for c in data[:20] for h in (1, 5) for m in ("naive", "seq2seq")]
    with store.write() as conn:
        candles.insert(conn, EX, SYM, TF, data)
        candles.mark_empty(conn, EX, SYM, TF, [data[-1][0] + STEP], T)
        insert_forecasts(conn, fc)
        assert score(conn, T + 10**9) == len(fc)
        insert_forecasts(conn, [ForecastRow("naive", "naive-1", EX, SYM, TF, data[-1][0],
                                            data[-1][0] + 5 * STEP, 5, 1.0, None, None, T)])
        runs.record(conn, model="seq2seq", started_at=T, exchange=EX, timeframe=TF,
                    status="accepted", finished_at=T, data_end_ts=data[-1][0])
    with store.read() as conn:
        assert candles.series(conn) == [(EX, SYM, TF)]
        assert candles.oldest_ts(conn, EX, SYM, TF) == T
        assert candles.count(conn, EX, SYM, TF, T, T + 10 * STEP) == 10
        assert candles.empty_ts(conn, EX, SYM, TF, 0, 2 * T) == [data[-1][0] + STEP]
        assert candles.newest_ts(conn, EX, SYM, TF, at_or_before=T + 5 * STEP + 1) == (
            T + 5 * STEP)
        assert forecasts.pending_count(conn) == 1
        assert forecasts.max_issued(conn) == data[-1][0]
        mae = forecasts.recent_mae(conn, 0)
        assert [(r["model"], r["horizon"], r["n"]) for r in mae] == [
            ("naive", 1, 20), ("seq2seq", 1, 20), ("naive", 5, 20), ("seq2seq", 5, 20)]
        assert runs.last_attempt_end(conn, EX, TF) == data[-1][0]
        assert reports.busiest_series(conn) == (EX, TF)
        newest = reports.newest_forecasts(conn, EX, TF)
        assert {(r["model"], r["horizon"]) for r in newest} == {
            ("naive", 5), ("seq2seq", 1), ("seq2seq", 5)}
        assert reports.closes(conn, EX, SYM, TF, T, T + 2 * STEP) == [
            (c[0], c[4]) for c in data[:3]]
        stretch = reports.scored_stretch(conn, EX, TF, 5, T)
        assert len(stretch) == 40 and stretch[0]["actual"] == data[5][4]
        assert reports.newest_issue(conn) == data[-1][0]


def test_store_size_is_known(store: Store) -> None:
    before = store.store_size_bytes()
    assert before is not None and before > 0
    with store.write() as conn:
        candles.insert(conn, EX, SYM, TF, rows(5000))
    after = store.store_size_bytes()
    assert after is not None and after > before


def _fill_for_scoring(s: Store, n_scored: int) -> int:
    """n_scored forecasts scored, then 10 new unscored ones; returns `now`."""
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
    if s.backend == "postgresql":
        # What autovacuum does to a live store: scoring moved the rows out of the partial
        # index of unscored rows, VACUUM removes their dead entries (until then each scan
        # steps over them).
        with s.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE forecasts")
    else:
        with s.write() as conn:
            conn.exec_driver_sql("ANALYZE")  # as a long-lived store may have been
    with s.write() as conn:
        insert_forecasts(conn, new)
        candles.insert(conn, EX, SYM, TF, data[n_scored + 1:])
    return now


def test_scoring_work_does_not_grow_with_the_rows_already_scored_postgresql(
        pg_admin_url: str) -> None:
    """PostgreSQL's planner needs no `+ 0` hint: the shared buffers the scoring UPDATE
    touches follow the unscored rows, not the rows scored before."""
    import json

    from sqlalchemy import event

    from tests.pg_server import create_database, drop_database

    def buffers(n_scored: int) -> int:
        url = create_database(pg_admin_url)
        s = Store(url)
        try:
            s.open(now_ms=T)
            now = _fill_for_scoring(s, n_scored)
            plans: list[object] = []

            def before(conn, cursor, statement, params, context, many):  # type: ignore[no-untyped-def]
                if statement.lstrip().upper().startswith("UPDATE FORECASTS"):
                    statement = "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + statement
                return statement, params

            def after(conn, cursor, statement, params, context, many):  # type: ignore[no-untyped-def]
                if statement.startswith("EXPLAIN"):
                    plans.append(cursor.fetchone()[0])

            event.listen(s.engine, "before_cursor_execute", before, retval=True)
            event.listen(s.engine, "after_cursor_execute", after)
            with s.write() as conn:
                score(conn, now + 20 * STEP, TF, STEP)
            event.remove(s.engine, "before_cursor_execute", before)
            event.remove(s.engine, "after_cursor_execute", after)
            with s.read() as conn:
                assert conn.execute(text("select count(*) from forecasts where actual is null")
                                    ).scalar() == 1  # the last target never closes
            plan = plans[0]
            top = (json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"]
            return int(top.get("Shared Hit Blocks", 0)) + int(top.get("Shared Read Blocks", 0))
        finally:
            s.close()
            drop_database(pg_admin_url, url)

    small, big = buffers(500), buffers(20_000)
    assert big < 2 * small + 20, (small, big)


def _vm_steps(conn: Any, work: Callable[[], T_]) -> tuple[int, T_]:
    """SQLite virtual-machine steps (in units of 50) that `work` takes on `conn`, and its
    result: a measure of how many rows a statement walks that no machine's speed changes."""
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    raw = conn.connection.driver_connection
    raw.set_progress_handler(count, 50)
    try:
        got = work()
    finally:
        raw.set_progress_handler(None, 0)
    return steps[0], got


def test_scoring_work_does_not_grow_with_the_rows_already_scored(tmp_path: Path) -> None:
    """A daemon scores every tick for months: the work must follow the unscored rows,
    not the millions scored before (a planner choice once made it walk them all)."""

    def vm_steps(n_scored: int) -> int:
        s = Store(str(tmp_path / f"s{n_scored}.db"))
        s.open(now_ms=T)
        now = _fill_for_scoring(s, n_scored)
        with s.write() as conn:
            steps, scored = _vm_steps(conn, lambda: score(conn, now + 20 * STEP, TF, STEP))
        s.close()
        assert scored == 9  # the last target never closes
        return steps

    small, big = vm_steps(500), vm_steps(20_000)
    assert big < 2 * small + 20, (small, big)


def test_the_window_check_reads_the_window_not_the_store(tmp_path: Path) -> None:
    """The candle window's per-tick check counts the candles of its window: the work must
    not grow with the candles stored before it (without the symbols in the query, SQLite
    walked every candle of the exchange, every tick, for as long as the daemon ran; with
    ANALYZE statistics it may skip-scan instead, but the daemon never runs ANALYZE)."""

    def vm_steps(n_before: int) -> int:
        s = Store(str(tmp_path / f"c{n_before}.db"))
        s.open(now_ms=T)
        data = rows(n_before + 100)
        with s.write() as conn:
            for sym in (SYM, "BTC/EUR"):
                candles.insert(conn, EX, sym, TF, data)
        start, end = data[n_before][0], data[-1][0] + 1
        with s.read() as conn:
            steps, got = _vm_steps(conn, lambda: candles.counts(
                conn, EX, TF, (SYM, "BTC/EUR"), start, end))
        s.close()
        assert got == ({SYM: 100, "BTC/EUR": 100}, {})
        return steps

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


def test_writer_lock_is_exclusive_names_its_holder_and_is_released(store_url: str) -> None:
    """One writer per store (SQLite) or per exchange and timeframe (PostgreSQL); the second
    is refused with StoreBusy naming host and pid; release lets the next one in."""
    assert dialect.writer_lock_holder(store_url, EX, TF) is None
    lock = dialect.acquire_writer_lock(store_url, EX, TF)
    try:
        assert lock.is_alive()
        lock.ensure()
        holder = dialect.writer_lock_holder(store_url, EX, TF)
        assert holder is not None and f"pid {__import__('os').getpid()}" in holder
        with pytest.raises(StoreBusy, match=r"already holds.*") as info:
            dialect.acquire_writer_lock(store_url, EX, TF)
        assert holder in str(info.value)
    finally:
        lock.release()
    assert dialect.writer_lock_holder(store_url, EX, TF) is None
    with dialect.acquire_writer_lock(store_url, EX, TF):
        pass
    assert dialect.writer_lock_holder(store_url, EX, TF) is None


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

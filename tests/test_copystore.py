"""`tickcast copy-store`: SQLite -> PostgreSQL -> SQLite equals the source, row for row; a
copy killed mid-way and run again completes without duplicates; counts are checked; the
target's id sequences continue past the copied ids; what is refused, and why."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from daemon.commands import replay
from storage import Store, candles, dialect, migrations, runs
from tests.helpers import HOURLY, make_input, run_subprocess, small_cfg
from tests.helpers.stores import dump, query


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory, pair: dict[str, list[Any]]) -> Path:
    """A replayed store (candles, scored forecasts, training runs, checkpoints, replay
    metadata) plus a few confirmed no-trade candle times."""
    out = tmp_path_factory.mktemp("copy") / "source.db"
    replay.run(small_cfg(), make_input(pair, 360), start=pair["BTC/USD"][300][0], end=None,
               out=str(out), show_progress=False)
    s = Store(str(out))
    with s.write() as conn:
        candles.mark_empty(conn, "bitstamp", "BTC/USD", "1h", [1, 2, 3], 42)
    s.close()
    return out


@pytest.fixture(scope="module")
def big_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """55,000 real candles: several copy batches."""
    out = tmp_path_factory.mktemp("big") / "big.db"
    for f in HOURLY.values():
        p = run_subprocess("--db", str(out), "import", str(f))
        assert p.returncode == 0, p.stderr
    return out


def test_sqlite_to_postgresql_to_sqlite_equals_the_source(
        source: Path, pg_url: str, tmp_path: Path, cli: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    want = dump(source)
    assert all(want[t] for t in want), {t: len(r) for t, r in want.items()}
    assert cli("--db", str(source), "copy-store", "--to", pg_url) == 0
    assert dump(pg_url) == want
    back = tmp_path / "back.db"
    assert cli("--db", pg_url, "copy-store", "--to", str(back)) == 0
    assert dump(back) == want
    # Run again: nothing to write, nothing doubled.
    caplog.clear()
    with caplog.at_level("INFO"):
        assert cli("--db", str(source), "copy-store", "--to", pg_url) == 0
    assert f"{sum(len(r) for r in want.values())} rows read, 0 inserted or updated" in caplog.text
    assert dump(pg_url) == want
    # New rows in the target get ids past the copied ones.
    s = Store(pg_url)
    try:
        with s.write() as conn:
            new_id = runs.record(conn, model="seq2seq", started_at=1, status="failed")
    finally:
        s.close()
    assert new_id == max(r[0] for r in want["training_runs"]) + 1


def test_a_copy_killed_mid_way_and_run_again_completes_without_duplicates(
        big_source: Path, store_url: str) -> None:
    env = {"TICKCAST_CRASH_AT": "after-copy-batch:2"}
    p = run_subprocess("--db", str(big_source), "copy-store", "--to", store_url, env=env)
    assert p.returncode == 137, p.stderr[-2000:]
    n = query(store_url, "select count(*) from candles")[0][0]
    assert 0 < n < query(big_source, "select count(*) from candles")[0][0]
    p = run_subprocess("--db", str(big_source), "copy-store", "--to", store_url)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "row counts equal in every table" in p.stdout
    assert dump(store_url) == dump(big_source)


def test_counts_that_differ_after_the_copy_exit_74_naming_the_table(
        source: Path, store_url: str, cli: Any, caplog: pytest.LogCaptureFixture) -> None:
    s = Store(store_url)
    s.open(0)
    with s.write() as conn:
        candles.insert(conn, "kraken", "BTC/USD", "1h", [(3_600_000, 1.0, 2.0, 0.5, 1.5, 1.0)])
    s.close()
    assert cli("--db", str(source), "copy-store", "--to", store_url) == 74
    n = len(dump(source)["candles"])
    assert f"candles: {n} in the source, {n + 1} in the target" in caplog.text


def test_a_source_of_another_schema_version_is_refused_before_the_target_exists(
        tmp_path: Path, cli: Any, caplog: pytest.LogCaptureFixture) -> None:
    old = Store(str(tmp_path / "old.db"))
    migrations.migrate(old.engine, now_ms=0, target=migrations.LATEST - 1)
    old.close()
    target = tmp_path / "new.db"
    assert cli("--db", str(tmp_path / "old.db"), "copy-store", "--to", str(target)) == 74
    assert f"schema version {migrations.LATEST - 1}" in caplog.text
    assert not target.exists()


def test_a_target_a_daemon_writes_to_is_refused(source: Path, store_url: str, cli: Any,
                                                caplog: pytest.LogCaptureFixture) -> None:
    with dialect.acquire_writer_lock(store_url, "bitstamp", "1h"):
        assert cli("--db", str(source), "copy-store", "--to", store_url) == 75
    assert "a tickcast run is writing to" in caplog.text
    if dialect.sqlite_path(store_url) is not None:
        assert not Path(store_url).exists()


def test_the_pg_target_url_is_never_shown_with_its_password(source: Path) -> None:
    p = run_subprocess("--db", str(source), "copy-store", "--to",
                       "postgresql://tickcast:s3cret@127.0.0.1:1/none?connect_timeout=2")
    assert p.returncode == 75, p.stderr[-2000:]
    assert "s3cret" not in p.stderr + p.stdout
    assert os.path.exists(source)

"""Every command on PostgreSQL does what it does on SQLite: import (bad lines named, conflicts
kept, refused files store nothing), backfill, replay --out and --from-db, report (same
numbers), and the configured timeouts reach every connection. Each test gets a fresh
database (skipped in one line without TICKCAST_TEST_PG_URL)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from daemon import wiring
from daemon.config import settings
from storage import Store
from tests.emulator import ExchangeEmulator
from tests.helpers import (
    COLS,
    SCRIPT_CFG,
    emulator_config,
    kill_9_once,
    write_config,
    write_data,
)
from tests.helpers.stores import candle_times, dump, no_duplicate_forecasts, query

HEADER = "ts_ms,open,high,low,close,volume"
T = 1_700_000_040_000


def good(i: int, close: float = 101) -> str:
    return f"{T + i * 60_000},100,102,99,{close},1.5"


def test_the_configured_timeouts_reach_every_connection(pg_url: str) -> None:
    for given, shown in ((60000, "1min"), (1500, "1500ms"), (0, None)):
        cfg = settings.load(None, env={}, overrides={
            "storage.url": pg_url, "storage.statement_timeout_ms": given,
            "storage.busy_timeout_ms": 2500})
        store = wiring.open_configured_store(cfg, 0)
        try:
            with store.read() as conn:
                got = conn.exec_driver_sql("SHOW statement_timeout").scalar()
                server = conn.exec_driver_sql(
                    "SELECT boot_val FROM pg_settings WHERE name = 'statement_timeout'").scalar()
                assert got == (shown or (server if server != "0" else "0"))
                assert conn.exec_driver_sql("SHOW lock_timeout").scalar() == "2500ms"
        finally:
            store.close()


def test_import_on_postgresql_names_bad_lines_keeps_conflicts_and_refuses_whole_files(
        pg_url: str, tmp_path: Path, cli: Any, caplog: pytest.LogCaptureFixture,
        capsys: pytest.CaptureFixture[str]) -> None:
    seconds = tmp_path / "bitstamp_BTC-EUR_1m_s.csv"
    seconds.write_text(HEADER + "\n" + "\n".join(f"{T // 1000 + 60 * i},1,2,0.5,1,1"
                                                  for i in range(5)) + "\n")
    assert cli("--db", pg_url, "import", str(seconds)) == 65
    assert "seconds" in caplog.text
    assert query(pg_url, "select count(*) from candles") == []  # not even created
    f = tmp_path / "bitstamp_BTC-USD_1m_a.csv"
    rows = [good(i) for i in range(1200)]
    rows[3] = f"{T + 3 * 60_000},100,98,99,101,1.5"
    rows[7] = f"{T + 7 * 60_000},abc,102,99,101,1.5"
    f.write_text(HEADER + "\n" + "\n".join(rows) + "\n")  # >= 500 rows: the COPY path
    assert cli("--db", pg_url, "import", str(f)) == 0
    assert "line 5: high < low" in caplog.text
    assert "line 9: open is not a number: 'abc'" in caplog.text
    assert "1198 stored" in capsys.readouterr().out
    g = tmp_path / "bitstamp_BTC-USD_1m_b.csv"
    g.write_text(HEADER + "\n" + "\n".join([good(0, 100.5)] + [good(i) for i in range(1, 600)])
                 + "\n")
    assert cli("--db", pg_url, "import", str(g)) == 0
    out = capsys.readouterr().out
    assert "2 stored, 597 already stored, 1 conflicts" in out, out  # lines 5, 9 were bad
    assert "keeping the stored one" in caplog.text
    assert query(pg_url, f"select close from candles where ts = {T}") == [(101.0,)]
    assert query(pg_url, "select count(*) from candles") == [(1200,)]


def test_backfill_into_postgresql_stores_what_it_stores_into_sqlite(
        pg_url: str, tmp_path: Path, emulator: ExchangeEmulator, cli: Any) -> None:
    cfg = emulator_config(tmp_path, emulator, model={"train_window": 600})
    lite = tmp_path / "b.db"
    assert cli("--config", str(cfg), "--db", str(lite), "backfill") == 0
    assert cli("--config", str(cfg), "--db", pg_url, "backfill") == 0
    for sym in ("BTC/USD", "BTC/EUR"):
        assert candle_times(pg_url, sym) == candle_times(lite, sym) != []
    assert dump(pg_url)["candles"] == dump(lite)["candles"]
    # Run again: resumes from the store, stores nothing twice.
    assert cli("--config", str(cfg), "--db", pg_url, "backfill") == 0
    assert dump(pg_url)["candles"] == dump(lite)["candles"]


def test_replay_into_postgresql_equals_replay_into_sqlite_and_so_does_the_report(
        pg_url: str, pg_admin_url: str, tmp_path: Path, pair: dict[str, list[Any]], cli: Any,
        capsys: pytest.CaptureFixture[str]) -> None:
    from tests.pg_server import create_database, drop_database

    files = [str(f) for f in write_data(tmp_path, pair, 380)]
    cfg = str(write_config(tmp_path / "c.toml", SCRIPT_CFG))
    lite = tmp_path / "r.db"
    args = ["--config", cfg, "replay", "--data", *files, "--start", "2020-01-14"]
    assert cli(*args, "--out", str(lite)) == 0
    assert cli(*args, "--out", pg_url) == 0
    sql = f"select {COLS} from forecasts order by model, symbol, issued_ts, horizon"
    want = query(lite, sql)
    assert want and query(pg_url, sql) == want
    assert query(pg_url, "select status, model_version from training_runs order by id") == \
        query(lite, "select status, model_version from training_runs order by id")
    # Again into the same --out: a resume with nothing left to do, nothing doubled.
    assert cli(*args, "--out", pg_url) == 0
    assert query(pg_url, sql) == want and no_duplicate_forecasts(pg_url)
    capsys.readouterr()
    reports = []
    for db in (str(lite), pg_url):
        assert cli("--config", cfg, "--db", db, "report", "--json") == 0
        reports.append(json.loads(capsys.readouterr().out))
    # The same numbers, up to the last bits of a sum taken in another order.
    assert reports[0]["rows"] and reports[0]["rows"] == [
        {k: pytest.approx(v, rel=1e-12) if isinstance(v, float) else v for k, v in r.items()}
        for r in reports[1]["rows"]]
    # --from-db: the PostgreSQL store's candles replayed into another PostgreSQL store.
    out = create_database(pg_admin_url)
    try:
        assert cli("--config", cfg, "--db", pg_url, "replay", "--from-db", "--start",
                   "2020-01-14", "--out", out) == 0
        got = query(out, sql)
        assert got == want
    finally:
        drop_database(pg_admin_url, out)


def test_replay_refuses_the_live_postgresql_store_as_its_out(
        pg_url: str, tmp_path: Path, pair: dict[str, list[Any]], cli: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    files = [str(f) for f in write_data(tmp_path, pair, 340)]
    assert cli("--db", pg_url, "replay", "--data", *files, "--out",
               pg_url.replace("postgresql://", "postgresql+psycopg://")) == 2
    assert "--out is the live store" in caplog.text
    s = Store(pg_url)
    try:
        with s.engine.connect() as conn:
            assert not conn.exec_driver_sql(
                "select count(*) from pg_tables where tablename = 'forecasts'").scalar()
    finally:
        s.close()


def test_a_replay_into_postgresql_killed_and_restarted_ends_with_the_clean_rows(
        pg_url: str, tmp_path: Path, pair: dict[str, list[Any]]) -> None:
    import subprocess
    import sys

    from tests.helpers import ROOT, env_without, run_subprocess

    files = [str(f) for f in write_data(tmp_path, pair, 460)]
    cfg = str(write_config(tmp_path / "c.toml", SCRIPT_CFG))
    args = ["--config", cfg, "replay", "--data", *files, "--start", "2020-01-14"]
    clean = tmp_path / "clean.db"
    p = run_subprocess(*args, "--out", str(clean), timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    sql = f"select {COLS} from forecasts order by model, symbol, issued_ts, horizon"
    want = query(clean, sql)

    def ticks() -> int:
        got = query(pg_url, "select count(distinct issued_ts) from forecasts")
        return int(got[0][0]) if got else 0

    total = query(clean, "select count(distinct issued_ts) from forecasts")[0][0]
    proc = subprocess.Popen([sys.executable, "-m", "daemon", *args, "--out", pg_url],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=env_without(), cwd=ROOT)
    kill_9_once(proc, lambda: ticks() >= total // 3, f"{total // 3} of {total} ticks committed")
    assert ticks() < total
    p = run_subprocess(*args, "--out", pg_url, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    assert query(pg_url, sql) == want and no_duplicate_forecasts(pg_url)

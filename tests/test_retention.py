"""`storage.keep_forecast_rows_days`: the live daemon deletes old scored forecasts in small
batches on a scheduler thread of its own; the accuracy sums keep the history, so
forecast_accuracy and `report` do not change, and `report` says from when rows exist."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from daemon.config import settings
from daemon.core.clock import ScaledClock, SimClock
from daemon.core.errors import ConfigError
from daemon.core.series import Series
from daemon.live.retention import Retention
from daemon.live.scheduling import DaemonSchedule
from storage import Store, StoreBusy, candles, forecasts
from storage.forecasts import ForecastRow
from tests.helpers import T0, wait_until
from tests.helpers.stores import new_store

STEP = 60_000
DAY = 86_400_000
EX, TF = "bitstamp", "1m"
SERIES = Series(EX, ("BTC/USD",), TF)


def _four_days(store: Store) -> int:
    """Forecasts of naive and drift every 10 minutes over four days, scored but for the last
    hour's (their targets never arrive); returns the end."""
    n = 4 * 144
    data = [(T0 + i * 10 * STEP, 100.0, 110.0, 95.0, 100.0 + (i % 7), 1.0) for i in range(n)]
    rows = [ForecastRow(m, f"{m}-2", EX, "BTC/USD", TF, c[0], c[0] + h * 10 * STEP, 10 * h,
                        c[4] + 0.5, c[4] - 2, c[4] + 3, c[0] + STEP)
            for c in data for m in ("naive", "drift") for h in (1, 3)]
    with store.write() as conn:
        candles.insert(conn, EX, "BTC/USD", TF, data[:-6])
        forecasts.insert(conn, rows)
        forecasts.score(conn, data[-1][0] + STEP)
    return data[-1][0] + STEP


def _accuracy(store: Store) -> list[dict[str, Any]]:
    with store.read() as conn:
        return forecasts.accuracy(conn)


def _count(store: Store, where: str) -> int:
    with store.read() as conn:
        return int(conn.execute(text(f"select count(*) from forecasts where {where}")).scalar())


def test_old_scored_rows_go_in_batches_and_the_accuracy_stays(
        store_url: str, stores: list[Store]) -> None:
    s = new_store(stores, store_url)
    s.open(now_ms=T0)
    end = _four_days(s)
    before, unscored = _accuracy(s), _count(s, "actual is null")
    cutoff = end - 2 * DAY
    old = _count(s, f"issued_ts < {cutoff} and actual is not null")
    keep = Retention(s, SERIES, SimClock(end), 2, threading.Event(), batch_rows=37, pause_s=0)
    assert keep.run_once() == old > 37 * 5
    assert _count(s, f"issued_ts < {cutoff} and actual is not null") == 0
    assert _count(s, f"issued_ts >= {cutoff}") > 0 and _count(s, "actual is null") == unscored
    assert _accuracy(s) == before  # the sums keep every day
    assert keep.run_once() == 0  # nothing more is due


def test_zero_keeps_every_row_and_a_stop_ends_a_pass(tmp_path: Path) -> None:
    s = Store(str(tmp_path / "k.db"))
    s.open(now_ms=T0)
    end = _four_days(s)
    rows = _count(s, "1 = 1")
    assert Retention(s, SERIES, SimClock(end + 99 * DAY), 0, threading.Event()).run_once() == 0
    assert _count(s, "1 = 1") == rows
    stop = threading.Event()
    stop.set()
    assert Retention(s, SERIES, SimClock(end), 1, stop, batch_rows=10).run_once() == 0
    s.close()


def test_a_busy_store_is_left_for_the_next_pass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                caplog: pytest.LogCaptureFixture) -> None:
    s = Store(str(tmp_path / "b.db"))
    s.open(now_ms=T0)
    end = _four_days(s)

    def busy(*a: Any, **k: Any) -> Any:
        raise StoreBusy("store is locked")

    monkeypatch.setattr(forecasts, "delete_scored", busy)
    assert Retention(s, SERIES, SimClock(end), 1, threading.Event()).run_once() == 0
    assert "retention: store is locked" in caplog.text
    s.close()


def test_the_schedule_runs_retention_on_its_own_thread() -> None:
    """Hourly by the daemon's clock (here 3600x: every wall second), on the "maintenance"
    executor, never on the worker a tick or the watchdog runs on."""
    tick_threads: list[str] = []
    keep_threads: list[str] = []
    s = DaemonSchedule(clock=ScaledClock(T0, time.time(), 3600.0), speed=3600.0,
                       step_ms=3_600_000, poll_delay_s=0.0,
                       tick=lambda: tick_threads.append(threading.current_thread().name),
                       heartbeat=lambda: None, heartbeat_minutes=60,
                       retention=lambda: keep_threads.append(threading.current_thread().name))
    job = s.scheduler.get_job("retention")
    assert job is not None and job.executor == "maintenance"
    runner = threading.Thread(target=s.run, daemon=True)
    runner.start()
    try:
        wait_until(lambda: len(keep_threads) >= 2 and len(tick_threads) >= 2,
                   "two retention passes and two ticks")
    finally:
        s.shutdown()
        runner.join(30)
    assert not set(keep_threads) & set(tick_threads)


def test_the_key_is_documented_and_checked() -> None:
    assert settings.load(None, env={}).storage.keep_forecast_rows_days == 0  # keep every row
    cfg = settings.load(None, env={"TICKCAST_STORAGE__KEEP_FORECAST_ROWS_DAYS": "90"})
    assert cfg.storage.keep_forecast_rows_days == 90
    with pytest.raises(ConfigError, match="keep_forecast_rows_days"):
        settings.load(None, env={"TICKCAST_STORAGE__KEEP_FORECAST_ROWS_DAYS": "-1"})


def test_report_says_from_when_rows_exist(tmp_path: Path, cli: Any,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "r.db"
    s = Store(str(db))
    s.open(now_ms=T0)
    end = _four_days(s)
    capsys.readouterr()
    assert cli("--db", str(db), "report") == 0
    assert "forecast rows exist from" not in capsys.readouterr().out
    before = _accuracy(s)
    Retention(s, SERIES, SimClock(end), 2, threading.Event()).run_once()
    s.close()
    assert cli("--db", str(db), "report") == 0
    out = capsys.readouterr().out
    assert "forecast rows exist from" in out and "still counts them" in out
    assert cli("--db", str(db), "report", "--json") == 0
    got = json.loads(capsys.readouterr().out)
    assert got["rows_deleted_before"] is True and got["forecast_rows_from_ms"] > T0
    def key(r: dict[str, Any]) -> tuple[Any, ...]:
        return r["model"], r["symbol"], r["horizon"]

    assert sorted(got["rows"], key=key) == sorted(before, key=key)

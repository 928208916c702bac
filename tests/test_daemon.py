"""`tickcast run` as a real subprocess: scheduling, systemd notify, one instance, clean stop."""

from __future__ import annotations

import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import MINUTE, ROOT, run_subprocess, write_config
from tests.helpers.daemon import DaemonHarness


@pytest.fixture
def harness(tmp_path: Path, minutes: dict[str, list[Any]]) -> Iterator[DaemonHarness]:
    h = DaemonHarness(tmp_path, minutes)
    yield h
    h.close()


def counts(h: DaemonHarness) -> dict[str, tuple[int, int]]:
    return {m: (n, s) for m, n, s in h.query(
        "select model, count(*), sum(actual is not null) from forecasts group by model")}


def test_the_daemon_ingests_trains_forecasts_scores_and_talks_to_systemd(
        harness: DaemonHarness) -> None:
    p = harness.start()
    harness.wait_for(lambda: harness.notify.has("READY=1"), 30, "READY=1")
    harness.wait_for(lambda: all(c[1] > 0 for c in counts(harness).values())
                     and set(counts(harness)) == {"seq2seq", "naive", "drift"}, 60,
                     "scored forecasts of all three models")
    syms = dict(harness.query("select symbol, count(*) from candles group by symbol"))
    assert set(syms) == {"BTC/USD", "BTC/EUR"} and min(syms.values()) >= 300
    assert harness.query("select count(*) from training_runs where status = 'accepted'")[0][0] >= 1
    harness.wait_for(lambda: len(harness.notify.times("WATCHDOG=1")) >= 3, 20, "watchdog pings")
    assert harness.notify.has("STATUS=")
    code, took = harness.stop(p)
    assert code == 0 and took < 10
    assert harness.notify.has("STOPPING=1")
    # every stored candle is one the exchange had closed, with the exchange's values
    truth = {c[0]: tuple(c) for c in harness.emu.closed_candles("BTC/USD")}
    for row in harness.query("select ts, open, high, low, close, volume from candles "
                             "where symbol = 'BTC/USD'"):
        assert truth[row[0]] == row


def test_status_reports_model_training_pending_and_recent_error(
        harness: DaemonHarness) -> None:
    import json

    p = harness.start()
    harness.wait_for(lambda: counts(harness).get("seq2seq", (0, 0))[1] > 0, 60, "scored")
    env = {"TICKCAST_DAEMON__CLOCK": harness.clock.spec()}
    live = run_subprocess("--config", str(harness.config), "--db", str(harness.db), "status",
                          "--json", env=env)
    assert live.returncode == 0, live.stderr
    data = json.loads(live.stdout)
    assert data["daemon_running"] is True
    assert {s["symbol"] for s in data["series"]} == {"BTC/USD", "BTC/EUR"}
    assert all(s["lag_s"] is not None and s["lag_s"] < 600 for s in data["series"])
    assert data["model"]["version"] and data["last_training"]["status"] in ("accepted",
                                                                           "rejected")
    assert data["pending_forecasts"] > 0
    assert {r["model"] for r in data["mae_24h"]} == {"seq2seq", "naive", "drift"}
    harness.stop(p)
    text = run_subprocess("--config", str(harness.config), "--db", str(harness.db), "status",
                          env=env)
    assert "daemon not running" in text.stdout and "model:" in text.stdout


def test_a_second_instance_is_refused_and_a_kill_9_restart_resumes_cleanly(
        harness: DaemonHarness) -> None:
    first = harness.start()
    harness.wait_for(lambda: harness.notify.has("READY=1"), 30, "READY=1")
    harness.wait_for(lambda: counts(harness).get("seq2seq", (0, 0))[0] > 0, 60, "forecasts")
    second = harness.start()
    assert second.wait(20) == 75
    assert "already holds the store" in harness.log()
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    issued_before = harness.query("select max(issued_ts) from forecasts")[0][0]
    harness.start()
    harness.wait_for(lambda: (harness.query("select max(issued_ts) from forecasts")[0][0] or 0)
                     > issued_before + 5 * MINUTE, 60, "forecasts after the restart")
    harness.stop(harness.procs[-1])
    assert harness.query("select count(*) from (select 1 from forecasts group by model, symbol, "
                         "issued_ts, horizon having count(*) > 1)")[0][0] == 0
    for sym in ("BTC/USD", "BTC/EUR"):
        ts = [r[0] for r in harness.query("select ts from candles where symbol = ? order by ts",
                                          sym)]
        assert all(b - a == MINUTE for a, b in zip(ts, ts[1:], strict=False)), "hole in candles"
    assert harness.query("pragma integrity_check")[0][0] == "ok"


def test_an_exchange_outage_keeps_the_watchdog_alive_and_leaves_no_hole(
        harness: DaemonHarness) -> None:
    p = harness.start()
    harness.wait_for(lambda: counts(harness).get("naive", (0, 0))[0] > 0, 30, "first forecasts")
    harness.emu.add_fault("http503")
    t_out = time.monotonic()
    time.sleep(8)  # eight simulated minutes of 503s
    pings = [t for t in harness.notify.times("WATCHDOG=1") if t > t_out + 2]
    assert len(pings) >= 4, "the watchdog went quiet during an exchange outage"
    assert p.poll() is None
    harness.emu.clear_faults()
    newest = harness.query("select max(ts) from candles")[0][0]
    harness.wait_for(lambda: (harness.query("select min(m) from (select max(ts) m from candles "
                                            "group by symbol)")[0][0] or 0) > newest + 3 * MINUTE,
                     30, "recovery")
    harness.stop(p)
    for sym in ("BTC/USD", "BTC/EUR"):
        ts = [r[0] for r in harness.query("select ts from candles where symbol = ? order by ts",
                                          sym)]
        assert all(b - a == MINUTE for a, b in zip(ts, ts[1:], strict=False)), "outage left a hole"
    assert "exchange error" in " ".join(m for _, m in harness.notify.messages) or \
        "giving up" in harness.log()


def test_a_hung_tick_stops_the_watchdog_pings(tmp_path: Path,
                                              minutes: dict[str, list[Any]]) -> None:
    h = DaemonHarness(tmp_path, minutes, exchange={"timeout_ms": 120_000, "max_retries": 0},
                      watchdog_usec=1_000_000)
    try:
        p = h.start()
        h.wait_for(lambda: counts(h).get("naive", (0, 0))[0] > 0, 30, "first forecasts")
        h.emu.add_fault("hang")
        time.sleep(9)
        recent = [t for t in h.notify.times("WATCHDOG=1") if t > time.monotonic() - 2.5]
        assert recent == [], "pings continued although no tick completes"
        assert p.poll() is None
        code, took = h.stop(p)
        assert code == 0 and took < 10  # the request in flight is abandoned, not waited for
    finally:
        h.close()


def test_training_longer_than_the_poll_interval_does_not_delay_ticks(
        tmp_path: Path, minutes: dict[str, list[Any]]) -> None:
    h = DaemonHarness(tmp_path, minutes, speed=120.0,
                      model={"initial_steps": 600, "hidden": 24, "retrain_every": 1000})
    try:
        p = h.start()
        h.wait_for(lambda: h.query("select count(*) from training_runs")[0][0] >= 1 if
                   h.query("select count(*) from training_runs") else False, 90, "training")
        h.stop(p)
        (started, finished, wall), = h.query(
            "select started_at, finished_at, wall_seconds from training_runs")
        assert wall > 2.0, "training was too short to prove anything"
        issued = [r[0] for r in h.query(
            "select distinct created_at from forecasts where model = 'naive' and created_at "
            "between ? and ? order by 1", started, finished)]
        sim_minutes = (finished - started) / MINUTE
        assert len(issued) >= 0.6 * sim_minutes, (len(issued), sim_minutes)
        gaps = [b - a for a, b in zip(issued, issued[1:], strict=False)]
        assert max(gaps) <= 3 * MINUTE
    finally:
        h.close()


def test_invalid_config_exits_78_naming_the_key(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.toml", {"model": {"retrain_every": -3}})
    p = run_subprocess("--config", str(cfg), "--db", str(tmp_path / "x.db"), "run", timeout=60)
    assert p.returncode == 78 and "model.retrain_every" in p.stderr
    p = run_subprocess("--db", str(tmp_path / "x.db"), "run",
                       env={"TICKCAST_EXCHANGE__ID": "not-an-exchange"}, timeout=60)
    assert p.returncode == 78 and "exchange.id" in p.stderr


def test_state_directory_holds_the_store_by_default(tmp_path: Path) -> None:
    from daemon import settings

    cfg = settings.load(None, env={"STATE_DIRECTORY": str(tmp_path)})
    assert cfg.storage.url == f"sqlite:///{tmp_path / 'tickcast.db'}"


UNIT = ROOT / "deploy" / "tickcast.service"


def _unit_for_here(tmp_path: Path) -> Path:
    """The shipped unit with ExecStart pointed at this environment's tickcast."""
    exe = shutil.which("tickcast") or str(Path(__import__("sys").executable).with_name("tickcast"))
    text = UNIT.read_text().replace("/opt/tickcast/venv/bin/tickcast", exe)
    out = tmp_path / "tickcast.service"
    out.write_text(text)
    return out


def test_unit_file_declares_the_contract() -> None:
    text = UNIT.read_text()
    for line in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "RestartPreventExitStatus=78",
                 "DynamicUser=yes", "StateDirectory=tickcast", "ConfigurationDirectory=tickcast",
                 "ProtectSystem=strict", "NoNewPrivileges=yes"):
        assert line in text, line


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed on this machine")
def test_systemd_analyze_verify_and_security(tmp_path: Path) -> None:
    unit = _unit_for_here(tmp_path)
    v = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert v.returncode == 0, v.stderr
    s = subprocess.run(["systemd-analyze", "security", "--offline=true", "--threshold=20",
                        str(unit)], capture_output=True, text=True)
    assert s.returncode == 0, s.stdout[-2000:] + s.stderr
    score = float(s.stdout.split("Overall exposure level for tickcast.service:")[1].split()[0])
    assert score <= 2.0


def test_ticks_fired_together_run_one_at_a_time_and_none_is_lost(
        tmp_path: Path, minutes: dict[str, list[Any]]) -> None:
    """The start-up catch-up and the first scheduled tick (or a re-alignment after a clock
    step) can fire at once on the scheduler's two threads: they must not run side by side,
    and the ones that found a tick running make it go round once more."""
    import torch

    from daemon import settings
    from daemon.service import Daemon

    torch_threads = torch.get_num_threads()
    h = DaemonHarness(tmp_path, minutes, watchdog_usec=None)
    d = Daemon(settings.load(h.config, env={}, overrides={"storage.url": str(h.db)}), env={})
    try:
        real = d.pipeline.tick
        inside: list[int] = []
        most = [0]
        calls = [0]

        def traced(now_ms: int, **kw: Any) -> Any:
            inside.append(1)
            most[0] = max(most[0], len(inside))
            calls[0] += 1
            try:
                time.sleep(0.4)  # long enough for the other threads to fire meanwhile
                return real(now_ms, **kw)
            finally:
                inside.pop()

        d.pipeline.tick = traced  # type: ignore[method-assign]
        threads = [threading.Thread(target=d.ticker.tick) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert most[0] == 1, "two ticks ran at the same time"
        assert calls[0] == 2, "a tick fired meanwhile must make the running one go round once"
        assert d.ticker.ticks == 2 and d.ticker.tick_errors == 0
        assert h.query("select count(*) from candles")[0][0] > 0
    finally:
        # Leave no training thread behind: it would share torch's global seed and thread
        # count with the tests that follow in this process and make their runs differ.
        d.stop.set()
        assert d.trainer.shutdown(wait_s=60)
        torch.set_num_threads(torch_threads)
        d.close()
        h.close()

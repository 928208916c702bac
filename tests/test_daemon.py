"""`tickcast run` as a real subprocess: scheduling, systemd notify, one instance, clean stop.

Every wait polls for the behaviour with a generous deadline (a busy machine only makes it
slower); assertions are about what happened, never about how long it took.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import MINUTE, ROOT, assert_no_holes, run_subprocess, wait_until, write_config
from tests.helpers.daemon import DaemonHarness


def counts(h: DaemonHarness) -> dict[str, tuple[int, int]]:
    return {m: (n, s) for m, n, s in h.query(
        "select model, count(*), sum(actual is not null) from forecasts group by model")}


def committed(h: DaemonHarness) -> tuple[set[tuple[Any, ...]], set[tuple[Any, ...]]]:
    """Keys of every committed candle and forecast."""
    return ({tuple(r) for r in h.query("select symbol, ts from candles")},
            {tuple(r) for r in h.query("select model, symbol, issued_ts, horizon from forecasts")})


def test_the_daemon_ingests_trains_forecasts_scores_and_talks_to_systemd(
        harness: DaemonHarness) -> None:
    p = harness.start()
    harness.wait_for(lambda: harness.notify.has("READY=1"), "READY=1")
    harness.wait_for(lambda: all(c[1] > 0 for c in counts(harness).values())
                     and set(counts(harness)) == {"seq2seq", "naive", "drift", "linear"},
                     "scored forecasts of all four models")
    syms = dict(harness.query("select symbol, count(*) from candles group by symbol"))
    assert set(syms) == {"BTC/USD", "BTC/EUR"} and min(syms.values()) >= 300
    assert harness.query("select count(*) from training_runs where status = 'accepted'")[0][0] >= 1
    harness.wait_for(lambda: len(harness.notify.times("WATCHDOG=1")) >= 3, "watchdog pings")
    assert harness.notify.has("STATUS=")
    before = committed(harness)
    assert harness.stop(p) == 0
    assert harness.notify.has("STOPPING=1")
    # A clean stop: the tick in flight was finished, not abandoned, and nothing committed
    # before the signal is gone.
    assert "stopped after" in harness.log() and "abandoning" not in harness.log()
    after = committed(harness)
    assert before[0] <= after[0] and before[1] <= after[1]
    assert harness.query("pragma integrity_check")[0][0] == "ok"
    # every stored candle is one the exchange had closed, with the exchange's values
    truth = {c[0]: tuple(c) for c in harness.emu.closed_candles("BTC/USD")}
    for row in harness.query("select ts, open, high, low, close, volume from candles "
                             "where symbol = 'BTC/USD'"):
        assert truth[row[0]] == row


def test_status_reports_model_training_pending_and_recent_error(
        harness: DaemonHarness) -> None:
    import json

    p = harness.start()
    harness.wait_for(lambda: counts(harness).get("seq2seq", (0, 0))[1] > 0, "scored seq2seq")
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
    assert {r["model"] for r in data["mae_24h"]} == {"seq2seq", "naive", "drift", "linear"}
    # Numbers for machines: seconds and milliseconds; who runs the daemon.
    (group,) = data["groups"]
    assert group["daemon"]["running"] and re.fullmatch(r"host \S+ pid \d+",
                                                       group["daemon"]["holder"])
    assert all(s["lag_ms"] // 1000 == s["lag_s"] for s in data["series"])
    assert data["model"]["age_s"] >= 0 and data["model"]["trained_at_ms"] > 0
    assert data["last_training"]["unaccepted_in_a_row"] >= 0
    assert {r["model"] for r in group["mase_24h"]} == {"seq2seq", "drift", "linear"}
    assert {r["horizon"] for r in group["mase_24h"]} == {1}
    assert all(r["mase"] > 0 and r["n"] > 0 for r in group["mase_24h"])
    harness.stop(p)
    text = run_subprocess("--config", str(harness.config), "--db", str(harness.db), "status",
                          env=env)
    assert "daemon not running" in text.stdout and "model: seq2seq" in text.stdout
    # Durations for people: "lag 45 s", "3 min old", "last training: accepted 2 min ago".
    assert re.search(r"lag \d+ (s|min)", text.stdout), text.stdout
    assert re.search(r"\d+ (s|min)( \d+ s)? old", text.stdout), text.stdout
    assert re.search(r"last training: (accepted|rejected) \d+ (s|min)", text.stdout)
    assert re.search(r"BTC/USD\s+drift \d\.\d{3} \(n=\d+\), linear \d\.\d{3} \(n=\d+\), "
                     r"seq2seq \d\.\d{3}", text.stdout)


def test_a_second_instance_is_refused_and_a_kill_9_restart_resumes_cleanly(
        harness: DaemonHarness) -> None:
    first = harness.start()
    harness.wait_for(lambda: harness.notify.has("READY=1"), "READY=1")
    harness.wait_for(lambda: counts(harness).get("seq2seq", (0, 0))[0] > 0, "forecasts")
    second = harness.start()
    assert second.wait(120) == 75
    assert "already holds the store" in harness.log()
    first.send_signal(signal.SIGKILL)
    first.wait(60)
    issued_before = harness.query("select max(issued_ts) from forecasts")[0][0]
    harness.start()
    harness.wait_for(lambda: (harness.query("select max(issued_ts) from forecasts")[0][0] or 0)
                     > issued_before + 5 * MINUTE, "forecasts after the restart")
    harness.stop(harness.procs[-1])
    assert harness.query("select count(*) from (select 1 from forecasts group by model, symbol, "
                         "issued_ts, horizon having count(*) > 1)")[0][0] == 0
    assert_no_holes(harness.db)
    assert harness.query("pragma integrity_check")[0][0] == "ok"


def test_an_exchange_outage_keeps_the_watchdog_alive_and_leaves_no_hole(
        harness: DaemonHarness) -> None:
    p = harness.start()
    harness.wait_for(lambda: counts(harness).get("naive", (0, 0))[0] > 0, "first forecasts")
    emu = harness.emu
    n0 = emu.request_count()
    emu.add_fault("http503")

    def refused() -> list[Any]:
        return [r for r in list(emu.requests)[n0:] if r.status == 503]

    harness.wait_for(lambda: bool(refused()), "the outage to begin")
    t_out = refused()[0].mono

    def pinged_during_outage() -> bool:
        pings = [t for t in harness.notify.times("WATCHDOG=1") if t > t_out]
        failed = any("exchange error" in s for s in harness.notify.statuses()) or \
            "giving up" in harness.log()
        return len(pings) >= 4 and failed

    harness.wait_for(pinged_during_outage, "watchdog pings while ticks fail on the outage")
    assert p.poll() is None
    assert all(r.status == 503 for r in list(emu.requests)[n0:]), "the outage had a gap"
    emu.clear_faults()
    newest = harness.newest_common()
    harness.wait_for(lambda: harness.newest_common() > newest + 3 * MINUTE, "recovery")
    assert harness.stop(p) == 0
    assert_no_holes(harness.db)


def test_a_hung_tick_stops_the_watchdog_pings(tmp_path: Path,
                                              minutes: dict[str, list[Any]]) -> None:
    h = DaemonHarness(tmp_path, minutes, exchange={"timeout_ms": 120_000, "max_retries": 0},
                      watchdog_usec=1_000_000)
    try:
        p = h.start()
        h.wait_for(lambda: counts(h).get("naive", (0, 0))[0] > 0, "first forecasts")
        h.emu.add_fault("hang")  # requests are held until the end of the test

        def refusals() -> int:
            return h.log().count("not pinging the watchdog")

        h.wait_for(lambda: refusals() >= 2, "the daemon to notice that no tick completes")
        pings = len(h.notify.times("WATCHDOG=1"))
        h.wait_for(lambda: refusals() >= 5, "three more watchdog periods")
        assert len(h.notify.times("WATCHDOG=1")) == pings, \
            "pings continued although no tick completes"
        assert p.poll() is None
        # The request in flight would take 120 s: the daemon abandons it and exits 0.
        try:
            code = h.stop(p, timeout=100)
        except subprocess.TimeoutExpired:
            pytest.fail("SIGTERM waited for the hung request instead of abandoning it")
        assert code == 0
        assert "abandoning the step in flight" in h.log()
        assert h.notify.has("STOPPING=1")
    finally:
        h.close()


def test_training_does_not_hold_up_the_ticks(tmp_path: Path,
                                             minutes: dict[str, list[Any]]) -> None:
    """A training that never ends here (a million steps) runs beside the ticks: ticks keep
    completing and storing forecasts while it runs, and SIGTERM still stops the daemon."""
    h = DaemonHarness(tmp_path, minutes, speed=120.0,
                      model={"initial_steps": 1_000_000, "epochs": 1e6, "hidden": 24,
                             "retrain_every": 1000})
    try:
        p = h.start()

        def ticks_while_training() -> list[int]:
            """Forecasts stored by each tick that ended while the model was training."""
            return [int(m.group(1)) for s in h.notify.statuses() if "; training" in s
                    for m in [re.search(r"; (\d+) forecasts", s)] if m]

        h.wait_for(lambda: sum(n > 0 for n in ticks_while_training()) >= 5,
                   "five ticks storing forecasts while the model trains")
        assert h.query("select count(*) from training_runs")[0][0] == 0, \
            "the training ended: it proves nothing about ticks beside a running training"
        assert h.stop(p) == 0
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
    from daemon.config import settings

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

    from daemon.config import settings
    from daemon.live.service import Daemon

    torch_threads = torch.get_num_threads()
    h = DaemonHarness(tmp_path, minutes, watchdog_usec=None)
    d = Daemon(settings.load(h.config, env={}, overrides={"storage.url": str(h.db)}), env={})
    threads = [threading.Thread(target=d.ticker.tick) for _ in range(3)]
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
                if calls[0] == 1:  # hold the first tick until the other two have fired
                    wait_until(lambda: all(t.ident is not None for t in threads)
                               and sum(t.is_alive() for t in threads) == 1,
                               "the other ticks to fire")
                return real(now_ms, **kw)
            finally:
                inside.pop()

        d.pipeline.tick = traced  # type: ignore[method-assign]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert most[0] == 1, "two ticks ran at the same time"
        assert calls[0] == 2, "a tick fired meanwhile must make the running one go round once"
        assert d.ticker.ticks == 2 and d.ticker.tick_errors == 0
        assert h.query("select count(*) from candles")[0][0] > 0
    finally:
        # Leave no training thread behind: it would share torch's global seed and thread
        # count with the tests that follow in this process and make their runs differ.
        d.stop.set()
        assert d.trainer.shutdown(wait_s=120)
        torch.set_num_threads(torch_threads)
        d.close()
        h.close()

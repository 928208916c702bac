"""Reliability scenarios with real processes, real SQLite files and real ccxt (issue 6).

The long ones are marked `slow` (deselect with -m 'not slow'); .ci/run runs them all.
"""

from __future__ import annotations

import os
import random
import resource
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.commands import replay
from daemon.core import crashpoints
from daemon.core.clock import SimClock
from daemon.core.series import Series
from daemon.pipeline import history
from daemon.pipeline.modelset import ModelSet
from daemon.pipeline.tick import Pipeline
from daemon.sources.calls import cool_down_after
from daemon.sources.exchange import CcxtSource
from storage import SCHEMA_VERSION, StorageError, Store
from tests.emulator import ExchangeEmulator
from tests.helpers import (
    HOUR,
    MINUTE,
    ROOT,
    SCRIPT_CFG,
    T0,
    assert_no_holes,
    env_without,
    invariants,
    issued_ticks,
    kill_9_once,
    make_input,
    rows,
    small_cfg,
    write_config,
    write_data,
)
from tests.helpers.daemon import DaemonHarness

SERIES_1H = Series("bitstamp", ("BTC/USD", "BTC/EUR"), "1h")


def _replay_case(tmp_path: Path, pair: dict[str, list[Any]], n: int) -> dict[str, Any]:
    files = write_data(tmp_path, pair, n)
    cfg = write_config(tmp_path / "c.toml", SCRIPT_CFG)
    base = [sys.executable, "-m", "daemon", "--config", str(cfg), "replay", "--data",
            *map(str, files), "--start", "2020-01-14"]
    clean = tmp_path / "clean.db"
    p = subprocess.run([*base, "--out", str(clean)], capture_output=True, text=True,
                       env=env_without(), cwd=ROOT, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    return {"base": base, "clean": clean, "want": rows(clean), "tmp": tmp_path}


@pytest.fixture
def replay_case(tmp_path: Path, pair: dict[str, list[Any]]) -> dict[str, Any]:
    return _replay_case(tmp_path, pair, 420)


@pytest.fixture
def long_replay_case(tmp_path: Path, pair: dict[str, list[Any]]) -> dict[str, Any]:
    return _replay_case(tmp_path, pair, 700)


# -- 1. kill -9 at random moments, many times in a row ---------------------------------

def _has_open(proc: subprocess.Popen[Any], path: Path | str) -> bool:
    """Whether the process holds `path` open (Linux /proc): it has opened its store."""
    try:
        return any(os.readlink(fd) == str(path) for fd in Path(f"/proc/{proc.pid}/fd").iterdir())
    except OSError:  # a descriptor closed while we looked: not yet, look again
        return False


@pytest.mark.slow
def test_replay_survives_thirty_kill_9_in_a_row(long_replay_case: dict[str, Any]) -> None:
    """Thirty runs in a row, each killed with SIGKILL at a point the test observes, chosen at
    random: as soon as the run has opened its store (start-up: migration, the replay's
    claim, the first tick), or once it has committed a few more ticks than the last run
    left (mid-replay). Never after a sleep, so every kill lands on any machine's speed,
    and never so near the end that the run could finish first."""
    replay_case = long_replay_case
    out = replay_case["tmp"] / "killed.db"
    total = issued_ticks(replay_case["clean"])
    rng = random.Random(2026)
    for kill in range(1, 31):
        done = issued_ticks(out)
        ahead = 0 if rng.random() < 0.25 else rng.randint(1, 12)
        target = min(done + ahead, 3 * total // 4)
        proc = subprocess.Popen([*replay_case["base"], "--out", str(out)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env=env_without(), cwd=ROOT)
        if ahead == 0:
            kill_9_once(proc, lambda p=proc: _has_open(p, out), f"kill {kill}: the store open")
        else:
            kill_9_once(proc, lambda t=target: issued_ticks(out) >= t,
                        f"kill {kill}: {target} of {total} ticks committed")
        if out.exists():
            invariants(out)
    p = subprocess.run([*replay_case["base"], "--out", str(out)], capture_output=True,
                       text=True, env=env_without(), cwd=ROOT, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    invariants(out)
    assert rows(out) == replay_case["want"]


@pytest.mark.slow
def test_the_daemon_survives_thirty_kill_9_in_a_row(tmp_path: Path,
                                                    minutes: dict[str, list[Any]]) -> None:
    """Thirty starts in a row, each killed with SIGKILL at a point the test observes, chosen
    at random: the store just opened (start-up), READY sent, or a new candle committed
    (a tick). Never after a sleep, so every kill lands on any machine's speed."""
    h = DaemonHarness(tmp_path, minutes, watchdog_usec=None)
    rng = random.Random(7)
    try:
        for kill in range(1, 31):
            ready, newest = len(h.notify.times("READY=1")), h.newest_common()
            point = rng.choice(("the store open", "READY=1", "a new candle committed"))
            p = h.start()
            reached = {"the store open": lambda p=p: _has_open(p, h.db),
                       "READY=1": lambda r=ready: len(h.notify.times("READY=1")) > r,
                       "a new candle committed": lambda n=newest: h.newest_common() > n}[point]
            kill_9_once(p, reached, f"kill {kill}: {point}")
            invariants(h.db)
        t_last = time.monotonic()
        p = h.start()
        h.wait_for(lambda: any(t > t_last for t in h.notify.times("READY=1"))
                   and h.newest_common() >= h.clock.now_ms() - 3 * MINUTE, "catching up")
        assert h.stop(p) == 0
        invariants(h.db)
        assert_no_holes(h.db)
        for sym in ("BTC/USD", "BTC/EUR"):
            truth = {c[0]: tuple(c) for c in h.emu.closed_candles(sym)}
            for r in h.query("select ts, open, high, low, close, volume from candles where "
                             "symbol = ?", sym):
                assert truth[r[0]] == r
    finally:
        h.close()


# -- 2. named crash points -------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("point", ["after-candles-commit:40", "before-forecasts-commit:30",
                                   "before-training-commit:2", "after-training-record:2",
                                   "mid-migration:2"])
def test_a_crash_at_a_named_point_then_a_rerun_equals_a_clean_run(
        replay_case: dict[str, Any], point: str) -> None:
    out = replay_case["tmp"] / f"crash-{point.split(':')[0]}.db"
    env = env_without()
    env[crashpoints.ENV] = point
    p = subprocess.run([*replay_case["base"], "--out", str(out)], capture_output=True,
                       text=True, env=env, cwd=ROOT, timeout=300)
    assert p.returncode == crashpoints.EXIT_CODE, p.stderr[-1500:]
    assert f"crash point {point.split(':')[0]}" in p.stderr
    if point.startswith("checkpoint"):
        debris = list(out.with_name(out.name + ".checkpoints").glob(".tmp-*"))
        assert debris, "the crash should have left a temp checkpoint behind"
    p = subprocess.run([*replay_case["base"], "--out", str(out)], capture_output=True,
                       text=True, env=env_without(), cwd=ROOT, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    invariants(out)
    assert rows(out) == replay_case["want"]


def test_mid_migration_crash_leaves_the_previous_version(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    code = (f"import os; os.environ[{crashpoints.ENV!r}] = 'mid-migration:2'\n"
            "from daemon.wiring import open_store\n"
            f"open_store({str(db)!r}, 0)\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       env=env_without(), timeout=60)
    assert p.returncode == crashpoints.EXIT_CODE
    con = sqlite3.connect(db)
    assert con.execute("select max(version) from schema_version").fetchone()[0] == 1
    assert con.execute("select count(*) from sqlite_master where name = 'forecasts_target'"
                       ).fetchone()[0] == 0
    con.close()
    s = Store(str(db))
    assert s.open(0) == SCHEMA_VERSION


def test_a_crash_point_that_does_not_exist_is_refused_on_both_sides() -> None:
    """A typo in TICKCAST_CRASH_AT would never crash, and the test using it would prove
    nothing; a typo in the code would never be reached."""
    code = (f"import os; os.environ[{crashpoints.ENV!r}] = 'after-candle-commit:3'\n"
            "from daemon.core import crashpoints\n"
            "crashpoints.hit('mid-migration')\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       env=env_without(), timeout=60)
    assert p.returncode == crashpoints.EXIT_BAD_SPEC
    assert "'after-candle-commit:3' names no crash point" in p.stderr
    with pytest.raises(ValueError, match="not a crash point"):
        crashpoints.hit("after-candle-commit")


# -- 3. disk full / write errors --------------------------------------------------------

def _limit_file_size(limit: int) -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of death by signal
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


@pytest.mark.slow
def test_a_full_disk_stops_the_replay_with_a_clear_error_and_loses_nothing(
        replay_case: dict[str, Any]) -> None:
    out = replay_case["tmp"] / "full.db"
    p = subprocess.run([*replay_case["base"], "--out", str(out)], capture_output=True,
                       text=True, env=env_without(), cwd=ROOT, timeout=300,
                       preexec_fn=lambda: _limit_file_size(400_000))
    assert p.returncode == 74, (p.returncode, p.stderr[-2000:])
    assert "full" in p.stderr.lower() or "i/o" in p.stderr.lower()
    assert "Traceback" not in p.stderr
    invariants(out)
    committed = rows(out)
    want = set(replay_case["want"])
    # What was committed before the disk filled is exactly what a clean run has; scoring
    # columns may still be empty where the clean run later filled them.
    unscored = {r[:12] for r in replay_case["want"]}
    assert committed and all(r in want or r[:12] in unscored for r in committed)
    p = subprocess.run([*replay_case["base"], "--out", str(out)], capture_output=True,
                       text=True, env=env_without(), cwd=ROOT, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert rows(out) == replay_case["want"]


def test_a_checkpoint_that_cannot_be_stored_keeps_the_previous_model(
        tmp_path: Path, pair: dict[str, list[Any]]) -> None:
    """The checkpoint and its training run commit in one transaction: when the store
    refuses the checkpoint (here a real SQLite trigger aborts the insert, as a full disk
    or a lost connection would), neither is recorded, the model in use stays, and the
    next retrain succeeds once the store accepts writes again."""
    out, _ = _trained_store(tmp_path, pair)
    store = Store(str(out))
    cfg = small_cfg()
    models = ModelSet(cfg, SERIES_1H)
    before = models.load_current(store)["seq2seq"]
    assert before is not None
    con = sqlite3.connect(out)
    n_runs = con.execute("select count(*) from training_runs").fetchone()[0]
    n_ckpt = con.execute("select count(*) from checkpoints").fetchone()[0]
    con.execute("create trigger refuse before insert on checkpoints begin "
                "select raise(abort, 'no room for the checkpoint'); end")
    con.commit()
    hist = history.load(store, SERIES_1H, pair["BTC/USD"][420][0], 240, 5)
    with pytest.raises(StorageError, match="no room"):
        models.train(store, hist, started_at=0, now_fn=lambda: 0)
    assert models.headline_version == before
    assert con.execute("select count(*) from training_runs").fetchone()[0] == n_runs
    assert con.execute("select count(*) from checkpoints").fetchone()[0] == n_ckpt
    # a restart serves the same model: nothing half-recorded points elsewhere
    assert ModelSet(cfg, SERIES_1H).load_current(store)["seq2seq"] == before
    con.execute("drop trigger refuse")
    con.commit()
    outcomes = models.train(store, history.load(store, SERIES_1H, pair["BTC/USD"][430][0], 240,
                                                5), started_at=0, now_fn=lambda: 0)
    assert outcomes and {o.model for o in outcomes} == {"seq2seq", "linear"}
    assert all(o.status in ("accepted", "rejected") for o in outcomes)
    # one row per learned model: the whole retrain, recorded once
    assert con.execute("select count(*) from training_runs").fetchone()[0] == n_runs + 2
    con.close()
    invariants(out)


# -- 4. locks and long readers -----------------------------------------------------------

@pytest.mark.slow
def test_a_store_locked_past_the_busy_timeout_loses_no_tick(
        tmp_path: Path, minutes: dict[str, list[Any]]) -> None:
    h = DaemonHarness(tmp_path, minutes, watchdog_usec=None)
    cfg_text = h.config.read_text().replace("[model]", "[storage]\nbusy_timeout_ms = 300\n\n"
                                                       "[model]")
    h.config.write_text(cfg_text)
    try:
        p = h.start()
        h.wait_for(lambda: bool(h.query("select 1 from forecasts limit 1")), "forecasts")
        locked_before = h.log().count("locked")
        holder = sqlite3.connect(h.db, isolation_level=None)
        holder.execute("begin immediate")
        try:  # held past the busy timeout until the daemon has skipped three ticks for it
            h.wait_for(lambda: h.log().count("locked") >= locked_before + 3,
                       "ticks to find the store locked")
        finally:
            holder.execute("rollback")
            holder.close()
        newest = h.newest_common()
        h.wait_for(lambda: h.newest_common() > newest + 2 * MINUTE, "recovery")
        assert h.stop(p) == 0
        assert_no_holes(h.db)
        invariants(h.db)
    finally:
        h.close()


def test_a_long_reader_does_not_block_writes_and_the_wal_shrinks_after_it(
        tmp_path: Path, pair: dict[str, list[Any]]) -> None:
    out = tmp_path / "r.db"
    inp = make_input(pair)
    start = pair["BTC/USD"][300][0]
    replay.run(small_cfg(), inp, start=start, end=start + 10 * HOUR, out=str(out),
               show_progress=False)
    reader = sqlite3.connect(out, isolation_level=None)
    reader.execute("begin")
    before = reader.execute("select count(*) from forecasts").fetchone()[0]
    res = replay.run(small_cfg(), inp, start=start, end=start + 300 * HOUR, out=str(out),
                     show_progress=False)
    assert res.ticks >= 280  # every tick ran while the reader held its snapshot
    wal = out.with_name(out.name + "-wal")
    assert reader.execute("select count(*) from forecasts").fetchone()[0] == before
    grown = wal.stat().st_size
    reader.execute("commit")  # the reader leaves, but keeps the file open (and the WAL with it)
    replay.run(small_cfg(), inp, start=start, end=None, out=str(out), show_progress=False)
    from storage.dialect import WAL_SIZE_LIMIT

    assert grown > WAL_SIZE_LIMIT, "the reader did not make the WAL grow; nothing was proven"
    assert wal.exists() and wal.stat().st_size <= WAL_SIZE_LIMIT
    reader.close()


# -- 5. the exchange misbehaving ---------------------------------------------------------

@pytest.mark.slow
def test_thirty_minutes_of_5xx_and_timeouts_then_recovery(
        tmp_path: Path, minutes: dict[str, list[Any]]) -> None:
    h = DaemonHarness(tmp_path, minutes, speed=120.0, exchange={"timeout_ms": 300})
    h.emu.timeout_s = 0.6
    try:
        p = h.start()
        h.wait_for(lambda: bool(h.query("select 1 from forecasts limit 1")), "forecasts")
        n0, t0 = h.emu.request_count(), h.clock.now_ms()
        for k in ("http500", "http502", "http503", "timeout"):
            h.emu.add_fault(k, probability=0.25)
        h.emu.add_fault("http504")
        h.wait_for(lambda: h.clock.now_ms() >= t0 + 30 * MINUTE
                   and sum(1 for r in list(h.emu.requests)[n0:] if r.fault) >= 30,
                   "thirty simulated minutes of faults")
        assert p.poll() is None
        h.emu.clear_faults()
        target = h.clock.now_ms() - 2 * MINUTE
        h.wait_for(lambda: h.newest_common() >= target, "recovery")
        assert h.stop(p) == 0
        assert_no_holes(h.db)
        invariants(h.db)
    finally:
        h.close()


def test_a_429_storm_never_becomes_a_tight_retry_loop(tmp_path: Path,
                                                      minutes: dict[str, list[Any]]) -> None:
    h = DaemonHarness(tmp_path, minutes, speed=60.0)
    try:
        p = h.start()
        h.wait_for(lambda: bool(h.query("select 1 from forecasts limit 1")), "forecasts")
        n0 = h.emu.request_count()
        h.emu.add_fault("http429")
        h.wait_for(lambda: len(list(h.emu.requests)[n0:]) >= 3, "three requests into the storm")
        storm = list(h.emu.requests)[n0:]
        assert all(r.status == 429 for r in storm)
        # Two symbols and a tick every wall second here, yet after the k-th limit in a row
        # nobody asks again for the k-th pause of the shared schedule (2 s, 4 s, 8 s...):
        # arrival times at the exchange, so no machine can be fast or slow enough to pass
        # a tight loop or fail a correct client.
        pause = 0.0
        for k, (a, b) in enumerate(zip(storm, storm[1:], strict=False), start=1):
            pause = cool_down_after(pause)
            assert b.mono - a.mono >= pause, f"request {k + 1} came {b.mono - a.mono:.2f}s " \
                f"after a rate limit that asked for {pause:.0f}s"
        h.emu.clear_faults()
        assert h.stop(p) == 0
    finally:
        h.close()


@pytest.mark.parametrize("fault,exchange_id", [("error_auth", "kraken"),
                                               ("error_badsymbol", "kraken")])
def test_credentials_or_symbol_refused_exit_78_without_a_restart_loop(
        tmp_path: Path, minutes: dict[str, list[Any]], fault: str, exchange_id: str) -> None:
    h = DaemonHarness(tmp_path, minutes, exchange={"id": exchange_id})
    try:
        h.emu.add_fault(fault, path="OHLC")
        p = h.start()
        assert p.wait(60) == 78
        assert "refused" in h.log()
    finally:
        h.close()


def test_garbage_answers_are_retried_never_stored(tmp_path: Path, emulator: ExchangeEmulator) -> None:
    from daemon.pipeline.ingest import poll

    s = Store(str(tmp_path / "g.db"))
    now = emulator.now_ms()
    s.open(now)
    src = CcxtSource("bitstamp", api_url=emulator.base_url, rate_limit=False, max_retries=6,
                     backoff_max_s=0.01)
    for k in ("garbage", "malformed", "empty"):
        emulator.add_fault(k, times=2)
    poll(s, src, Series("bitstamp", ("BTC/USD",), "1m"), "BTC/USD", now, history=600)
    con = sqlite3.connect(tmp_path / "g.db")
    got = con.execute("select ts, open, high, low, close, volume from candles order by ts"
                      ).fetchall()
    assert got == [tuple(c) for c in emulator.closed_candles("BTC/USD")][-len(got):]
    assert len(got) >= 599


# -- 6. clock jumps --------------------------------------------------------------------

def test_clock_jumps_forward_and_backward(tmp_path: Path, minutes: dict[str, list[Any]]) -> None:
    cfg = small_cfg(**{"exchange.timeframe": "1m"})
    clock = SimClock(T0 + 600 * MINUTE + 3_000)
    with ExchangeEmulator({s: list(r) for s, r in minutes.items()}, now_ms=clock.now_ms) as emu:
        store = Store(str(tmp_path / "j.db"))
        store.open(clock.now_ms())
        src = CcxtSource("bitstamp", api_url=emu.base_url, rate_limit=False, max_retries=1)
        series = Series("bitstamp", tuple(minutes), "1m")
        models = ModelSet(cfg, series)
        pipe = Pipeline(cfg, store, src, models, series)

        def newest() -> int:
            return pipe.newest_common() or 0

        marks = []
        latest_now = clock.now_ms()
        for step in [MINUTE] * 3 + [120 * MINUTE] + [MINUTE] * 2 + [-10 * MINUTE] + [MINUTE] * 3:
            clock.set(clock.now_ms() + step)
            latest_now = max(latest_now, clock.now_ms())
            pipe.tick(clock.now_ms())
            marks.append(newest())
            con = sqlite3.connect(tmp_path / "j.db")
            future = con.execute("select count(*) from candles where ts + 60000 > ?",
                                 (latest_now,)).fetchone()[0]
            assert future == 0, "a candle that had not closed was stored"
            ahead = con.execute("select count(*) from forecasts where issued_ts + 60000 > ?",
                                (latest_now,)).fetchone()[0]
            assert ahead == 0, "a forecast was issued from a candle not yet closed"
            con.close()
        assert marks == sorted(marks), "the cursor moved backward"
        invariants(tmp_path / "j.db")
        con = sqlite3.connect(tmp_path / "j.db")
        assert con.execute("select count(*) from forecasts where issued_ts + 60000 > "
                           "created_at").fetchone()[0] == 0  # nothing issued before it closed
        con.close()


# Debian's faketime package, or a libfaketimeMT.so.1 named by TICKCAST_FAKETIME_LIB.
FAKETIME_LIB = next(iter([*([Path(os.environ["TICKCAST_FAKETIME_LIB"])]
                            if os.environ.get("TICKCAST_FAKETIME_LIB") else []),
                          *sorted([*Path("/usr/lib").glob("*/faketime/libfaketimeMT.so.1"),
                                   *Path("/usr/lib").glob("faketime/libfaketimeMT.so.1")])]),
                    None)


@pytest.mark.slow
@pytest.mark.skipif(FAKETIME_LIB is None,
                    reason="libfaketime is not installed (Debian: apt install faketime); the "
                           "simulated-clock test above still runs")
def test_the_real_daemon_under_faketime_survives_its_clock_stepping(
        tmp_path: Path, minutes: dict[str, list[Any]]) -> None:
    """The host's wall clock is stepped under the running process (libfaketime, re-read on
    every call); the exchange's clock is not. At 60x, 120 wall seconds are 2 simulated hours."""
    h = DaemonHarness(tmp_path, minutes, speed=60.0)
    offset = tmp_path / "faketime.rc"
    offset.write_text("+0\n")
    h.extra_env = {"LD_PRELOAD": str(FAKETIME_LIB), "FAKETIME_TIMESTAMP_FILE": str(offset),
                   "FAKETIME_NO_CACHE": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}

    marks: list[int] = []

    def newest() -> int:
        marks.append(h.newest_common())  # every reading: the cursor must never go back
        return marks[-1]

    def stepped() -> int:
        return h.log().count("wall clock was stepped")

    try:
        p = h.start()
        # Any forecast will do: the baselines need no trained model, so a busy machine
        # still gets here; the step is what this test is about.
        h.wait_for(lambda: newest() > 0 and bool(h.query("select 1 from forecasts limit 1")),
                   "first forecasts")
        for k, shift in enumerate(("+120", "-10", "+0"), start=1):
            offset.write_text(shift + "\n")
            h.wait_for(lambda k=k: newest() >= 0 and stepped() >= k,
                       f"the daemon to notice clock step {shift}")
            n = len(h.notify.statuses())
            h.wait_for(lambda n=n: newest() >= 0 and len(h.notify.statuses()) >= n + 2,
                       f"two ticks on the clock stepped {shift}")
        # Back on true time: it catches up with the exchange and keeps pinging the watchdog.
        h.wait_for(lambda: newest() >= h.clock.now_ms() - 3 * MINUTE, "catching up")
        t = time.monotonic()
        h.wait_for(lambda: any(x > t for x in h.notify.times("WATCHDOG=1")), "watchdog")
        newest()
        assert h.stop(p) == 0, h.log()[-3000:]
        assert marks == sorted(marks), "the candle cursor moved backward"
        exchange_now = h.clock.now_ms()
        assert h.query("select count(*) from candles where ts + ? > ?", MINUTE,
                       exchange_now)[0][0] == 0, "a candle the exchange had not closed"
        assert h.query("select count(*) from forecasts where issued_ts + ? > ?", MINUTE,
                       exchange_now)[0][0] == 0
        invariants(h.db)
        assert_no_holes(h.db)
    finally:
        h.close()


# -- 7. the model misbehaving ----------------------------------------------------------------

def _trained_store(tmp_path: Path, pair: dict[str, list[Any]]) -> tuple[Path, list[str]]:
    """A replay store with several accepted seq2seq checkpoints; their versions, newest first."""
    out = tmp_path / "m.db"
    replay.run(small_cfg(), make_input(pair, 400), start=pair["BTC/USD"][330][0], end=None,
               out=str(out), show_progress=False)
    con = sqlite3.connect(out)
    versions = [v for (v,) in con.execute("select model_version from checkpoints where model = "
                                          "'seq2seq' order by id desc")]
    con.close()
    assert len(versions) >= 2
    return out, versions


@pytest.mark.parametrize("damage", ["truncate", "garbage", "other-config"])
def test_a_bad_checkpoint_falls_back_and_forecasting_goes_on(
        tmp_path: Path, pair: dict[str, list[Any]], caplog: pytest.LogCaptureFixture,
        damage: str) -> None:
    out, versions = _trained_store(tmp_path, pair)
    con = sqlite3.connect(out)
    (data,) = con.execute("select data from checkpoints where model_version = ?",
                          (versions[0],)).fetchone()
    if damage != "other-config":
        bad = data[:300] if damage == "truncate" else os.urandom(5000)
        con.execute("update checkpoints set data = ? where model_version = ?", (bad, versions[0]))
        con.commit()
    con.close()
    cfg = small_cfg(**({"model.hidden": 12} if damage == "other-config" else {}))
    models = ModelSet(cfg, SERIES_1H)
    version = models.load_current(Store(str(out)))["seq2seq"]
    assert "cannot use checkpoint" in caplog.text
    if damage == "other-config":
        assert version is None and "another configuration" in caplog.text
    else:
        assert version == versions[1]  # the previous accepted model, not the damaged one


def test_exploding_training_never_serves_its_weights_and_nothing_non_finite_is_stored(
        tmp_path: Path, pair: dict[str, list[Any]]) -> None:
    """learning_rate 1e30: every optimiser step explodes the weights. Validation must never
    prefer them: each retrain is rejected (non-finite) or keeps the network it started from
    (for a first model: the untrained network, whose band is the volatility prior's)."""
    out, _ = _trained_store(tmp_path, pair)
    cfg = small_cfg(**{"model.learning_rate": 1e30})
    res = replay.run(cfg, make_input(pair, 470), start=pair["BTC/USD"][330][0], end=None,
                     out=str(tmp_path / "boom.db"), show_progress=False)
    assert res.retrains >= 2
    con = sqlite3.connect(tmp_path / "boom.db")
    runs = con.execute("select status, reason from training_runs where model = 'seq2seq'"
                       ).fetchall()
    con.close()
    assert runs and {st for st, _ in runs} <= {"accepted", "rejected"}
    for status, reason in runs:
        if status == "accepted":
            assert "did not" in reason, reason  # the exploded weights were not kept
        else:
            assert reason.startswith(("non-finite", "worse-than-current")), reason
    invariants(tmp_path / "boom.db")
    invariants(out)


@pytest.fixture(autouse=True)
def _no_crash_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv(crashpoints.ENV, raising=False)
    yield


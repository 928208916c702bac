"""Helpers shared by the test modules: paths, the data the tests replay, config files,
subprocesses, polling, and the invariants every store must keep.

Test modules import from here (or from `tests.helpers.daemon` / `tests.helpers.forecaster`),
never from one another; `conftest.py` holds the fixtures.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from daemon.config import settings
from daemon.core.clock import parse_time
from daemon.files import replay_data
from tests.emulator import ExchangeEmulator

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "daemon" / "sample"
HOURLY = {
    "BTC/USD": SAMPLE / "bitstamp_BTC-USD_1h_2017-11_2020-12.csv.gz",
    "BTC/EUR": SAMPLE / "bitstamp_BTC-EUR_1h_2017-11_2020-12.csv.gz",
}
GAPPY_MINUTES = {
    "BTC/USD": ROOT / "tests/data/coinbase_BTC-USD_1m_2018-04-04_2018-04-06.csv.gz",
    "BTC/EUR": ROOT / "tests/data/coinbase_BTC-EUR_1m_2018-04-04_2018-04-06.csv.gz",
}
MINUTE = 60_000
HOUR = 3_600_000
T0 = parse_time("2024-01-01")  # where real hourly candles are laid onto a minute grid
DAYS = 3
T = TypeVar("T")


# -- waiting -------------------------------------------------------------------------------

def wait_until(cond: Callable[[], T], what: str, *, timeout: float = 120.0,
               every: float = 0.05, on_timeout: Callable[[], str] = lambda: "",
               give_up: Callable[[], str | None] = lambda: None) -> T:
    """Poll `cond` until it returns something true, and return that; fail naming `what`
    after a generous deadline, or as soon as `give_up` says why waiting is pointless (a
    process died). `on_timeout` adds context to the failure (a log's tail).

    The one polling loop of the tests. The deadline is a safety net for a hung run, never
    the thing tested: tests wait for the behaviour, then assert on what happened, not on
    how long it took.
    """
    deadline = time.monotonic() + timeout
    while not (got := cond()):
        if (reason := give_up()) is not None:
            raise AssertionError(f"{reason} while waiting for {what}:\n{on_timeout()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n"
                                 f"{on_timeout()}")
        time.sleep(every)
    return got


def kill_9_once(proc: subprocess.Popen[Any], reached: Callable[[], bool], what: str) -> None:
    """SIGKILL `proc` as soon as `reached()` holds: a point the test observes, never a
    sleep. Fails if the process ended first, since a kill after the end proves nothing."""
    try:
        wait_until(lambda: reached() or proc.poll() is not None, what, timeout=600, every=0.01)
        assert proc.poll() is None, "the replay ended before the kill; it proves nothing"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()


# -- configuration and processes -----------------------------------------------------------

def write_config(path: Path, sections: dict[str, dict[str, Any]]) -> Path:
    lines = []
    for section, body in sections.items():
        lines.append(f"[{section}]")
        for k, v in body.items():
            if isinstance(v, bool):
                text = "true" if v else "false"
            elif isinstance(v, str):
                text = '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
            elif isinstance(v, list):
                text = "[" + ", ".join(f'"{x}"' if isinstance(x, str) else str(x) for x in v) + "]"
            else:
                text = repr(v)
            lines.append(f"{k} = {text}")
    path.write_text("\n".join(lines) + "\n")
    return path


def emulator_config(tmp_path: Path, emu: ExchangeEmulator, exchange_id: str = "bitstamp",
                    **extra: dict[str, Any]) -> Path:
    """A config that points tickcast at the emulator with its clock and fast retries."""
    sections: dict[str, dict[str, Any]] = {
        "exchange": {"id": exchange_id, "api_url": emu.base_url, "rate_limit": False,
                     "timeout_ms": 1500, "max_retries": 8, "backoff_max_s": 0.05},
        "model": {"train_window": 4000, "lookback": 60, "horizons": [1, 5, 15], "threads": 1},
        "daemon": {"clock": f"fixed:{emu.now_ms()}"},
    }
    for k, v in extra.items():
        sections.setdefault(k, {}).update(v)
    return write_config(tmp_path / "config.toml", sections)


def env_without(*names: str) -> dict[str, str]:
    """This process's environment without tickcast's own variables (and `names`)."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith("TICKCAST_") and k not in ("STATE_DIRECTORY", *names)}


def run_subprocess(*args: str, env: dict[str, str] | None = None, timeout: float = 120,
                   cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The real `python -m daemon` as a child process."""
    e = env_without()
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "daemon", *args], capture_output=True,
                          text=True, timeout=timeout, env=e, cwd=cwd or ROOT)


# -- small replays of the real hourly pair ---------------------------------------------------

SMALL = {"model.lookback": 16, "model.horizons": [1, 3, 6], "model.train_window": 240,
         "model.retrain_every": 24, "model.initial_steps": 40, "model.retrain_steps": 8,
         "model.hidden": 8, "model.batch_size": 32, "model.patch": 4, "model.device": "cpu",
         "model.threads": 1}
# The same small model as a config file, for subprocesses.
SCRIPT_CFG = {"model": {k.split(".")[1]: v for k, v in SMALL.items()}}
COLS = "model, model_version, exchange, symbol, timeframe, issued_ts, target_ts, horizon, " \
       "yhat, lower, upper, created_at, actual, error, scored_at"


def small_cfg(**kw: Any) -> settings.Settings:
    return settings.load(None, env={}, overrides={**SMALL, **kw})


def make_input(pair: dict[str, list[Any]], n: int | None = None,
               drop: dict[str, list[int]] | None = None) -> replay_data.ReplayInput:
    data = {}
    for s, rows in pair.items():
        arr = np.asarray(rows[:n], dtype=np.float64)
        if drop and s in drop:
            arr = np.delete(arr, drop[s], axis=0)
        data[s] = (arr[:, 0].astype(np.int64), arr[:, 1:].copy())
    return replay_data.replay_input("bitstamp", "1h", data, "test")


def write_data(tmp: Path, pair: dict[str, list[Any]], n: int) -> list[Path]:
    """The first n candles of the pair as data files named for replay."""
    files = []
    for s, rs in pair.items():
        f = tmp / f"bitstamp_{s.replace('/', '-')}_1h_test.csv"
        f.write_text("ts_ms,open,high,low,close,volume\n" +
                     "".join(f"{r[0]},{r[1]!r},{r[2]!r},{r[3]!r},{r[4]!r},{r[5]!r}\n"
                             for r in rs[:n]))
        files.append(f)
    return files


def rows(db: Path | str, where: str = "1=1") -> list[tuple[Any, ...]]:
    """Every forecast row (all columns but the id), in a stable order."""
    con = sqlite3.connect(db)
    try:
        return con.execute(f"select {COLS} from forecasts where {where} "
                           "order by model, symbol, issued_ts, horizon").fetchall()
    finally:
        con.close()


def issued_ticks(db: Path) -> int:
    """How many ticks have committed forecasts in a store (0 while it has none)."""
    if not db.exists():
        return 0
    con = sqlite3.connect(db, timeout=10)
    try:
        return con.execute("select count(distinct issued_ts) from forecasts").fetchone()[0]
    except sqlite3.OperationalError:  # not migrated yet
        return 0
    finally:
        con.close()


# -- what must hold after any crash ----------------------------------------------------------

def invariants(db: Path, *, baselines: tuple[str, ...] = ("naive-2", "drift-2")) -> None:
    """Integrity, no duplicates, only known model versions, nothing non-finite."""
    con = sqlite3.connect(db, timeout=10)
    try:
        assert con.execute("pragma integrity_check").fetchone()[0] == "ok"
        tables = {r[0] for r in con.execute("select name from sqlite_master")}
        if "forecasts" not in tables:
            return  # killed before its first migration committed: an empty, valid file
        assert con.execute("select count(*) from (select 1 from forecasts group by model, "
                           "exchange, symbol, timeframe, issued_ts, horizon "
                           "having count(*) > 1)").fetchone()[0] == 0
        # Learned models (seq2seq, linear) forecast only with versions accepted and recorded.
        unknown = con.execute(
            "select distinct model_version from forecasts f where model in ('seq2seq', "
            "'linear') and not exists (select 1 from training_runs t where t.status = "
            "'accepted' and t.model = f.model and t.model_version = f.model_version)"
        ).fetchall()
        assert unknown == [], f"forecasts from versions never accepted: {unknown}"
        others = {v for (v,) in con.execute(
            "select distinct model_version from forecasts where model not in ('seq2seq', "
            "'linear')")}
        assert others <= set(baselines)
        for (ck,) in con.execute("select checkpoint from training_runs where checkpoint is "
                                 "not null"):
            assert ".tmp-" not in ck
        non_finite = con.execute(
            "select count(*) from forecasts where yhat is null or yhat != yhat or "
            "abs(yhat) > 1e300 or (lower is not null and (lower != lower or upper != upper))"
        ).fetchone()[0]
        assert non_finite == 0
    finally:
        con.close()


def assert_no_holes(db: Path | str, symbols: tuple[str, ...] = ("BTC/USD", "BTC/EUR"), *,
                    exchange: str | None = None) -> None:
    """Every symbol's 1m candles (of one exchange, if given) without a gap, in any store."""
    from tests.helpers.stores import candle_times  # SQLAlchemy: only tests that read stores

    for sym in symbols:
        ts = candle_times(db, sym, exchange)
        assert ts and all(b - a == MINUTE for a, b in zip(ts, ts[1:], strict=False)), \
            f"hole in the {exchange or ''} {sym} candles"

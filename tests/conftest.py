"""Shared fixtures: real data, a running exchange emulator, real SQLite stores, the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.cli import main
from daemon.clock import parse_time
from tests.emulator import Candle, ExchangeEmulator, hourly_onto_minutes, load_csv

ROOT = Path(__file__).resolve().parents[1]
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
T0 = parse_time("2024-01-01")  # where real hourly candles are laid onto a minute grid
DAYS = 3


@pytest.fixture(scope="session")
def hourly() -> dict[str, list[Candle]]:
    return {s: load_csv(p) for s, p in HOURLY.items()}


@pytest.fixture(scope="session")
def minutes(hourly: dict[str, list[Candle]]) -> dict[str, list[Candle]]:
    """Several days of real candles (from the hourly pair, 2019 on) on a 1m grid from T0."""
    n = DAYS * 1440
    out = {}
    for s, rows in hourly.items():
        start = next(i for i, r in enumerate(rows) if r[0] >= parse_time("2019-06-01"))
        out[s] = hourly_onto_minutes(rows[start:start + n], T0)
    return out


@pytest.fixture(scope="session")
def pair(hourly: dict[str, list[Candle]]) -> dict[str, list[Candle]]:
    """700 real hourly candles of both symbols from 2020-01-01."""
    out = {}
    for s, rows in hourly.items():
        i = next(k for k, r in enumerate(rows) if r[0] >= parse_time("2020-01-01"))
        out[s] = rows[i:i + 700]
    return out


@pytest.fixture
def emulator(minutes: dict[str, list[Candle]]) -> Iterator[ExchangeEmulator]:
    """A Bitstamp/Kraken emulator whose clock sits 30 s into the last minute of the data."""
    now = T0 + DAYS * 1440 * MINUTE - MINUTE + 30_000
    with ExchangeEmulator({s: list(r) for s, r in minutes.items()}, now_ms=now) as emu:
        yield emu
    assert emu.internal_errors == []


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


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Run the CLI in-process (fast); returns the exit code."""
    for k in list(os.environ):
        if k.startswith("TICKCAST_") or k == "STATE_DIRECTORY":
            monkeypatch.delenv(k)

    def run(*args: str) -> int:
        return main(list(args))

    return run


def run_subprocess(*args: str, env: dict[str, str] | None = None, timeout: float = 120,
                   cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The real `python -m daemon` as a child process."""
    e = {k: v for k, v in os.environ.items()
         if not k.startswith("TICKCAST_") and k != "STATE_DIRECTORY"}
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "daemon", *args], capture_output=True,
                          text=True, timeout=timeout, env=e, cwd=cwd or ROOT)


# Benchmark scripts are run by hand (python tests/bench/x.py), never collected.
collect_ignore_glob = ["bench/*"]


# -- PostgreSQL -------------------------------------------------------------------------------
# TICKCAST_TEST_PG_URL points at a server the tests may create databases on (.ci/run starts
# a throwaway one: python tests/pg_server.py). Unset: PostgreSQL variants skip, saying so in
# one line. Set but unreachable: they fail (CI must never skip them silently).
PG_ENV = "TICKCAST_TEST_PG_URL"
BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    url = os.environ.get(PG_ENV)
    if not url:
        pytest.skip(f"PostgreSQL: {PG_ENV} is not set (python tests/pg_server.py run -- pytest)")
    import psycopg

    from tests.pg_server import _admin_conninfo

    try:
        with psycopg.connect(_admin_conninfo(url), autocommit=True, connect_timeout=10) as c:
            c.execute("SELECT 1")
    except psycopg.Error as e:
        pytest.fail(f"{PG_ENV} is set but its server cannot be reached: {e}", pytrace=False)
    return url


@pytest.fixture
def pg_url(pg_admin_url: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped after it."""
    from tests.pg_server import create_database, drop_database

    url = create_database(pg_admin_url)
    yield url
    drop_database(pg_admin_url, url)


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh store URL on each back-end: a SQLite file, a PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "store.db")
    return str(request.getfixturevalue("pg_url"))

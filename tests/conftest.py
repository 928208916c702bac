"""Fixtures: real data, a running exchange emulator, the CLI in-process.

Plain helpers (paths, config files, subprocesses, invariants) live in `tests/helpers/`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.cli import main
from daemon.core.clock import parse_time
from storage import Store
from tests.emulator import Candle, ExchangeEmulator, hourly_onto_minutes, load_csv
from tests.helpers import DAYS, HOURLY, MINUTE, T0
from tests.helpers.daemon import DaemonHarness


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
def stores() -> Iterator[list[Store]]:
    """Stores a test opens (tests.helpers.stores.new_store); closed at its end."""
    made: list[Store] = []
    yield made
    for s in made:
        s.close()


@pytest.fixture
def emulator(minutes: dict[str, list[Candle]]) -> Iterator[ExchangeEmulator]:
    """A Bitstamp/Kraken emulator whose clock sits 30 s into the last minute of the data."""
    now = T0 + DAYS * 1440 * MINUTE - MINUTE + 30_000
    with ExchangeEmulator({s: list(r) for s, r in minutes.items()}, now_ms=now) as emu:
        yield emu
    assert emu.internal_errors == []


@pytest.fixture
def harness(request: pytest.FixtureRequest, tmp_path: Path,
            minutes: dict[str, list[Candle]]) -> Iterator[DaemonHarness]:
    """A real `tickcast run` against the emulator (`tests.helpers.daemon.DaemonHarness`),
    closed at the test's end. Options come from a `harness` marker on the test or its
    module: `@pytest.mark.harness(speed=20.0, watchdog_usec=None)`; `store="postgresql"`
    puts the store on a fresh PostgreSQL database (dropped after the daemons are gone)."""
    marker = request.node.get_closest_marker("harness")
    options = dict(marker.kwargs) if marker is not None else {}
    if options.pop("store", "sqlite") == "postgresql":
        options["store_url"] = request.getfixturevalue("pg_url")
    h = DaemonHarness(tmp_path, minutes, **options)
    yield h
    h.close()


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Run the CLI in-process (fast); returns the exit code."""
    for k in list(os.environ):
        if k.startswith("TICKCAST_") or k == "STATE_DIRECTORY":
            monkeypatch.delenv(k)

    def run(*args: str) -> int:
        return main(list(args))

    return run


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

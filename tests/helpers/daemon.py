"""A real `tickcast run` subprocess against the emulator, on an accelerated shared clock,
with a notify socket standing in for systemd."""

from __future__ import annotations

import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from daemon.core.clock import ScaledClock
from tests.emulator import ExchangeEmulator
from tests.helpers import MINUTE, ROOT, T0, T, env_without, wait_until, write_config

SPEED = 60.0  # one simulated minute per wall second
START = T0 + 500 * MINUTE  # simulated start: 500 minutes of history exist


class Notifications:
    """A datagram socket that records what the daemon tells 'systemd'."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except (TimeoutError, OSError):
                continue
            self.messages.append((time.monotonic(), data.decode()))

    def times(self, key: str) -> list[float]:
        return [t for t, m in list(self.messages) if key in m.split("\n")[0]
                or f"\n{key}" in m or m.startswith(key)]

    def statuses(self) -> list[str]:
        """Every STATUS= text, in order."""
        return [line[len("STATUS="):] for _, m in list(self.messages)
                for line in m.split("\n") if line.startswith("STATUS=")]

    def has(self, key: str) -> bool:
        return bool(self.times(key))

    def close(self) -> None:
        self._stop.set()
        self._t.join(1)
        self.sock.close()


class DaemonHarness:
    def __init__(self, tmp: Path, minutes: dict[str, list[Any]], *, speed: float = SPEED,
                 model: dict[str, Any] | None = None, exchange: dict[str, Any] | None = None,
                 watchdog_usec: int | None = 2_000_000, store_url: str | None = None) -> None:
        self.tmp = tmp
        self.clock = ScaledClock(START, time.time(), speed)
        self.emu = ExchangeEmulator({s: list(r) for s, r in minutes.items()},
                                    now_ms=self.clock.now_ms)
        self.emu.start()
        # A SQLite file by default; `store_url` (PostgreSQL) for several daemons on one store.
        self.db: Path | str = tmp / "live.db" if store_url is None else store_url
        self.notify = Notifications(tmp / "notify.sock")
        self.watchdog_usec = watchdog_usec
        self.config = write_config(tmp / "config.toml", {
            "exchange": {"api_url": self.emu.base_url, "rate_limit": False, "timeout_ms": 2000,
                         "max_retries": 3, "backoff_max_s": 0.2, **(exchange or {})},
            "model": {"lookback": 16, "horizons": [1, 3, 6], "train_window": 300,
                      "retrain_every": 20, "initial_steps": 40, "retrain_steps": 8, "hidden": 8,
                      "batch_size": 32, "threads": 1, **(model or {})},
            "daemon": {"clock": self.clock.spec(), "poll_delay_s": 0.5, "heartbeat_minutes": 1},
        })
        self.extra_env: dict[str, str] = {}
        self.procs: list[subprocess.Popen[str]] = []
        self._logs: list[Any] = []

    def env(self) -> dict[str, str]:
        e = env_without("NOTIFY_SOCKET", "WATCHDOG_USEC")
        e["NOTIFY_SOCKET"] = str(self.notify.path)
        if self.watchdog_usec:
            e["WATCHDOG_USEC"] = str(self.watchdog_usec)
        e.update(self.extra_env)
        return e

    def config_for(self, exchange_id: str) -> Path:
        """The harness's config with another exchange id (the emulator speaks both)."""
        path = self.tmp / f"config-{exchange_id}.toml"
        path.write_text(self.config.read_text().replace(
            "[exchange]\n", f'[exchange]\nid = "{exchange_id}"\n', 1))
        return path

    def start(self, *extra: str, config: Path | None = None,
              cwd: Path | None = None) -> subprocess.Popen[str]:
        log = open(self.tmp / f"daemon-{len(self.procs)}.log", "w")  # noqa: SIM115
        self._logs.append(log)
        p = subprocess.Popen([sys.executable, "-m", "daemon", "--config",
                              str(config or self.config), "--db", str(self.db), "run", *extra],
                             env=self.env(), cwd=cwd or ROOT, stdout=log,
                             stderr=subprocess.STDOUT, text=True)
        self.procs.append(p)
        return p

    def log(self, i: int = -1) -> str:
        n = len(self.procs) + i if i < 0 else i
        return (self.tmp / f"daemon-{n}.log").read_text()

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        if isinstance(self.db, str):  # PostgreSQL: plain SQL without parameters
            from tests.helpers.stores import query

            assert not args, "PostgreSQL queries of the harness take no parameters"
            return query(self.db, sql)
        if not self.db.exists():
            return []
        con = sqlite3.connect(self.db, timeout=10)
        try:
            return con.execute(sql, args).fetchall()
        except sqlite3.OperationalError:
            return []
        finally:
            con.close()

    def wait_for(self, cond: Callable[[], T], what: str, timeout: float = 180) -> T:
        """`wait_until` that gives up when the daemon exited with an error, and shows the
        tail of its log on failure. The deadline only guards against a hung run: it is
        generous so that a busy machine cannot fail a test that behaves correctly."""
        return wait_until(cond, what, timeout=timeout, every=0.1, give_up=self._died,
                          on_timeout=lambda: self.log()[-3000:] if self.procs else "")

    def _died(self) -> str | None:
        p = self.procs[-1] if self.procs else None
        if p is not None and p.poll() is not None and p.returncode != 0:
            return f"daemon exited {p.returncode}"
        return None

    def newest_common(self) -> int:
        """The newest candle time every symbol has reached (0 before both have one)."""
        rows = self.query("select min(m) from (select max(ts) m from candles group by symbol)")
        return (rows[0][0] or 0) if rows else 0

    def stop(self, p: subprocess.Popen[str], sig: int = signal.SIGTERM,
             timeout: float = 60) -> int:
        """Signal the daemon and wait for its exit code (the deadline guards a hang only)."""
        p.send_signal(sig)
        return p.wait(timeout)

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait(5)
        self.emu.stop()
        self.notify.close()
        for f in self._logs:
            f.close()

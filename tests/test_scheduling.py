"""The live daemon's schedule survives the wall clock being stepped (an NTP step, a resumed
VM), tested in-process without libfaketime: the test steps `time.time` (which
`daemon.clock` reads) and the clock APScheduler's scheduler reads, as a host step would,
while the monotonic clock runs on untouched."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import datetime, tzinfo

import apscheduler.schedulers.base
import pytest

from daemon.core.clock import ScaledClock
from daemon.live.scheduling import DaemonSchedule
from tests.helpers import T0, wait_until


class SteppedWall:
    """The host's wall clock, `offset` seconds away from the real one."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.offset = 0.0
        real = time.time

        def stepped() -> float:
            return real() + self.offset

        class SteppedDatetime(datetime):
            @classmethod
            def now(cls, tz: tzinfo | None = None) -> datetime:  # type: ignore[override]
                return datetime.fromtimestamp(stepped(), tz)

        monkeypatch.setattr(time, "time", stepped)
        # The one place APScheduler reads the clock while running jobs; our own triggers
        # are always given their start times (from daemon.clock), never "now".
        monkeypatch.setattr(apscheduler.schedulers.base, "datetime", SteppedDatetime)


@pytest.fixture
def schedule(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[SteppedWall, DaemonSchedule,
                                                                list[float], list[float]]]:
    wall = SteppedWall(monkeypatch)
    ticks: list[float] = []  # monotonic times: the step must not show in them
    pings: list[float] = []
    # At 60x a 1m candle closes every wall second, as in the daemon tests.
    s = DaemonSchedule(clock=ScaledClock(T0, time.time(), 60.0), speed=60.0, step_ms=60_000,
                       poll_delay_s=0.0, tick=lambda: ticks.append(time.monotonic()),
                       heartbeat=lambda: None, heartbeat_minutes=60,
                       watchdog=lambda: pings.append(time.monotonic()), watchdog_every_s=0.5)
    runner = threading.Thread(target=s.run, daemon=True)
    runner.start()
    yield wall, s, ticks, pings
    s.shutdown()
    runner.join(30)


@pytest.mark.parametrize("step_s", [-600.0, 7200.0])
def test_ticks_and_watchdog_go_on_after_the_wall_clock_is_stepped(
        schedule: tuple[SteppedWall, DaemonSchedule, list[float], list[float]],
        step_s: float, caplog: pytest.LogCaptureFixture) -> None:
    """Stepped back ten minutes, plain APScheduler would sleep them away (no tick, no
    watchdog ping: systemd kills a healthy daemon); stepped forward it would keep the old
    alignment. Either way the schedule notices and ticks on."""
    wall, _, ticks, pings = schedule
    wait_until(lambda: len(ticks) >= 2 and len(pings) >= 2, "the schedule to run")
    wall.offset = step_s
    t_step = time.monotonic()
    wait_until(lambda: "wall clock was stepped" in caplog.text, "the step to be noticed",
               timeout=60)
    wait_until(lambda: sum(t > t_step for t in ticks) >= 3
               and sum(t > t_step for t in pings) >= 3,
               "three ticks and three watchdog pings on the stepped clock", timeout=60)
    assert f"{step_s:+.1f} s" in caplog.text

"""The one module that reads the wall clock (and the monotonic one).

Everything else takes `now` (epoch milliseconds) as an argument, so replay and
tests can drive the same code with a simulated clock. The daemon's scheduler is
given its times from here too (`wall_now`), never from `datetime.now()`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now_ms(self) -> int: ...


class WallClock:
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000


@dataclass
class SimClock:
    """A clock that moves only when told to (replay, tests)."""

    t_ms: int

    def now_ms(self) -> int:
        return self.t_ms

    def set(self, t_ms: int) -> None:
        self.t_ms = t_ms


@dataclass(frozen=True)
class ScaledClock:
    """Simulated time running `speed` times faster than the wall clock.

    Defined from a fixed origin pair, so a daemon subprocess and an exchange
    emulator given the same spec agree on 'now' without talking to each other.
    """

    origin_sim_ms: int
    origin_wall_s: float
    speed: float

    def now_ms(self) -> int:
        return self.origin_sim_ms + int((time.time() - self.origin_wall_s) * self.speed * 1000)

    def spec(self) -> str:
        return f"scaled:{self.origin_sim_ms}:{self.origin_wall_s!r}:{self.speed!r}"


def monotonic() -> float:
    """Seconds for measuring durations (never for deciding what time it is)."""
    return time.monotonic()


def wall_now() -> datetime:
    """The wall clock as an aware UTC datetime (what APScheduler schedules on)."""
    return datetime.fromtimestamp(time.time(), tz=UTC)


def wall_offset_s() -> float:
    """Wall clock minus monotonic clock: constant until the wall clock is stepped (NTP, an
    administrator, a resumed VM), so a change in it is the size of the step."""
    return time.time() - time.monotonic()


def from_spec(spec: str) -> Clock:
    """The daemon.clock key: 'wall', 'fixed:<ms>' or 'scaled:<sim_ms>:<wall_s>:<speed>'.

    >>> from_spec('fixed:1600000000000').now_ms()
    1600000000000
    """
    if spec == "wall":
        return WallClock()
    parts = spec.split(":")
    if len(parts) == 2 and parts[0] == "fixed":
        return SimClock(int(parts[1]))
    if len(parts) == 4 and parts[0] == "scaled":
        origin_ms, origin_wall, speed = int(parts[1]), float(parts[2]), float(parts[3])
        if speed <= 0:
            raise ValueError("speed must be positive")
        return ScaledClock(origin_ms, origin_wall, speed)
    raise ValueError("expected 'wall', 'fixed:<ms>' or 'scaled:<sim_ms>:<wall_s>:<speed>'")


def iso(ms: int | None) -> str:
    """ISO-8601 UTC text of an epoch-ms time.

    >>> iso(0)
    '1970-01-01T00:00:00Z'
    """
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> int:
    """A command-line time: a date or an ISO-8601 time, UTC when no zone is given.

    >>> parse_time('2021-03-01'), parse_time('2021-03-01T12:00Z')
    (1614556800000, 1614600000000)
    >>> parse_time('2021-03-01T13:00+01:00')
    1614600000000
    """
    t = text.strip()
    if t.endswith(("Z", "z")):
        t = t[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(t)
    except ValueError:
        raise ValueError(
            f"not a date or ISO-8601 time: {text!r} (try 2021-03-01 or 2021-03-01T12:00Z)"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)

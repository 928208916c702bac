"""The live daemon's schedule: a tick shortly after each candle closes, the watchdog, the
heartbeat; and surviving the wall clock being stepped.

APScheduler 3 sleeps until a job's next run time read on the wall clock. When the clock is
stepped back by ten minutes (NTP after a bad boot, a VM resumed from a snapshot), every job,
the watchdog included, would sleep ten extra minutes and systemd would kill a healthy
daemon. So a small watcher thread compares the wall clock with the monotonic one; when their
difference jumps, the jobs are re-aligned through APScheduler's public API
(`reschedule_job`, `modify_job`, `add_job`), each of which wakes the scheduler to recompute
its sleep. Nothing private of APScheduler is overridden; `tests/test_scheduling.py` steps
the clock under a real scheduler and checks that ticks keep coming.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, timedelta

from apscheduler.executors.pool import ThreadPoolExecutor as APThreadPool
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.interval import IntervalTrigger

from daemon.core.clock import Clock, wall_now, wall_offset_s

log = logging.getLogger("tickcast.live")

STEP_THRESHOLD_S = 1.0  # smaller differences are scheduling jitter, not a step
RETENTION_EVERY_S = 3600.0  # storage.keep_forecast_rows_days: daemon seconds between passes


class ClockStepWatcher(threading.Thread):
    """Calls `on_step(step_s)` when the wall clock moves against the monotonic clock."""

    def __init__(self, *, every_s: float, on_step: Callable[[float], None],
                 stop: threading.Event) -> None:
        super().__init__(name="clock-step-watcher", daemon=True)
        self.every_s = every_s
        self.on_step = on_step
        self.stop = stop

    def run(self) -> None:
        offset = wall_offset_s()
        while not self.stop.wait(self.every_s):
            now = wall_offset_s()
            if abs(now - offset) > STEP_THRESHOLD_S:
                log.warning("the wall clock was stepped %+.1f s; re-aligning the schedule",
                            now - offset)
                try:
                    self.on_step(now - offset)
                except Exception:  # noqa: BLE001 - the scheduler may be shutting down
                    log.exception("could not re-align the schedule")
            offset = now


class DaemonSchedule:
    """The jobs of `tickcast run` on a BlockingScheduler; `run()` blocks until `shutdown()`.

    `clock` is the daemon's clock (simulated and `speed` times faster in tests and demos):
    ticks are aligned to candle closes on it, `poll_delay_s` (daemon seconds) after each.
    """

    def __init__(self, *, clock: Clock, speed: float, step_ms: int, poll_delay_s: float,
                 tick: Callable[[], None], heartbeat: Callable[[], None],
                 heartbeat_minutes: int, watchdog: Callable[[], None] | None = None,
                 watchdog_every_s: float | None = None,
                 retention: Callable[[], None] | None = None) -> None:
        self.clock = clock
        self.speed = speed
        self.step_ms = step_ms
        self.poll_delay_s = poll_delay_s
        self.tick = tick
        self.tick_interval_s = step_ms / 1000 / speed
        self.stopped = threading.Event()
        self.scheduler = BlockingScheduler(
            timezone=UTC,
            # "maintenance": old-row retention, on a thread of its own so it never takes
            # the worker a tick or the watchdog needs.
            executors={"default": APThreadPool(2), "maintenance": APThreadPool(1)},
            # coalesce: a backlog of missed ticks runs once (ingestion resumes from the
            # store, so nothing is lost); max_instances: never two ticks at once;
            # misfire_grace_time None: a late tick still runs, it is never dropped.
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )
        now = wall_now()
        self.scheduler.add_job(tick, "date", run_date=now, id="catch-up")
        self.scheduler.add_job(tick, self._tick_trigger(), id="tick")
        if watchdog is not None and watchdog_every_s:
            self.scheduler.add_job(watchdog, IntervalTrigger(
                seconds=watchdog_every_s, start_date=now, timezone=UTC), id="watchdog",
                next_run_time=now)
        self.scheduler.add_job(heartbeat, IntervalTrigger(
            minutes=heartbeat_minutes, start_date=now + timedelta(minutes=heartbeat_minutes),
            timezone=UTC), id="heartbeat")
        if retention is not None:
            # Every hour of the daemon's clock, the first one tick period after start.
            every_s = RETENTION_EVERY_S / self.speed
            self.scheduler.add_job(retention, IntervalTrigger(
                seconds=every_s, start_date=now + timedelta(seconds=self.tick_interval_s),
                timezone=UTC), id="retention", executor="maintenance")
        # Notices a step within this long: well inside the watchdog's and a tick's period.
        self.watcher = ClockStepWatcher(every_s=min(5.0, max(0.5, self.tick_interval_s)),
                                        on_step=self.realign, stop=self.stopped)

    def _tick_trigger(self) -> IntervalTrigger:
        """Every candle period, `poll_delay_s` after a candle closes by the daemon's clock."""
        delay_s = self.poll_delay_s / self.speed
        sim_now = self.clock.now_ms()
        to_close_s = (self.step_ms - sim_now % self.step_ms) / 1000 / self.speed
        first = wall_now() + timedelta(seconds=to_close_s + delay_s)
        return IntervalTrigger(seconds=self.tick_interval_s, start_date=first, timezone=UTC)

    def realign(self, step_s: float) -> None:
        """The wall clock jumped: tick now, re-align the tick to candle closes on the new
        clock, and run the watchdog and heartbeat now rather than at times set on the old
        one. (The pipeline itself never moves backward: it only adds what is new.)"""
        now = wall_now()
        self.scheduler.reschedule_job("tick", trigger=self._tick_trigger())
        self.scheduler.add_job(self.tick, "date", run_date=now, id="catch-up",
                               replace_existing=True)
        for job_id in ("watchdog", "heartbeat"):
            if self.scheduler.get_job(job_id) is not None:
                self.scheduler.modify_job(job_id, next_run_time=now)

    def run(self) -> None:
        """Run the jobs until `shutdown()` (from a signal handler or a job)."""
        self.watcher.start()
        try:
            self.scheduler.start()
        finally:
            self.stopped.set()

    def shutdown(self) -> None:
        self.stopped.set()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)

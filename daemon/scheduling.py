"""APScheduler's BlockingScheduler, made to survive the wall clock being stepped.

APScheduler 3 sleeps until a job's next run time read on the wall clock. When the clock is
stepped back by ten minutes (NTP after a bad boot, a VM resumed from a snapshot), every job,
the watchdog included, would sleep ten extra minutes and systemd would kill a healthy daemon.
This scheduler never sleeps longer than `max_wait_s`, notices a step by comparing the wall
clock with the monotonic one, and tells its owner, who re-aligns the jobs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from apscheduler.schedulers.blocking import BlockingScheduler

from .clock import wall_offset_s

log = logging.getLogger("tickcast.daemon")

STEP_THRESHOLD_S = 1.0  # smaller differences are scheduling jitter, not a step


class SteppedClockScheduler(BlockingScheduler):
    def __init__(self, *, max_wait_s: float, on_clock_step: Callable[[float], None],
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._max_wait_s = max_wait_s
        self._on_clock_step = on_clock_step
        self._offset: float | None = None

    def _process_jobs(self) -> float:
        offset = wall_offset_s()
        if self._offset is not None and abs(offset - self._offset) > STEP_THRESHOLD_S:
            step = offset - self._offset
            log.warning("the wall clock was stepped %+.1f s; re-aligning the schedule", step)
            self._on_clock_step(step)
        self._offset = offset
        wait = super()._process_jobs()
        return self._max_wait_s if wait is None else min(wait, self._max_wait_s)

"""`storage.keep_forecast_rows_days`: the live daemon deletes scored forecasts issued more
than that many days ago, once an hour, in small batches, off the tick's path.

Where and why: a job of the daemon's scheduler with an executor of its own (see
`scheduling.DaemonSchedule`), so it never takes the worker a tick or the watchdog needs,
and never runs inside a tick's write transaction. Each batch is its own short write
transaction (SQLite: the write lock for a few tens of milliseconds, then a pause so a tick
waiting for it goes first; PostgreSQL: short transactions autovacuum can clean up behind,
no long snapshot holding dead rows back). It deletes only this daemon's exchange and
timeframe (on PostgreSQL each daemon cleans its own rows) and only scored rows; the
accuracy sums (`forecast_accuracy_daily`) keep the whole history, so `report` and
`forecast_accuracy` still cover every day, and `report` says from when rows exist.
"""

from __future__ import annotations

import logging
import threading

from daemon.core.clock import Clock
from daemon.core.series import Series
from storage import StorageError, Store, forecasts

log = logging.getLogger("tickcast.live")

DAY_MS = 86_400_000
BATCH_ROWS = 5_000
PAUSE_S = 0.05  # between batches: a tick waiting for the write lock goes first


class Retention:
    def __init__(self, store: Store, series: Series, clock: Clock, keep_days: int,
                 stop: threading.Event, *, batch_rows: int = BATCH_ROWS,
                 pause_s: float = PAUSE_S) -> None:
        self.store = store
        self.series = series
        self.clock = clock
        self.keep_days = keep_days
        self.stop = stop
        self.batch_rows = batch_rows
        self.pause_s = pause_s
        self.deleted = 0

    def run_once(self) -> int:
        """Delete what is due now; returns the rows deleted. A storage error (a busy
        store, a lost server) is logged and left to the next hour."""
        if self.keep_days <= 0:
            return 0
        s = self.series
        before = self.clock.now_ms() - self.keep_days * DAY_MS
        done, after = 0, None
        try:
            while not self.stop.is_set():
                with self.store.write("delete old forecasts") as conn:
                    n, after = forecasts.delete_scored(conn, s.exchange, s.timeframe, before,
                                                       after=after, limit=self.batch_rows)
                done += n
                if n < self.batch_rows:
                    break
                self.stop.wait(self.pause_s)
        except StorageError as e:
            log.warning("retention: %s (deleted %d rows; trying again in an hour)", e, done)
        if done:
            log.info("retention: deleted %d scored forecasts issued more than %d days ago "
                     "(storage.keep_forecast_rows_days); the accuracy sums keep them",
                     done, self.keep_days)
        self.deleted += done
        return done

"""The live daemon's tick: one at a time, and what a failed tick means.

The scheduler may fire ticks on two threads at once (the start-up catch-up still busy when
the first scheduled tick fires, a re-alignment after a clock step). A tick fired while
another runs asks the running one to go round once more instead of running beside it.

Error policy, by what the operator must do: a configuration the exchange or the database
refuses, a damaged or too-new store, and a writer lock another daemon took stop the daemon
(the caller maps the error to its exit code); a locked store, a database server that cannot
be reached (restarting, connection lost) or a storage hiccup skip this tick (the next one
resumes from the store); a bug in one tick is logged and the daemon goes on.

Every tick first checks that the daemon still holds its writer lock (`dialect.WriterLock`):
one whose connection was lost is taken again before anything is written.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from daemon.core.clock import Clock, monotonic
from daemon.core.errors import ConfigError
from daemon.pipeline.source import Stopping
from daemon.pipeline.tick import Pipeline, TickReport, Trainer
from storage import (
    SchemaTooNew,
    StorageError,
    StoreBusy,
    StoreConfigError,
    StoreCorrupt,
    StoreUnavailable,
    dialect,
)

log = logging.getLogger("tickcast.live")



class WriterLockTaken(StoreBusy):
    """Another daemon took the writer lock while this one had lost it: stop (exit 75)."""


# Errors after which another tick cannot help: stop and let systemd see the exit code.
FATAL = (ConfigError, StoreConfigError, StoreCorrupt, SchemaTooNew, WriterLockTaken)


class TickLoop:
    def __init__(self, pipeline: Pipeline, clock: Clock, trainer: Trainer, *,
                 stop: threading.Event, on_fatal: Callable[[Exception], None],
                 on_report: Callable[[TickReport], None],
                 writer_lock: dialect.WriterLock | None = None) -> None:
        self.pipeline = pipeline
        self.writer_lock = writer_lock
        self._lock_lost = False
        self.clock = clock
        self.trainer = trainer
        self.stop = stop
        self.on_fatal = on_fatal
        self.on_report = on_report
        self.ticks = 0
        self.tick_errors = 0
        self.last_report: TickReport | None = None
        self.last_progress = monotonic()
        self.last_tick_s = 0.0  # how long the last completed tick took (metrics)
        # Cleared while a tick runs: stopping waits on it to leave between two ticks.
        self.idle = threading.Event()
        self.idle.set()
        self._lock = threading.Lock()
        self._again = False

    def seconds_since_progress(self) -> float:
        """Since the last tick that ended (well or with a handled error): a hung tick grows it."""
        return monotonic() - self.last_progress

    def tick(self) -> None:
        """The scheduler's job: one tick, or a request to the running one to go round again."""
        if not self._lock.acquire(blocking=False):
            self._again = True
            return
        try:
            while not self.stop.is_set():
                self._again = False
                self._tick_once()
                if not self._again:
                    break
        finally:
            self._lock.release()

    def _tick_once(self) -> None:
        self.idle.clear()
        started = monotonic()
        try:
            self._ensure_writer_lock()
            training = self.pipeline.models.training
            rep = self.pipeline.tick(self.clock.now_ms(), trainer=self.trainer)
            self.ticks += 1
            self.last_report = rep
            self.last_progress = monotonic()
            self.last_tick_s = self.last_progress - started
            log.debug("tick %d done in %.1f ms%s", self.ticks,
                      (self.last_progress - started) * 1000,
                      " (training running)" if training and self.pipeline.models.training
                      else "")
            self.on_report(rep)
        except Stopping:
            pass
        except FATAL as e:
            log.error("stopping: %s", e)
            self.on_fatal(e)
        except StoreBusy as e:
            self.tick_errors += 1
            log.warning("tick skipped: %s", e)
            self.last_progress = monotonic()
        except StorageError as e:
            self.tick_errors += 1
            log.error("tick failed, will retry next tick: %s", e)
            self.last_progress = monotonic()
        except Exception:  # noqa: BLE001 - a bug in one tick must not end the service
            self.tick_errors += 1
            log.exception("tick failed unexpectedly; continuing")
            self.last_progress = monotonic()
        finally:
            self.idle.set()

    def _ensure_writer_lock(self) -> None:
        """Write only while holding the writer lock. One whose connection was lost (server
        restarted, network) is taken again first; raises StoreUnavailable while the server
        cannot be reached (this tick is skipped), WriterLockTaken if another daemon took it."""
        lock = self.writer_lock
        if lock is None or lock.is_alive():
            return
        if not self._lock_lost:
            self._lock_lost = True
            log.warning("lost the writer lock's connection; not writing until it is held "
                        "again")
        try:
            lock.reacquire()
        except StoreUnavailable:
            raise
        except StoreBusy as e:
            raise WriterLockTaken(f"{e}; this daemon lost its lock meanwhile") from e
        self._lock_lost = False
        log.info("writer lock held again (%s); resuming from the store", lock.holder)

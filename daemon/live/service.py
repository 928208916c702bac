"""`tickcast run`: the live daemon under APScheduler and systemd.

Start-up, in this order: everything that can be refused without touching anything (the
exchange id, the model device), then the writer lock (the store's on SQLite, the exchange
and timeframe's on PostgreSQL; every tick checks it is still held),
then checking and migrating the store and loading the last accepted model. `run()` tells
systemd READY and hands the jobs to the scheduler: a tick shortly after each candle closes
(the same Pipeline.tick replay uses, see `ticker`), retraining on its own worker thread so
polling keeps its cadence (`training`), the watchdog pinged only while ticks keep completing
(`health`). SIGTERM/SIGINT stop it within seconds: a tick in flight is finished or abandoned
(its transactions are atomic), training stops at its next step.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

import torch

from daemon import wiring
from daemon.config.settings import Settings
from daemon.core import errors
from daemon.core.clock import Clock, ScaledClock, from_spec
from daemon.live.health import Health
from daemon.live.notify import Notifier
from daemon.live.retention import Retention
from daemon.live.scheduling import DaemonSchedule
from daemon.live.ticker import TickLoop
from daemon.live.training import BackgroundTrainer
from daemon.pipeline.tick import Pipeline
from storage import Store, dialect

log = logging.getLogger("tickcast.live")

STOP_GRACE_S = 7.0  # SIGTERM to exit, leaving systemd's 10 s margin
TRAINING_GRACE_S = 2.0  # for a training step in flight to notice the stop
UPGRADE_STEP_GRACE_S = 60.0  # start timeout granted per step of a store upgrade


class Daemon:
    """A started daemon: constructing it takes the lock and opens the store; `run()` runs it
    until a signal or a fatal error, `close()` releases what `__init__` took."""

    def __init__(self, cfg: Settings, *, env: dict[str, str] | None = None) -> None:
        self.cfg = cfg
        self.series = cfg.series
        self.clock: Clock = from_spec(cfg.daemon.clock)
        self.speed = self.clock.speed if isinstance(self.clock, ScaledClock) else 1.0
        tick_interval_s = self.series.step_ms / 1000 / self.speed
        self.notifier = Notifier(dict(os.environ) if env is None else env)
        self.stop = threading.Event()
        self.fatal: Exception | None = None
        # Refused before anything is created: an unknown exchange id, a missing device,
        # a checkpoint folder that cannot be derived.
        self.source = wiring.make_source(cfg, stop=self.stop,
                                         call_budget_s=max(1.0, 0.5 * tick_interval_s))
        self.models = wiring.make_models(cfg, self.series)
        # Leave a core to the tick: training must not starve polling on a small box.
        self.threads = cfg.model.threads or max(1, (os.cpu_count() or 2) - 1)
        torch.set_num_threads(self.threads)
        # One writer per store (SQLite) or per exchange and timeframe (PostgreSQL): a second
        # daemon exits 75 here, naming the holder.
        self.lock: dialect.WriterLock | None = dialect.acquire_writer_lock(
            cfg.storage.url, self.series.exchange, self.series.timeframe)
        try:
            self.store: Store = wiring.open_configured_store(
                cfg, self.clock.now_ms(), progress=upgrade_progress(self.notifier))
            self.version = self.models.load_current(self.store)
        except BaseException:
            self.lock.release()
            raise
        self.pipeline = Pipeline(cfg, self.store, self.source, self.models, self.series,
                                 history_candles=wiring.history_candles(cfg))
        self.trainer = BackgroundTrainer(self.models, self.store, self.clock, stop=self.stop,
                                         notifier=self.notifier)
        self.ticker = TickLoop(self.pipeline, self.clock, self.trainer, stop=self.stop,
                               on_fatal=self._fatal, on_report=self._tick_done,
                               writer_lock=self.lock)
        wd = self.notifier.watchdog_s
        self.health = Health(self.ticker, self.notifier, self.store, self.models, self.series,
                             hang_limit_s=max(3 * tick_interval_s, wd or 0.0, 5.0))
        self.retention = Retention(self.store, self.series, self.clock,
                                   cfg.storage.keep_forecast_rows_days, self.stop)
        self.schedule = DaemonSchedule(
            clock=self.clock, speed=self.speed, step_ms=self.series.step_ms,
            poll_delay_s=cfg.daemon.poll_delay_s, tick=self.ticker.tick,
            heartbeat=self.health.heartbeat, heartbeat_minutes=cfg.daemon.heartbeat_minutes,
            watchdog=self.health.watchdog, watchdog_every_s=wd / 2 if wd else None,
            retention=self.retention.run_once if cfg.storage.keep_forecast_rows_days else None)
        self.loaded = ", ".join(f"{m} {v}" for m, v in self.version.items() if v)
        self.exporter: Any = None
        if cfg.metrics.listen:
            self.exporter = self._exporter(cfg)
        log.info("tickcast run: %s %s %s, store %s, model %s, torch threads %d, tick every "
                 "%.3gs", self.series.exchange, ",".join(self.series.symbols),
                 self.series.timeframe, self.store.display_url,
                 self.loaded or "none yet (baselines only)", self.threads, tick_interval_s)

    def _exporter(self, cfg: Settings) -> Any:
        """`[metrics] listen`: /metrics and /healthz (bound now: a bad address is refused
        before READY, and releases what start-up took)."""
        from daemon.live.exporter import Exporter

        try:
            exporter = Exporter(cfg, store=self.store, series=self.series, models=self.models,
                                ticker=self.ticker, clock=self.clock, speed=self.speed,
                                newest=self.pipeline.newest(self.clock.now_ms()))
        except BaseException:
            self.close()
            raise
        self.trainer.on_outcomes = exporter.training_done
        return exporter

    def _tick_done(self, rep: Any) -> None:
        self.health.tick_done(rep)
        if self.exporter is not None:
            self.exporter.tick_done(rep, self.ticker.last_tick_s)

    def _fatal(self, e: Exception) -> None:
        self.fatal = e
        self.request_stop()

    def request_stop(self, *_: Any) -> None:
        if not self.stop.is_set():
            log.info("stopping")
            self.notifier.stopping()
            self.stop.set()
        self.schedule.shutdown()

    def run(self) -> int:
        if self.exporter is not None:
            self.exporter.start()
        self.notifier.ready(f"started; model {self.loaded or 'none yet'}; catching up")
        previous = {s: signal.signal(s, self.request_stop) for s in (signal.SIGTERM,
                                                                      signal.SIGINT)}
        try:
            self.schedule.run()
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
        return self.finish()

    def finish(self) -> int:
        self.stop.set()
        clean = self.ticker.idle.wait(STOP_GRACE_S)
        trained = self.trainer.shutdown(TRAINING_GRACE_S)
        code = errors.EXIT_OK if self.fatal is None else errors.exit_code_for(self.fatal)
        assert code is not None, self.fatal
        log.info("stopped after %d ticks (exit %d)", self.ticker.ticks, code)
        if not clean or not trained:
            # A request stuck in the network, or a training step that does not end: its
            # transaction was never committed, so leaving now loses nothing; waiting (or
            # interpreter shutdown joining the thread) would outlast systemd's stop timeout.
            log.warning("abandoning the step in flight to stop in time")
            logging.shutdown()
            sys.stdout.flush()
            os._exit(code)
        self.close()
        return code

    def close(self) -> None:
        if self.exporter is not None:
            self.exporter.close()
            self.exporter = None
        self.store.close()
        if self.lock is not None:
            self.lock.release()
            self.lock = None


def upgrade_progress(notifier: Notifier) -> Callable[[str, int, int], None]:
    """A long store upgrade at start (filling the accuracy sums of a year of minutes takes
    minutes, once): the terminal's bar or log lines, and systemd told it is still starting
    (its start timeout pushed a minute ahead at every step) and how far it got."""
    shown = wiring.migration_progress()

    def update(what: str, done: int, total: int) -> None:
        shown(what, done, total)
        notifier.extend_start(UPGRADE_STEP_GRACE_S,
                              f"upgrading the store: {what}, {done} of {total} days")

    return update


def run(cfg: Settings) -> int:
    return Daemon(cfg).run()

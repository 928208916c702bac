"""`tickcast run`: the live daemon under APScheduler and systemd.

Start-up: take the store's single-writer lock, check and migrate the store,
load the last accepted model, tell systemd READY. Then a tick fires shortly
after each candle closes (the same Pipeline.tick replay uses); retraining runs
on its own worker thread so polling keeps its cadence; the watchdog is pinged
only while ticks keep completing. SIGTERM/SIGINT stop it within seconds: a tick
in flight is finished or abandoned (its transactions are atomic), training
stops at its next step.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import torch
from apscheduler.executors.pool import ThreadPoolExecutor as APThreadPool
from apscheduler.triggers.interval import IntervalTrigger

from forecaster.base import History
from storage import SchemaTooNew, StorageError, StoreBusy, StoreCorrupt, dialect, forecasts

from . import errors
from .clock import Clock, ScaledClock, from_spec, iso, monotonic
from .commands import history_candles, make_source, open_store
from .models import ModelSet, checkpoint_dir
from .notify import Notifier
from .pipeline import Pipeline, TickReport
from .scheduling import SteppedClockScheduler
from .settings import Settings
from .source import Stopping

log = logging.getLogger("tickcast.daemon")

STOP_GRACE_S = 7.0  # SIGTERM to exit, leaving systemd's 10 s margin


class Daemon:
    def __init__(self, cfg: Settings, *, env: dict[str, str] | None = None) -> None:
        self.cfg = cfg
        self.env = dict(os.environ) if env is None else env
        self.clock: Clock = from_spec(cfg["daemon.clock"])
        self.speed = self.clock.speed if isinstance(self.clock, ScaledClock) else 1.0
        self.step_ms = cfg.timeframe_ms
        self.tick_interval_s = self.step_ms / 1000 / self.speed
        self.notifier = Notifier(self.env)
        self.stop = threading.Event()
        self.fatal: errors.TickcastError | StorageError | None = None
        self.ticks = 0
        self.tick_errors = 0
        self.last_progress = monotonic()
        self.tick_started: float | None = None
        self.tick_done = threading.Event()
        self.tick_done.set()
        self._tick_lock = threading.Lock()
        self._tick_again = False
        self.last_report: TickReport | None = None
        self.train_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="train")
        self.train_future: Future[Any] | None = None
        wd = self.notifier.watchdog_s
        self.hang_limit_s = max(3 * self.tick_interval_s, wd if wd else 0.0, 5.0)
        self.lock: dialect.InstanceLock | None = None

    # -- start-up ------------------------------------------------------------------------
    def start(self) -> None:
        url = self.cfg.storage_url
        self.lock = dialect.acquire_instance_lock(url)
        now = self.clock.now_ms()
        self.store = open_store(url, now, cfg=self.cfg)
        threads = int(self.cfg["model.threads"]) or max(1, (os.cpu_count() or 2) - 1)
        # Leave a core to the tick: training must not starve polling on a small box.
        torch.set_num_threads(threads)
        self.source = make_source(self.cfg, stop=self.stop)
        self.source.call_budget_s = max(1.0, 0.5 * self.tick_interval_s)
        self.models = ModelSet(self.cfg, exchange=self.cfg.exchange, symbols=self.cfg.symbols,
                               timeframe=self.cfg.timeframe, step_ms=self.step_ms,
                               ckpt_dir=checkpoint_dir(self.cfg, url))
        version = self.models.load_current(self.store)
        self.pipeline = Pipeline(self.cfg, self.store, self.source, self.models,
                                 history_candles=history_candles(self.cfg))
        log.info("tickcast run: %s %s %s, store %s, model %s, torch threads %d, tick every "
                 "%.3gs", self.cfg.exchange, ",".join(self.cfg.symbols), self.cfg.timeframe,
                 url, version or "none yet (baselines only)", threads, self.tick_interval_s)
        self.last_progress = monotonic()
        self.notifier.ready(f"started; model {version or 'none yet'}; catching up")

    # -- jobs --------------------------------------------------------------------------------
    def tick(self) -> None:
        """One tick at a time: a tick fired while another runs (the start-up catch-up still
        busy when the first scheduled one fires, a re-alignment after a clock step) asks the
        running one to go round once more instead of running beside it."""
        if not self._tick_lock.acquire(blocking=False):
            self._tick_again = True
            return
        try:
            while not self.stop.is_set():
                self._tick_again = False
                self._tick_once()
                if not self._tick_again:
                    break
        finally:
            self._tick_lock.release()

    def _tick_once(self) -> None:
        self.tick_done.clear()
        self.tick_started = monotonic()
        try:
            training = self.models.training
            rep = self.pipeline.tick(self.clock.now_ms(), trainer=self.submit_training)
            self.ticks += 1
            self.last_report = rep
            self.last_progress = monotonic()
            log.debug("tick %d done in %.1f ms%s", self.ticks,
                      (self.last_progress - self.tick_started) * 1000,
                      " (training running)" if training and self.models.training else "")
            self.notifier.status(self.status_line(rep))
        except Stopping:
            pass
        except errors.ConfigError as e:
            log.error("stopping: %s", e)
            self.fatal = e
            self.request_stop()
        except (StoreCorrupt, SchemaTooNew) as e:
            log.error("stopping: %s", e)
            self.fatal = e
            self.request_stop()
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
            self.tick_started = None
            self.tick_done.set()

    def submit_training(self, hist: History, started_at: int) -> bool:
        if self.stop.is_set() or self.models.training or (
                self.train_future is not None and not self.train_future.done()):
            return False
        self.train_future = self.train_pool.submit(self._train, hist, started_at)
        return True

    def _train(self, hist: History, started_at: int) -> None:
        try:
            self.notifier.status(f"training on {len(hist)} candles to {iso(int(hist.ts[-1]))}")
            self.models.train(self.store, hist, started_at=started_at,
                              now_fn=self.clock.now_ms, should_stop=self.stop.is_set)
        except Exception:  # noqa: BLE001
            log.exception("training failed; keeping the current model")

    def watchdog(self) -> None:
        """Ping only while the working loop makes progress: a hung tick goes silent."""
        if monotonic() - self.last_progress < self.hang_limit_s:
            self.notifier.watchdog()
        else:
            log.error("no tick has completed for %.0fs: not pinging the watchdog",
                      monotonic() - self.last_progress)

    def heartbeat(self) -> None:
        rep = self.last_report
        with self.store.read() as conn:
            pending = forecasts.pending_count(conn)
        log.info("heartbeat: %d ticks (%d failed), model %s%s, %d forecasts waiting; %s",
                 self.ticks, self.tick_errors, self.models.seq2seq.version,
                 " (training)" if self.models.training else "", pending,
                 self.status_line(rep) if rep else "no tick yet")

    def status_line(self, rep: TickReport | None) -> str:
        if rep is None:
            return "starting"
        parts = []
        for sym in self.cfg.symbols:
            st = rep.ingested.get(sym)
            if sym in rep.fetch_errors:
                parts.append(f"{sym} exchange error")
            elif st is not None and st.stored > 50:
                parts.append(f"{sym} caught up {st.stored} candles")
        newest = rep.newest_common
        lag = None if newest is None else max(0, rep.now_ms - (newest + self.step_ms)) // 1000
        train = "; training" if self.models.training else ""
        lag_text = "" if lag is None else f"lag {lag}s; "
        return (f"{lag_text}{'; '.join(parts) + '; ' if parts else ''}"
                f"model {self.models.seq2seq.version}{train}; {rep.forecasts} forecasts, "
                f"{rep.scored} scored")

    # -- running and stopping ----------------------------------------------------------------
    def request_stop(self, *_: Any) -> None:
        if not self.stop.is_set():
            log.info("stopping")
            self.notifier.stopping()
            self.stop.set()
        sched = getattr(self, "scheduler", None)
        if sched is not None and sched.running:
            sched.shutdown(wait=False)

    def run(self) -> int:
        self.start()
        self.scheduler = SteppedClockScheduler(
            max_wait_s=min(5.0, max(0.5, self.tick_interval_s)),
            on_clock_step=self._clock_stepped,
            timezone=UTC,
            executors={"default": APThreadPool(2)},
            # coalesce: a backlog of missed ticks runs once (ingestion resumes from the
            # store, so nothing is lost); max_instances: never two ticks at once;
            # misfire_grace_time None: a late tick still runs, it is never dropped.
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )
        self.scheduler.add_job(self.tick, "date", run_date=datetime.now(UTC), id="catch-up")
        self.scheduler.add_job(self.tick, self._tick_trigger(), id="tick")
        if self.notifier.watchdog_s:
            self.scheduler.add_job(self.watchdog, IntervalTrigger(
                seconds=self.notifier.watchdog_s / 2, timezone=UTC), id="watchdog",
                next_run_time=datetime.now(UTC))
        self.scheduler.add_job(self.heartbeat, IntervalTrigger(
            minutes=int(self.cfg["daemon.heartbeat_minutes"]), timezone=UTC), id="heartbeat")
        previous = {s: signal.signal(s, self.request_stop) for s in (signal.SIGTERM,
                                                                      signal.SIGINT)}
        try:
            self.scheduler.start()
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
        return self.finish()

    def _tick_trigger(self) -> IntervalTrigger:
        """Every candle period, `poll_delay_s` after a candle closes by the daemon's clock."""
        delay_s = float(self.cfg["daemon.poll_delay_s"]) / self.speed
        sim_now = self.clock.now_ms()
        to_close_s = (self.step_ms - sim_now % self.step_ms) / 1000 / self.speed
        first = datetime.now(UTC) + timedelta(seconds=to_close_s + delay_s)
        return IntervalTrigger(seconds=self.tick_interval_s, start_date=first, timezone=UTC)

    def _clock_stepped(self, step_s: float) -> None:
        """The wall clock jumped: tick now, re-align the tick to candle closes on the new
        clock, and run the watchdog and heartbeat now rather than at times set on the old one.
        (The pipeline itself never moves backward: it only adds what is new.)"""
        now = datetime.now(UTC)
        self.scheduler.reschedule_job("tick", trigger=self._tick_trigger())
        self.scheduler.add_job(self.tick, "date", run_date=now, id="catch-up",
                               replace_existing=True)
        for job_id in ("watchdog", "heartbeat"):
            if self.scheduler.get_job(job_id) is not None:
                self.scheduler.modify_job(job_id, next_run_time=now)

    def finish(self) -> int:
        self.stop.set()
        clean = self.tick_done.wait(STOP_GRACE_S)
        self.train_pool.shutdown(wait=False, cancel_futures=True)
        if self.train_future is not None and not self.train_future.done():
            try:
                self.train_future.result(timeout=2.0)
            except Exception:  # noqa: BLE001 - it already logged
                pass
        code = errors.EXIT_OK
        if isinstance(self.fatal, errors.TickcastError):
            code = self.fatal.exit_code
        elif isinstance(self.fatal, StorageError):
            code = errors.EXIT_IOERR
        log.info("stopped after %d ticks (exit %d)", self.ticks, code)
        if not clean or (self.train_future is not None and not self.train_future.done()):
            # A request stuck in the network: its transaction was never committed, so
            # leaving now loses nothing; waiting would outlast systemd's stop timeout.
            log.warning("abandoning the step in flight to stop in time")
            logging.shutdown()
            sys.stdout.flush()
            os._exit(code)
        self.store.close()
        if self.lock is not None:
            self.lock.release()
        return code


def run(cfg: Settings) -> int:
    try:
        return Daemon(cfg).run()
    except StoreBusy as e:
        log.error("%s", e)
        return errors.EXIT_TEMPFAIL

"""Retraining on a worker thread, so the live daemon keeps polling while a model trains.

At most one training runs (the model set's own lock decides; this only refuses a second
job early). Training stops at its next step once `stop` is set.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from daemon.core.clock import Clock, iso
from daemon.live.notify import Notifier
from daemon.pipeline.modelset import ModelSet, TrainOutcome
from forecaster.base import History
from storage import StorageError, Store

log = logging.getLogger("tickcast.live")


class BackgroundTrainer:
    """A :data:`~daemon.pipeline.Trainer` that hands the work to one worker thread."""

    def __init__(self, models: ModelSet, store: Store, clock: Clock, *,
                 stop: threading.Event, notifier: Notifier,
                 on_outcomes: Callable[[list[TrainOutcome]], None] | None = None) -> None:
        self.models = models
        self.on_outcomes = on_outcomes  # told each retrain's outcomes (metrics)
        self.store = store
        self.clock = clock
        self.stop = stop
        self.notifier = notifier
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="train")
        self._future: Future[None] | None = None

    @property
    def busy(self) -> bool:
        return self._future is not None and not self._future.done()

    def __call__(self, hist: History, started_at: int) -> bool:
        """Start a retrain on `hist`; False when one is running or the daemon is stopping."""
        if self.stop.is_set() or self.models.training or self.busy:
            return False
        self._future = self._pool.submit(self._train, hist, started_at)
        return True

    def _train(self, hist: History, started_at: int) -> None:
        try:
            self.notifier.status(f"training on {len(hist)} candles to {iso(int(hist.ts[-1]))}")
            out = self.models.train(self.store, hist, started_at=started_at,
                                    now_fn=self.clock.now_ms, should_stop=self.stop.is_set)
        except StorageError as e:  # the store is locked or its server restarting: no bug
            log.warning("training not stored (%s); keeping the current model", e)
            return
        except Exception:  # noqa: BLE001
            log.exception("training failed; keeping the current model")
            return
        if out and self.on_outcomes is not None:
            try:
                self.on_outcomes(out)
            except Exception:  # noqa: BLE001 - metrics must never cost a model
                log.exception("could not record the training outcome in the metrics")

    def shutdown(self, wait_s: float) -> bool:
        """Stop taking work and wait up to `wait_s` for a running training to end (it stops
        at its next step once `stop` is set); True when none is left running."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._future is not None and not self._future.done():
            try:
                self._future.result(timeout=wait_s)
            except Exception:  # noqa: BLE001 - it already logged; a timeout leaves it running
                pass
        return not self.busy

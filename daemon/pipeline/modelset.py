"""The model set of a series: every model `model.models` names, its checkpoints in the store,
its training runs.

Every model goes through one protocol (`forecaster.base.Forecaster`) and one loop: the
baselines are models like the seq2seq that happen to have nothing to learn. The set is
configuration; `register` adds a model (a test double, a new forecaster) by name.

Order of a retrain, chosen so that a crash at any point leaves a consistent store: learn
(nothing persisted) -> one transaction holding the checkpoint bytes and the training_runs
row -> adopt in memory. Forecasts only ever name a version whose row and checkpoint both
exist, and the model a restarted daemon serves, on any host, is the newest checkpoint of
its exchange and timeframe that loads.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass

import torch

from daemon.config.settings import Settings
from daemon.core import crashpoints
from daemon.core.clock import monotonic
from daemon.core.errors import ConfigError
from daemon.core.series import Series
from forecaster import checkpoint
from forecaster.base import (
    Accepted,
    Forecaster,
    History,
    Rejected,
    Stopped,
    TrainStats,
    Unchanged,
)
from forecaster.baselines import Drift, Naive
from forecaster.device import DeviceError
from forecaster.seq2seq import Seq2SeqConfig, Seq2SeqForecaster
from storage import Store, checkpoints, runs

log = logging.getLogger("tickcast.pipeline")

SEQ2SEQ = "seq2seq"
Factory = Callable[[Settings, Series], Forecaster]


def _seq2seq(cfg: Settings, series: Series) -> Forecaster:
    m = cfg.model
    conf = Seq2SeqConfig(
        symbols=series.symbols, step_ms=series.step_ms, lookback=m.lookback,
        horizon=max(m.horizons), rnn=m.rnn, hidden=m.hidden, layers=m.layers,
        dropout=m.dropout, patch=m.patch, learning_rate=m.learning_rate,
        batch_size=m.batch_size, initial_steps=m.initial_steps,
        retrain_steps=m.retrain_steps, seed=m.seed, device=m.device,
        context=min(m.train_window, Seq2SeqConfig.context),
    )
    try:
        return Seq2SeqForecaster(conf)
    except DeviceError as e:
        raise ConfigError(f"model.device: {e}") from e


def _baseline(cls: type[Naive]) -> Factory:
    def make(cfg: Settings, series: Series) -> Forecaster:
        return cls(context=cfg.model.train_window, ewma_lambda=cfg.model.baseline_ewma_lambda)
    return make


REGISTRY: dict[str, Factory] = {
    SEQ2SEQ: _seq2seq,
    "naive": _baseline(Naive),
    "drift": _baseline(Drift),
}


def register(name: str, factory: Factory) -> None:
    """Make a model available to `model.models` under `name`."""
    REGISTRY[name] = factory


@dataclass
class TrainOutcome:
    model: str
    status: str  # accepted | rejected | failed
    version: str | None
    run_id: int | None
    reason: str
    stats: TrainStats
    wall_seconds: float


class ModelSet:
    """The configured models for one exchange, symbol set and timeframe."""

    def __init__(self, cfg: Settings, series: Series) -> None:
        self.series = series
        self.keep = cfg.model.keep_checkpoints
        unknown = [n for n in cfg.model.models if n not in REGISTRY]
        if unknown:
            raise ConfigError(f"model.models: unknown model {unknown[0]!r}; known: "
                              f"{', '.join(sorted(REGISTRY))}")
        self.models: list[Forecaster] = [REGISTRY[n](cfg, series) for n in cfg.model.models]
        for n, m in zip(cfg.model.models, self.models, strict=True):
            if m.name != n:
                raise ConfigError(f"model.models: {n!r} builds a model named {m.name!r}")
        self._train_lock = threading.Lock()
        # Small networks on a CPU: one thread trains faster than several (they spin-wait
        # on each tiny step) and leaves a core to the tick. "auto" (0) = all cores but one.
        torch.set_num_threads(cfg.model.threads or max(1, (os.cpu_count() or 2) - 1))

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.models)

    def get(self, name: str) -> Forecaster | None:
        return next((m for m in self.models if m.name == name), None)

    @property
    def training(self) -> bool:
        return self._train_lock.locked()

    @property
    def context(self) -> int:
        """The most candles any model reads to forecast."""
        return max(m.context for m in self.models)

    def versions(self) -> dict[str, str]:
        return {m.name: m.version for m in self.models}

    @property
    def headline_version(self) -> str:
        """The version people ask about: seq2seq's, else the first model's."""
        m = self.get(SEQ2SEQ) or self.models[0]
        return m.version

    def load_current(self, store: Store) -> dict[str, str | None]:
        """Install each model's newest checkpoint that loads (None: none yet)."""
        out: dict[str, str | None] = {}
        s = self.series
        for m in self.models:
            out[m.name] = None
            tried = 0
            with store.read("load checkpoints") as conn:
                for ck in checkpoints.newest_first(conn, m.name, s.exchange, s.timeframe):
                    tried += 1
                    try:
                        m.loads(ck.data)
                    except checkpoint.CheckpointError as e:
                        log.error("cannot use checkpoint %s of %s: %s; trying an older one",
                                  ck.model_version, m.name, e)
                        continue
                    log.info("loaded %s model %s (checkpoint %d)", m.name, m.version, ck.id)
                    out[m.name] = m.version
                    break
            if tried and out[m.name] is None:
                log.error("no usable checkpoint of %s: it forecasts again once a new model is "
                          "trained", m.name)
        return out

    def train(self, store: Store, history: History, *, started_at: int,
              now_fn: Callable[[], int],
              should_stop: Callable[[], bool] | None = None) -> list[TrainOutcome] | None:
        """One retrain of every model, each with its persistence; None when another
        retrain is running."""
        if not self._train_lock.acquire(blocking=False):
            return None
        try:
            out = []
            for m in self.models:
                res = self._train_one(m, store, history, started_at, now_fn, should_stop)
                if res is not None:
                    out.append(res)
            return out
        finally:
            self._train_lock.release()

    def _train_one(self, m: Forecaster, store: Store, history: History, started_at: int,
                   now_fn: Callable[[], int],
                   should_stop: Callable[[], bool] | None) -> TrainOutcome | None:
        base = m.version
        t0 = monotonic()
        data: bytes | None = None
        candidate = None
        try:
            outcome = m.learn(history, should_stop=should_stop)
            if isinstance(outcome, Unchanged):
                return None
            if isinstance(outcome, Accepted):
                candidate, data = outcome.candidate, m.dumps(outcome.candidate)
            status, version, reason, stats = _describe(outcome)
        except (RuntimeError, ValueError) as e:  # e.g. CUDA out of memory
            status, version, stats = "failed", None, TrainStats()
            reason = f"failed: {type(e).__name__}: {str(e)[:300]}"
        wall = monotonic() - t0
        s = self.series
        with store.write("record training run") as conn:
            ckpt_id = None
            if data is not None and version is not None:
                ckpt_id = checkpoints.put(conn, model=m.name, model_version=version,
                                          exchange=s.exchange, timeframe=s.timeframe,
                                          created_at=now_fn(), format_version=checkpoint.FORMAT,
                                          data=data)
            run_id = runs.record(
                conn, model=m.name, model_version=version, started_at=started_at,
                finished_at=now_fn(), device=stats.device, n_windows=stats.n_windows,
                train_loss=_finite(stats.train_loss), val_loss=_finite(stats.val_loss),
                status=status, exchange=s.exchange, timeframe=s.timeframe,
                data_start_ts=int(history.ts[0]) if len(history) else None,
                data_end_ts=int(history.ts[-1]) if len(history) else None,
                base_version=base, prev_val_loss=_finite(stats.prev_val_loss),
                reason=reason[:1000], wall_seconds=wall,
                checkpoint=None if ckpt_id is None else f"checkpoints.id={ckpt_id}",
            )
            if ckpt_id is not None:
                checkpoints.prune(conn, m.name, s.exchange, s.timeframe, self.keep)
            crashpoints.hit("before-training-commit")
        crashpoints.hit("after-training-record")
        if candidate is not None:
            m.adopt(candidate)
        # Rejections are the guard doing its job; only a failure deserves a warning.
        log.log(logging.WARNING if status == "failed" else logging.INFO,
                "training %s %s in %.1fs (%d windows, %d steps): %s", m.name, status, wall,
                stats.n_windows, stats.steps, reason)
        return TrainOutcome(m.name, status, version, run_id, reason, stats, wall)


def _describe(outcome: Accepted | Rejected | Stopped) -> tuple[str, str | None, str,
                                                                  TrainStats]:
    """(status, version, reason, stats) of a learn outcome as training_runs records it."""
    match outcome:
        case Accepted(version=v, reason=r, stats=st):
            return "accepted", v, r, st
        case Rejected(code=code, reason=r, stats=st):
            return "rejected", None, f"{code}: {r}", st
        case Stopped(reason=r, stats=st):
            return "failed", None, r, st
    raise TypeError(f"not a learn outcome: {outcome!r}")


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None

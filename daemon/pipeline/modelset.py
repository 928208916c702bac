"""The model set of a series: every model `model.models` names, its checkpoints in the store,
its training runs.

Every model goes through one protocol (`forecaster.base.Forecaster`) and one loop: the
baselines are models like the seq2seq that happen to have nothing to learn. The set is
configuration; `register` adds a model (a test double, a new forecaster) by name.

Order of a retrain, chosen so that a crash at any point leaves a consistent store: every
model learns (nothing persisted) -> one transaction holding every accepted model's
checkpoint bytes and every model's training_runs row -> adopt in memory. Forecasts only ever
name a version whose row and checkpoint both exist, a retrain is recorded whole or not at
all, and the model a restarted daemon serves, on any host, is the newest checkpoint of its
exchange and timeframe that loads.
"""

from __future__ import annotations

import json
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
    Learner,
    Rejected,
    Stopped,
    TrainStats,
)
from forecaster.baselines import Drift, Naive
from forecaster.device import DeviceError
from forecaster.linear import Linear
from forecaster.seq2seq import Seq2SeqConfig, Seq2SeqForecaster
from storage import Store, checkpoints, runs

log = logging.getLogger("tickcast.pipeline")

SEQ2SEQ = "seq2seq"
Factory = Callable[[Settings, Series], Forecaster]


def _seq2seq(cfg: Settings, series: Series) -> Forecaster:
    m = cfg.model
    conf = Seq2SeqConfig(
        symbols=series.symbols, step_ms=series.step_ms, lookback=m.lookback,
        horizon=max(m.horizons), horizons=tuple(m.horizons), rnn=m.rnn, hidden=m.hidden,
        layers=m.layers, dropout=m.dropout, patch=m.patch, lags=m.linear_lags,
        learning_rate=m.learning_rate, batch_size=m.batch_size, epochs=m.epochs,
        retrain_epochs=m.retrain_epochs, initial_steps=m.initial_steps,
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


def _linear(cfg: Settings, series: Series) -> Forecaster:
    return Linear(series.symbols, series.step_ms, list(cfg.model.horizons),
                  lags=cfg.model.linear_lags)


REGISTRY: dict[str, Factory] = {
    SEQ2SEQ: _seq2seq,
    "naive": _baseline(Naive),
    "drift": _baseline(Drift),
    "linear": _linear,
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
            if not isinstance(m, Learner):
                continue
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
        """One retrain of every model that learns; None when another retrain is running.

        Every model learns first (nothing persisted); then one write transaction records
        all of them (each accepted model's checkpoint bytes and every model's
        training_runs row); only then are the new models adopted. A crash anywhere leaves
        either the whole retrain or none of it, so a resumed replay retrains exactly where
        an uninterrupted one did."""
        if not self._train_lock.acquire(blocking=False):
            return None
        try:
            done = [self._learn_one(m, history, now_fn, should_stop) for m in self.models
                    if isinstance(m, Learner)]  # the others have nothing to learn
            if not done:
                return []
            self._record(store, history, started_at, now_fn, done)
            crashpoints.hit("after-training-record")
            out = []
            for d in done:
                if d.candidate is not None:
                    d.model.adopt(d.candidate)
                o = d.outcome
                # Rejections are the guard doing its job; only a failure deserves a warning.
                log.log(logging.WARNING if o.status == "failed" else logging.INFO,
                        "training %s %s in %.1fs (%d windows, %d steps): %s", o.model,
                        o.status, o.wall_seconds, o.stats.n_windows, o.stats.steps, o.reason)
                out.append(o)
            return out
        finally:
            self._train_lock.release()

    def _learn_one(self, m: Learner, history: History, now_fn: Callable[[], int],
                   should_stop: Callable[[], bool] | None) -> _Learned:
        base = m.version
        t0 = monotonic()
        data: bytes | None = None
        candidate = None
        try:
            outcome = m.learn(history, should_stop=should_stop)
            if isinstance(outcome, Accepted):
                candidate, data = outcome.candidate, m.dumps(outcome.candidate)
            status, version, reason, stats = _describe(outcome)
        except (RuntimeError, ValueError) as e:  # e.g. CUDA out of memory
            status, version, stats = "failed", None, TrainStats()
            reason = f"failed: {type(e).__name__}: {str(e)[:300]}"
        out = TrainOutcome(m.name, status, version, None, reason, stats, monotonic() - t0)
        return _Learned(m, out, candidate, data, base, now_fn())

    def _record(self, store: Store, history: History, started_at: int,
                now_fn: Callable[[], int], done: list[_Learned]) -> None:
        s = self.series
        with store.write("record training runs") as conn:
            for d in done:
                o, st = d.outcome, d.outcome.stats
                ckpt_id = None
                if d.data is not None and o.version is not None:
                    ckpt_id = checkpoints.put(conn, model=o.model, model_version=o.version,
                                              exchange=s.exchange, timeframe=s.timeframe,
                                              created_at=now_fn(),
                                              format_version=checkpoint.FORMAT, data=d.data)
                o.run_id = runs.record(
                    conn, model=o.model, model_version=o.version, started_at=started_at,
                    finished_at=d.finished_at, device=st.device, n_windows=st.n_windows,
                    train_loss=_finite(st.train_loss), val_loss=_finite(st.val_loss),
                    status=o.status, exchange=s.exchange, timeframe=s.timeframe,
                    data_start_ts=int(history.ts[0]) if len(history) else None,
                    data_end_ts=int(history.ts[-1]) if len(history) else None,
                    base_version=d.base, prev_val_loss=_finite(st.prev_val_loss),
                    reason=o.reason[:1000], wall_seconds=o.wall_seconds,
                    evidence=None if st.evidence is None else json.dumps(st.evidence),
                    checkpoint=None if ckpt_id is None else f"checkpoints.id={ckpt_id}",
                )
                if ckpt_id is not None:
                    checkpoints.prune(conn, o.model, s.exchange, s.timeframe, self.keep)
            crashpoints.hit("before-training-commit")


@dataclass
class _Learned:
    """One model's learn, waiting to be recorded with the others of its retrain."""

    model: Learner
    outcome: TrainOutcome
    candidate: object | None
    data: bytes | None
    base: str
    finished_at: int


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

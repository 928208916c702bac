"""The model set of a store: seq2seq plus the baselines, its checkpoints and its training runs.

Order of a retrain, chosen so that a crash at any point leaves a consistent
store: train (nothing persisted) -> write the checkpoint atomically -> commit
the training_runs row -> adopt in memory. Forecasts only ever name a version
whose row and checkpoint both exist. The current model after a restart is the
newest *accepted* run whose checkpoint loads; a run that was not committed
never happened.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from forecaster import checkpoint
from forecaster.base import History, LearnResult
from forecaster.baselines import Drift, Naive
from forecaster.device import DeviceError
from forecaster.seq2seq import Candidate, Seq2SeqConfig, Seq2SeqForecaster
from storage import Store, dialect, runs

from . import crashpoints
from .clock import monotonic
from .errors import ConfigError
from .series import Series
from .settings import Settings

log = logging.getLogger(__name__)

SEQ2SEQ = "seq2seq"


def checkpoint_dir(cfg: Settings, store_url: str) -> Path:
    """model.checkpoint_dir, else a folder beside the store named after it."""
    if cfg.model.checkpoint_dir:
        return Path(cfg.model.checkpoint_dir).expanduser()
    path = dialect.sqlite_path(store_url)
    if path is None:
        raise ConfigError("model.checkpoint_dir: must be set when the store is not a SQLite file")
    return path.with_name(path.name + ".checkpoints")


def seq2seq_config(cfg: Settings, symbols: list[str], step_ms: int) -> Seq2SeqConfig:
    m = cfg.model
    return Seq2SeqConfig(
        symbols=tuple(symbols), step_ms=step_ms, lookback=m.lookback, horizon=max(m.horizons),
        rnn=m.rnn, hidden=m.hidden, layers=m.layers, dropout=m.dropout, patch=m.patch,
        learning_rate=m.learning_rate, batch_size=m.batch_size, initial_steps=m.initial_steps,
        retrain_steps=m.retrain_steps, seed=m.seed, device=m.device,
    )


@dataclass
class TrainOutcome:
    result: LearnResult
    status: str  # accepted | rejected | failed
    version: str | None
    run_id: int | None
    wall_seconds: float


class ModelSet:
    """seq2seq + naive + drift for one exchange, symbol set and timeframe."""

    def __init__(self, cfg: Settings, series: Series, *, ckpt_dir: Path) -> None:
        self.series = series
        self.exchange = series.exchange
        self.symbols = list(series.symbols)
        self.timeframe = series.timeframe
        self.step_ms = series.step_ms
        self.ckpt_dir = ckpt_dir
        self.keep = cfg.model.keep_checkpoints
        try:
            self.seq2seq = Seq2SeqForecaster(seq2seq_config(cfg, self.symbols, self.step_ms))
        except DeviceError as e:
            raise ConfigError(f"model.device: {e}") from e
        lookback = cfg.model.lookback
        self.baselines = [Naive(lookback), Drift(lookback)]
        self._train_lock = threading.Lock()
        threads = cfg.model.threads
        if threads > 0:
            torch.set_num_threads(threads)

    @property
    def training(self) -> bool:
        return self._train_lock.locked()

    def load_current(self, store: Store) -> str | None:
        """Install the newest accepted model whose checkpoint loads; None: baselines only."""
        with store.read() as conn:
            rows = runs.accepted(conn, SEQ2SEQ, self.exchange, self.timeframe)
        for r in rows:
            path = Path(r["checkpoint"] or "")
            try:
                self.seq2seq.load(path)
                log.info("loaded model %s from %s", self.seq2seq.version, path)
                return self.seq2seq.version
            except checkpoint.CheckpointError as e:
                log.error("cannot use checkpoint of model %s: %s; trying an older one",
                          r["model_version"], e)
        if rows:
            log.error("no usable checkpoint: forecasting with the baselines until a new model "
                      "is trained")
        return None

    def train(self, store: Store, history: History, *, started_at: int,
              now_fn: Callable[[], int], should_stop: Callable[[], bool] | None = None,
              steps: int | None = None) -> TrainOutcome | None:
        """One retrain with its persistence; None when another one is running."""
        if not self._train_lock.acquire(blocking=False):
            return None
        try:
            return self._train(store, history, started_at, now_fn, should_stop, steps)
        finally:
            self._train_lock.release()

    def _train(self, store: Store, history: History, started_at: int,
               now_fn: Callable[[], int], should_stop: Callable[[], bool] | None,
               steps: int | None) -> TrainOutcome:
        base = self.seq2seq.version
        t0 = monotonic()
        try:
            res = self.seq2seq.learn(history, commit=False, should_stop=should_stop, steps=steps)
            status = "accepted" if res.accepted else "rejected"
        except (RuntimeError, ValueError) as e:  # e.g. CUDA out of memory
            res = LearnResult(False, f"failed: {type(e).__name__}: {str(e)[:300]}")
            status = "failed"
        if res.reason.startswith("stopped"):
            status = "failed"
        version = res.extra.get("version") if res.accepted else None
        ckpt_path: Path | None = None
        candidate: Candidate | None = res.extra.get("candidate")
        if candidate is not None and version:
            ckpt_path = self.ckpt_dir / checkpoint.file_name(SEQ2SEQ, version)
            try:
                self.seq2seq.save(ckpt_path, {"exchange": self.exchange,
                                              "timeframe": self.timeframe}, candidate=candidate,
                                  before_rename=crashpoints.hook("checkpoint-before-rename"))
            except OSError as e:
                log.error("cannot write checkpoint %s: %s; keeping model %s", ckpt_path, e, base)
                res.accepted, status, version = False, "failed", None
                res.reason = f"failed: checkpoint not written: {e}"
                candidate, ckpt_path = None, None
        wall = monotonic() - t0
        with store.write("record training run") as conn:
            run_id = runs.start(
                conn, model=SEQ2SEQ, model_version=version, started_at=started_at,
                finished_at=now_fn(), device=res.device, n_windows=res.n_windows,
                train_loss=_finite(res.train_loss), val_loss=_finite(res.val_loss),
                status=status, exchange=self.exchange, timeframe=self.timeframe,
                data_start_ts=int(history.ts[0]) if len(history) else None,
                data_end_ts=int(history.ts[-1]) if len(history) else None,
                base_version=base, prev_val_loss=_finite(res.prev_val_loss),
                reason=res.reason[:1000], wall_seconds=wall,
                checkpoint=str(ckpt_path) if ckpt_path else None,
            )
        crashpoints.hit("after-training-record")
        if candidate is not None:
            self.seq2seq.adopt(candidate)
            protect = {ckpt_path} if ckpt_path else set()
            checkpoint.prune(self.ckpt_dir, SEQ2SEQ, self.keep, protect)
        log.log(logging.INFO if status == "accepted" else logging.WARNING,
                "training %s in %.1fs (%d windows, %d steps): %s", status, wall, res.n_windows,
                res.steps, res.reason)
        return TrainOutcome(res, status, version, run_id, wall)


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None

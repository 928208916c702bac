"""The seq2seq forecaster: volatility-normalised paths, warm-start retraining behind a
validation guard, a median that moves only on out-of-sample evidence.

`learn` fits the normaliser (the volatility prior and volume scale) on the history, trains
a copy of the current network (or a new one, whose untrained answer is the last close in
the prior's band) for a number of passes over the training windows, and lets the newest
windows decide (time-ordered, with an embargo of one horizon): the copy is offered only if
every loss was finite and validation is not worse than the model in use on the same slice.
Then, per symbol and stored horizon, the median gate (`calibration.median_gate`) decides
whether the network's median replaces the last close, from the prequential record of the
networks in use (`evidence.py`) and the candidate's own validation; and the band is
blended with the prior's and conformally widened where the network earned a weight.

The pieces live by concept: tensors and the optimisation loop in `training.py`, the
network in `network.py`, blending in `blend.py`, the checkpoint in `fitted.py`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from . import blend, evidence, fitted, judge, training, windows
from .base import (
    Accepted,
    Forecast,
    History,
    LearnOutcome,
    NotEnoughData,
    RejectCode,
    Rejected,
    Stopped,
    TrainStats,
    UnusableOutput,
)
from .device import describe, resolve
from .fitted import Fitted
from .network import Seq2Seq
from .scaling import Normaliser

WARMUP_ROWS = 100  # rows before the volatility EWMAs are trusted enough to end a window


@dataclass(frozen=True)
class Seq2SeqConfig:
    symbols: tuple[str, ...]
    step_ms: int
    lookback: int = 240
    horizon: int = 60  # steps decoded; forecasts can be asked for any 1..horizon
    horizons: tuple[int, ...] = ()  # the horizons stored (the gate's cells); () = every step
    rnn: str = "gru"
    hidden: int = 32
    layers: int = 2
    dropout: float = 0.1
    patch: int = 4
    lags: int = 2  # the highway's last returns of every symbol
    learning_rate: float = 1e-3
    batch_size: int = 64
    epochs: float = 4.0  # passes over the training windows of a first training
    retrain_epochs: float = 0.1  # ... of a warm start
    initial_steps: int = 2000  # at most this many optimiser steps (the time budget)
    retrain_steps: int = 500
    val_fraction: float = 0.2
    min_windows: int = 64
    grad_clip: float = 1.0
    context: int = 2000  # candles of history a forecast reads (volatility levels)
    # A forecast of more than e^3 (20x) up or down within the horizon is a broken model,
    # not a view on a price; toy signals dressed as log prices may need more room.
    max_log_move: float = 3.0
    evidence_keep: int = evidence.KEEP
    seed: int = 0
    device: str = "auto"

    # Fields that define the network and its record: a checkpoint must agree on all of them.
    SHAPE = ("symbols", "step_ms", "lookback", "horizon", "horizons", "rnn", "hidden",
             "layers", "patch", "lags")

    @property
    def n_features(self) -> int:
        return 3 * len(self.symbols) + windows.TIME_FEATURES

    @property
    def n_future(self) -> int:
        return windows.TIME_FEATURES + 1 + 2 * len(self.symbols)

    @property
    def stored(self) -> list[int]:
        return sorted(set(self.horizons)) if self.horizons else list(range(1, self.horizon + 1))


class Seq2SeqForecaster:
    name = "seq2seq"
    joint = True

    def __init__(self, config: Seq2SeqConfig) -> None:
        if any(not 1 <= k <= config.horizon for k in config.horizons):
            raise ValueError(f"horizons {config.horizons} beyond 1..{config.horizon}")
        self.config = config
        self.device = resolve(config.device)
        self.context = max(config.context, config.lookback + 1)
        self._fitted: Fitted | None = None

    # -- protocol ------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self._fitted is not None

    @property
    def version(self) -> str:
        return self._fitted.version if self._fitted else "untrained"

    @property
    def fitted(self) -> Fitted | None:
        return self._fitted

    def learn(self, history: History, *,
              should_stop: Callable[[], bool] | None = None) -> LearnOutcome:
        """Train on `history` (warm start when a model exists); see the module doc."""
        cfg = self.config
        self._check_history(history)
        current = self._fitted
        dev = describe(self.device)
        ends = windows.valid_ends(history, cfg.lookback, cfg.horizon)
        ends = ends[ends >= min(WARMUP_ROWS, len(history) // 4)]
        stats = TrainStats(n_windows=len(ends), device=dev)
        if len(ends) < cfg.min_windows:
            return Rejected(RejectCode.NOT_ENOUGH_DATA, f"not enough data: {len(ends)} "
                            f"complete windows, need {cfg.min_windows}", stats)
        n_val = max(8, int(len(ends) * cfg.val_fraction))
        # Embargo: no training target may reach into the validation targets.
        first_val_end = int(ends[len(ends) - n_val])
        train_ends = ends[ends <= first_val_end - cfg.horizon]
        val_ends = ends[len(ends) - n_val:]
        if len(train_ends) < cfg.min_windows // 2:
            return Rejected(RejectCode.NOT_ENOUGH_DATA, f"not enough data: {len(train_ends)} "
                            "training windows after the split", stats)
        # The normaliser (the volatility prior and its band) is a handful of numbers fitted
        # on every window whose outcome is known; the network is what validation judges.
        norm = Normaliser.fit(history, ends, cfg.horizon)
        rows = windows.row_features(history)
        sc = norm.scales(history, ends, cfg.horizon)  # train_ends: a prefix; val_ends: a suffix
        epochs, cap = ((cfg.retrain_epochs, cfg.retrain_steps) if current
                       else (cfg.epochs, cfg.initial_steps))
        steps = training.n_steps(len(train_ends), epochs, cfg.batch_size, cap)
        seed = training.seed_for(cfg.seed, int(history.ts[-1]))
        batches = training.draw(len(train_ends), steps, cfg.batch_size,
                                np.random.default_rng(seed))
        # A warm start's tenth of a pass reads a tenth of the windows: only those are built
        # (the same tensors, a third of a retrain's cost saved). A new network's highway is
        # fitted on all of them.
        take = np.arange(len(train_ends)) if current is None else np.unique(batches)
        train = training.build(history, rows, train_ends[take], norm, cfg.horizon, self.device,
                               scales=sc.take(take))
        batches = np.searchsorted(take, batches)
        val = training.build(history, rows, val_ends, norm, cfg.horizon, self.device,
                             scales=sc.take(np.arange(len(ends) - n_val, len(ends))))
        record = self._record(current, history, rows)
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(seed)
            start = copy.deepcopy(current.net) if current is not None else self._new_net()
            start.to(self.device)
            net = copy.deepcopy(start)
            if current is None:
                training.init_highway(net, train, cfg.lookback)
            run = training.fit(net, train, norm, lookback=cfg.lookback, steps=steps,
                               batch=cfg.batch_size, lr=cfg.learning_rate,
                               grad_clip=cfg.grad_clip, batches=batches,
                               should_stop=should_stop)
        stats = TrainStats(len(ends), run.steps, run.loss, device=dev)
        if run.stopped:
            return Stopped("stopped: shutting down", stats)
        if run.error:
            return Rejected(RejectCode.NON_FINITE, run.error, stats)
        # Two candidates under the refreshed normaliser, each judged as it would serve:
        # the trained network, and the network it started from (untrained: the prior's
        # own band around the last close).
        assert val.moves is not None
        val_ts = history.ts[val_ends]

        def verdict(n: Seq2Seq) -> judge.Verdict:
            raw = training.predict_raw(n, val, norm, cfg.lookback)
            return judge.judge(raw, norm, val.scales, val.moves, record, val_ts, cfg.stored,
                               cfg.symbols)

        v, kept = verdict(net), verdict(start)
        if not math.isfinite(v.loss) and not math.isfinite(kept.loss):
            return Rejected(RejectCode.NON_FINITE, "validation loss is not finite", stats)
        note = "trained network"
        if not v.beats(kept):
            net, v = start, kept
            note = ("the prior's band (training did not beat it)" if current is None
                    else "network unchanged, prior refreshed (training did not help)")
        prev_loss = None if current is None else self._served_loss(current, history, rows,
                                                                    val)
        stats = TrainStats(len(ends), run.steps, run.loss, v.loss, prev_loss, dev, v.proof)
        if current is not None and prev_loss is not None and (
                math.isfinite(prev_loss) and v.loss > prev_loss):
            return Rejected(RejectCode.WORSE_THAN_CURRENT,
                            f"validation {v.loss:.5f} worse than current {prev_loss:.5f}; "
                            f"keeping {current.version}", stats)
        net.eval()
        version = fitted.version_of(net, norm, [v.alpha, v.gamma, v.widen], int(history.ts[-1]))
        f = Fitted(net, norm, v.alpha, v.gamma, v.widen, version, int(history.ts[0]),
                   int(history.ts[-1]), v.loss, record, v.proof)
        why = (f"validation {v.loss:.5f} <= current {prev_loss:.5f}; {note}" if current
               else f"first model, validation {v.loss:.5f}; {note}")
        return Accepted(f, version, f"{why}; {judge.median_note(v.proof)}", stats)

    def adopt(self, candidate: Any) -> None:
        if not isinstance(candidate, Fitted):
            raise TypeError("not a seq2seq candidate")
        self._fitted = candidate

    def forecast(self, history: History, horizons: list[int]) -> list[Forecast]:
        f = self._fitted
        if f is None:
            raise NotEnoughData("seq2seq has no trained model yet")
        cfg = self.config
        if max(horizons) > cfg.horizon:
            raise ValueError(f"horizon {max(horizons)} beyond the model's {cfg.horizon}")
        self._check_history(history)
        if not windows.window_ok(history, cfg.lookback):
            raise NotEnoughData(f"window ending {history.ts[-1] if len(history) else '-'} is "
                                f"shorter than {cfg.lookback + 1} candles or has a hole")
        h = history.tail(self.context)
        sc = f.norm.scales_last(h, cfg.horizon)
        if not np.all(np.isfinite(sc.path_sd)) or np.any(sc.path_sd <= 0):
            raise NotEnoughData("no volatility estimate yet")
        if f.uses_network:
            tail = h.tail(cfg.lookback + 1)
            w = training.build(tail, windows.row_features(tail), np.array([cfg.lookback]),
                               f.norm, cfg.horizon, self.device, targets=False, scales=sc)
            r = training.predict_raw(f.net, w, f.norm, cfg.lookback)  # (1, H, S, 3)
        else:
            # No median move and no band weight anywhere: the forecast is the prior's band
            # around the last close, exactly, without running the network.
            r = np.zeros((1, cfg.horizon, len(cfg.symbols), 3))
        lo, med, hi = (a[0] for a in blend.serve(r, blend.prior_band(f.norm, sc), f.alpha,
                                                  f.gamma, f.widen))
        k = np.asarray(horizons) - 1
        used = np.stack([lo[k], med[k], hi[k]])
        if not np.all(np.isfinite(used)) or np.max(np.abs(used)) > cfg.max_log_move:
            raise UnusableOutput(f"model {f.version} produced non-finite or implausible "
                                 "returns; not forecasting with it")
        last = h.close[-1]
        return [Forecast(sym, hz, float(last[s]) * math.exp(med[hz - 1, s]),
                         float(last[s]) * math.exp(lo[hz - 1, s]),
                         float(last[s]) * math.exp(hi[hz - 1, s]))
                for s, sym in enumerate(cfg.symbols) for hz in horizons]

    def dumps(self, candidate: Any | None = None) -> bytes:
        f = candidate if candidate is not None else self._fitted
        if not isinstance(f, Fitted):
            raise ValueError("nothing to save: no trained model")
        return fitted.dumps(f, self.name, self._config_json())

    def loads(self, data: bytes) -> None:
        cfg = self.config
        f = fitted.loads(data, model=self.name, config=self._config_json(),
                         shape=Seq2SeqConfig.SHAPE, new_net=self._new_net,
                         calib_shape=(cfg.horizon, len(cfg.symbols)),
                         cells=len(cfg.stored) * len(cfg.symbols))
        f.net.to(self.device).eval()
        self._fitted = f

    # -- internals -----------------------------------------------------------------
    def _check_history(self, h: History) -> None:
        if tuple(h.symbols) != tuple(self.config.symbols) or h.step_ms != self.config.step_ms:
            raise ValueError(f"history of {h.symbols} at {h.step_ms} ms does not match the "
                             f"model's {self.config.symbols} at {self.config.step_ms} ms")

    def _config_json(self) -> dict[str, Any]:
        cfg = asdict(self.config)
        cfg.pop("device")
        return cfg

    def _new_net(self) -> Seq2Seq:
        c = self.config
        return Seq2Seq(c.n_features, len(c.symbols), c.horizon, hidden=c.hidden,
                       layers=c.layers, dropout=c.dropout, rnn=c.rnn, patch=c.patch,
                       n_future=c.n_future, lags=c.lags)

    def _served_loss(self, current: Fitted, h: History, rows: np.ndarray,
                     val: training.Windows) -> float:
        """The model in use, as it serves today (its own prior, its own gates), scored on
        the validation slice in the refreshed prior's units."""
        cfg = self.config
        assert val.moves is not None
        w = training.build(h, rows, val.ends.cpu().numpy(), current.norm, cfg.horizon,
                           self.device, targets=False)
        if current.uses_network:
            raw = training.predict_raw(current.net, w, current.norm, cfg.lookback)
        else:
            # As `forecast` serves it: without the network's output, which no gate lets in
            # (the same numbers when it is finite, and one validation pass less a retrain).
            raw = np.zeros((len(w), cfg.horizon, len(cfg.symbols), 3))
        lo, med, hi = blend.serve(raw, blend.prior_band(current.norm, w.scales), current.alpha,
                                  current.gamma, current.widen)
        return judge.served_loss(lo, med, hi, val.moves, val.scales.path_sd)

    def _record(self, current: Fitted | None, h: History,
                rows: np.ndarray) -> evidence.Record:
        """The prequential record brought up to the end of `h` by the network in use."""
        cfg = self.config
        cells = len(cfg.stored) * len(cfg.symbols)
        if current is None:
            return evidence.Record.empty(int(h.ts[-1]), cells)
        k = np.asarray(cfg.stored) - 1

        def medians(ends: np.ndarray) -> np.ndarray:
            w = training.build(h, rows, ends, current.norm, cfg.horizon, self.device,
                               targets=False)
            raw = training.predict_raw(current.net, w, current.norm, cfg.lookback)
            return raw[..., 1][:, k, :].reshape(len(ends), cells)  # horizon-major

        return evidence.extend(current.record, h, cfg.lookback, cfg.stored, medians,
                               cfg.evidence_keep)

"""`linear`: the cross-market floor the network must clear.

Per symbol and stored horizon h, a ridge regression of the h-step log return on the last
`lags` one-step log returns of every symbol (lags × S features, nothing else: all of it is
known at the issue time), refitted at every retrain on the training window. That is the
model in which BTC/EUR following BTC/USD within the minute (and back) shows, so the seq2seq
is measured against it rather than only against the last close.

Choices, and why:
- The penalty is chosen per cell on the newest fifth of the window (time-ordered, with an
  embargo of h, scored by MAE: the store's error) from a grid whose largest value is, in
  effect, "no coefficients": where the regression does not beat the last close on the
  newest data (a thin market's many zero returns make its mean a poor median), it
  forecasts the last close rather than lose to it. Then it is refitted on the whole window.
- Features are standardised (so one penalty suits every symbol and timeframe) and clipped
  at ±8 standard deviations: one crash candle must not set the slope for two weeks.
- No intercept: a drift estimated on two weeks of returns is noise (`drift` is its own
  baseline).
- No band: `lower` and `upper` are NULL. It is a point floor; the bands have their own bar
  (the RiskMetrics band of `naive` and `drift`).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import torch

from . import checkpoint
from .base import (
    Accepted,
    Forecast,
    History,
    LearnOutcome,
    NotEnoughData,
    RejectCode,
    Rejected,
    TrainStats,
)
from .volatility import log_returns

PENALTIES = (1e-4, 1e-2, 1.0, 1e2, 1e6)  # ridge penalty per window, on standardised features
CLIP = 8.0
VAL_FRACTION = 0.2
MIN_WINDOWS = 200


@dataclass(frozen=True)
class LinearFit:
    coef: np.ndarray  # (K, F, S) on standardised features, per stored horizon
    scale: np.ndarray  # (F,) feature standard deviations
    penalty: np.ndarray  # (K, S) the chosen penalty per cell
    version: str
    data_start_ts: int
    data_end_ts: int


def features(close: np.ndarray, lags: int) -> np.ndarray:
    """(n, lags × S): at row t, the returns r(t), r(t−1), ... of every symbol (NaN where a
    close is missing).

    >>> c = np.exp(np.array([[0.0, 0.0], [0.1, 0.2], [0.3, 0.2]]))
    >>> np.round(features(c, 2)[2], 6).tolist()
    [0.2, 0.0, 0.1, 0.2]
    """
    r = log_returns(close)
    n, s = r.shape
    out = np.full((n, lags * s), np.nan)
    for j in range(lags):
        out[j:, j * s:(j + 1) * s] = r[:n - j]
    return out


def ridge(x: np.ndarray, y: np.ndarray, penalty: float) -> np.ndarray:
    """Coefficients minimising |y − xb|² + penalty·n·|b|² (x standardised, no intercept).

    >>> x = np.random.default_rng(0).standard_normal((1000, 2))
    >>> np.round(ridge(x, x @ [0.5, -1.0], 1e-9), 6).tolist()
    [0.5, -1.0]
    """
    f = x.shape[1]
    return np.linalg.solve(x.T @ x + penalty * len(x) * np.eye(f), x.T @ y)


class Linear:
    name = "linear"
    joint = True

    def __init__(self, symbols: tuple[str, ...], step_ms: int, horizons: list[int], *,
                 lags: int = 2) -> None:
        if lags < 1:
            raise ValueError("lags must be at least 1")
        self.symbols = tuple(symbols)
        self.step_ms = step_ms
        self.horizons = sorted(set(horizons))
        self.lags = lags
        self.context = lags + 1
        self._fit: LinearFit | None = None

    @property
    def ready(self) -> bool:
        return self._fit is not None

    @property
    def version(self) -> str:
        return self._fit.version if self._fit else "untrained"

    def learn(self, history: History, *,
              should_stop: Callable[[], bool] | None = None) -> LearnOutcome:
        self._check(history)
        x = features(history.close, self.lags)
        lc = np.log(history.close)
        n, n_s = len(history), len(self.symbols)
        coef = np.zeros((len(self.horizons), x.shape[1], n_s))
        penalty = np.zeros((len(self.horizons), n_s))
        ok_x = np.all(np.isfinite(x), axis=1)
        usable = 0
        with np.errstate(invalid="ignore"):
            scale = np.nanstd(np.where(ok_x[:, None], x, np.nan), axis=0)
        if not np.all(np.isfinite(scale) & (scale > 0)):
            return Rejected(RejectCode.NOT_ENOUGH_DATA, "not enough data: no returns to "
                            "regress on", TrainStats())
        z = np.clip(x / scale, -CLIP, CLIP)
        for i, k in enumerate(self.horizons):
            y = np.full((n, n_s), np.nan)
            y[:n - k] = lc[k:] - lc[:n - k]
            for s in range(n_s):
                rows = np.flatnonzero(ok_x & np.isfinite(y[:, s]))
                usable = max(usable, len(rows))
                if len(rows) < MIN_WINDOWS:
                    return Rejected(RejectCode.NOT_ENOUGH_DATA, f"not enough data: "
                                    f"{len(rows)} complete windows, need {MIN_WINDOWS}",
                                    TrainStats(n_windows=len(rows)))
                penalty[i, s] = _choose(z[rows], y[rows, s], k)
                coef[i, :, s] = ridge(z[rows], y[rows, s], penalty[i, s])
        end = int(history.ts[-1])
        fit = LinearFit(coef, scale, penalty, _version(coef, scale, end), int(history.ts[0]),
                        end)
        cells = [{"symbol": sym, "horizon": k, "penalty": float(penalty[i, s]),
                  "coef": [round(float(c), 6) for c in coef[i, :, s] / scale]}
                 for i, k in enumerate(self.horizons) for s, sym in enumerate(self.symbols)]
        stats = TrainStats(n_windows=usable, evidence={"cells": cells})
        moving = sum(1 for c in cells if c["penalty"] < PENALTIES[-1])
        return Accepted(fit, fit.version, f"ridge refitted on {usable} windows; "
                        f"{moving} of {len(cells)} cells use their regression", stats)

    def adopt(self, candidate: Any) -> None:
        if not isinstance(candidate, LinearFit):
            raise TypeError("not a linear candidate")
        self._fit = candidate

    def forecast(self, history: History, horizons: list[int]) -> list[Forecast]:
        f = self._fit
        if f is None:
            raise NotEnoughData("linear has no fitted model yet")
        self._check(history)
        missing = [k for k in horizons if k not in self.horizons]
        if missing:
            raise ValueError(f"linear was fitted for horizons {self.horizons}, not {missing}")
        h = history.tail(self.context)
        x = features(h.close, self.lags)[-1] if len(h) == self.context else None
        if x is None or not np.all(np.isfinite(x)):
            raise NotEnoughData(f"the last {self.context} candles of every symbol are needed")
        z = np.clip(x / f.scale, -CLIP, CLIP)
        last = h.close[-1]
        out = []
        for s, sym in enumerate(self.symbols):
            for k in horizons:
                move = float(z @ f.coef[self.horizons.index(k), :, s])
                out.append(Forecast(sym, k, float(last[s]) * math.exp(move), None, None))
        return out

    def dumps(self, candidate: Any | None = None) -> bytes:
        f = candidate if candidate is not None else self._fit
        if not isinstance(f, LinearFit):
            raise ValueError("nothing to save: no fitted model")
        meta = {"model": self.name, "version": f.version, "symbols": list(self.symbols),
                "step_ms": self.step_ms, "horizons": self.horizons, "lags": self.lags,
                "data_start_ts": f.data_start_ts, "data_end_ts": f.data_end_ts}
        return checkpoint.dumps({"coef": torch.as_tensor(f.coef),
                                 "scale": torch.as_tensor(f.scale),
                                 "penalty": torch.as_tensor(f.penalty)}, meta)

    def loads(self, data: bytes) -> None:
        tensors, meta = checkpoint.loads(data, "checkpoint")
        mine = {"model": self.name, "symbols": list(self.symbols), "step_ms": self.step_ms,
                "horizons": self.horizons, "lags": self.lags}
        diffs = [f"{k} {meta.get(k)!r} != {v!r}" for k, v in mine.items() if meta.get(k) != v]
        if diffs:
            raise checkpoint.CheckpointError(f"made for another model ({'; '.join(diffs)})")
        try:
            coef, scale, penalty = (tensors[k].numpy().astype(np.float64)
                                    for k in ("coef", "scale", "penalty"))
            fit = LinearFit(coef, scale, penalty, str(meta["version"]),
                            int(meta["data_start_ts"]), int(meta["data_end_ts"]))
        except (KeyError, TypeError, ValueError) as e:
            raise checkpoint.CheckpointError(f"not a linear checkpoint: {e}") from e
        n_f, n_s = self.lags * len(self.symbols), len(self.symbols)
        if coef.shape != (len(self.horizons), n_f, n_s) or scale.shape != (n_f,) or \
                not (np.all(np.isfinite(coef)) and np.all(scale > 0)):
            raise checkpoint.CheckpointError("linear coefficients have the wrong shape or "
                                             "non-finite values")
        self._fit = fit

    def _check(self, h: History) -> None:
        if tuple(h.symbols) != self.symbols or h.step_ms != self.step_ms:
            raise ValueError(f"history of {h.symbols} at {h.step_ms} ms does not match the "
                             f"model's {self.symbols} at {self.step_ms} ms")


def _choose(z: np.ndarray, y: np.ndarray, horizon: int) -> float:
    """The penalty whose fit on the older windows has the lowest MAE on the newest fifth;
    a tie goes to the larger penalty (closer to the last close)."""
    n_val = max(1, int(len(z) * VAL_FRACTION))
    train = slice(0, max(0, len(z) - n_val - horizon))
    if train.stop < z.shape[1] * 10:
        return PENALTIES[-1]
    scores = [float(np.mean(np.abs(y[-n_val:] - z[-n_val:] @ ridge(z[train], y[train], p))))
              for p in PENALTIES]
    best = min(scores)
    return max(p for p, sc in zip(PENALTIES, scores, strict=True) if sc <= best * (1 + 1e-12))


def _version(coef: np.ndarray, scale: np.ndarray, end_ts: int) -> str:
    h = hashlib.sha256(np.ascontiguousarray(coef).tobytes() + scale.tobytes()).hexdigest()
    when = datetime.fromtimestamp(end_ts / 1000, tz=UTC).strftime("%Y%m%dT%H%MZ")
    return f"{when}-{h[:8]}"

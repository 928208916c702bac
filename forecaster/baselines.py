"""The baselines: models like the seq2seq, through the same protocol, with honest bands.

`naive` forecasts the last close for every horizon (the random walk, the bar every model
must clear). `drift` is the textbook drift method fitted on the history it is given (the
training window): the slope of the log close from its first to its last point, carried
on from the last close. Both carry the RiskMetrics 80 % band: an exponentially weighted
variance of one-step log returns (decay `ewma_lambda` per candle, mean zero), widened with
the square root of the horizon. That band is the standard a learned band has to beat.
Neither learns anything (they are `Forecaster`s without the `Trainable` part): what they
need is in the history handed to `forecast`.
"""

from __future__ import annotations

import math

import numpy as np

from .band import Z80
from .base import Forecast, History, NotEnoughData
from .volatility import riskmetrics_sigma


class _Baseline:
    name = "baseline"
    code_version = "2"
    joint = False

    def __init__(self, *, context: int = 1500, ewma_lambda: float = 0.94) -> None:
        if context < 2:
            raise ValueError("context must be at least 2 candles")
        if not 0 < ewma_lambda < 1:
            raise ValueError("ewma_lambda must be in (0, 1)")
        self.context = context
        self.ewma_lambda = ewma_lambda

    @property
    def version(self) -> str:
        return f"{self.name}-{self.code_version}"

    def _slope(self, logc: np.ndarray) -> np.ndarray:
        return np.zeros(logc.shape[1])

    def forecast(self, history: History, horizons: list[int]) -> list[Forecast]:
        if len(history) == 0:
            raise NotEnoughData("empty history")
        h = history.tail(self.context)
        last = h.close[-1]
        if not np.all(np.isfinite(last)):
            raise NotEnoughData("the newest candle is missing")
        sigma = riskmetrics_sigma(h.close, self.ewma_lambda)
        with np.errstate(divide="ignore", invalid="ignore"):
            mu = self._slope(np.log(h.close))
        out = []
        for s, sym in enumerate(h.symbols):
            for k in horizons:
                centre = float(last[s]) * math.exp(float(mu[s]) * k)
                if math.isfinite(sigma[s]) and sigma[s] > 0:
                    half = Z80 * float(sigma[s]) * math.sqrt(k)
                    lo, hi = centre * math.exp(-half), centre * math.exp(half)
                else:  # not a single return yet: no band rather than a made-up one
                    lo = hi = None
                out.append(Forecast(sym, k, centre, lo, hi))
        return out


class Naive(_Baseline):
    name = "naive"


class Drift(_Baseline):
    name = "drift"

    def _slope(self, logc: np.ndarray) -> np.ndarray:
        """(log close at the last point − at the first) / candles between, per symbol;
        missing candles are skipped, never filled; 0 without two points."""
        out = np.zeros(logc.shape[1])
        for s in range(logc.shape[1]):
            ok = np.flatnonzero(np.isfinite(logc[:, s]))
            if len(ok) >= 2 and ok[-1] > ok[0]:
                out[s] = (logc[ok[-1], s] - logc[ok[0], s]) / (ok[-1] - ok[0])
        return out


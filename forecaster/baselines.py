"""Naive baselines that share the forecaster protocol.

`naive` forecasts the last close for every horizon (the random walk, the bar
every model must clear). `drift` extends the average log return of its window
(the classic drift method). Both carry an 80 % band from the window's own
one-step spread, widened with sqrt(horizon) as a random walk would.
Neither learns anything: their windows are their whole state.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from . import windows
from .base import Forecast, History, LearnResult, NotEnoughData

Z80 = 1.2815515655446004  # standard normal 90 % quantile: a central 80 % band


class _Baseline:
    name = "baseline"
    code_version = "1"

    def __init__(self, lookback: int = 240) -> None:
        if lookback < 2:
            raise ValueError("lookback must be at least 2")
        self.lookback = lookback

    @property
    def version(self) -> str:
        return f"{self.name}-{self.code_version}"

    @property
    def ready(self) -> bool:
        return True

    def learn(self, history: History) -> LearnResult:
        return LearnResult(True, f"{self.name}: nothing to learn")

    def _window(self, window: History) -> tuple[np.ndarray, np.ndarray]:
        if len(window) == 0:
            raise NotEnoughData("empty window")
        tail = window.tail(min(len(window), self.lookback + 1))
        if not np.all(np.isfinite(tail.close[-1])):
            raise NotEnoughData("the newest candle is missing")
        r = windows.log_returns(tail.close)[1:]
        return tail.close[-1], r

    def _drift(self, r: np.ndarray) -> np.ndarray:
        return np.zeros(r.shape[1])

    def forecast(self, window: History, horizons: list[int]) -> list[Forecast]:
        last, r = self._window(window)
        with warnings.catch_warnings():
            # A window without a single complete return gives NaN: no band, see below.
            warnings.simplefilter("ignore", RuntimeWarning)
            sigma = np.sqrt(np.nanmean(r * r, axis=0)) if len(r) else np.full(len(last), np.nan)
            mu = self._drift(r)
        out = []
        for s, sym in enumerate(window.symbols):
            for h in horizons:
                centre = float(last[s]) * math.exp(mu[s] * h)
                if math.isfinite(sigma[s]) and len(r) >= 2:
                    band = Z80 * float(sigma[s]) * math.sqrt(h)
                    lo, hi = centre * math.exp(-band), centre * math.exp(band)
                else:
                    lo = hi = None
                out.append(Forecast(sym, h, centre, lo, hi))
        return out


class Naive(_Baseline):
    name = "naive"


class Drift(_Baseline):
    name = "drift"

    def _drift(self, r: np.ndarray) -> np.ndarray:
        # Average over the window's returns; holes (NaN) are left out, not filled.
        mu = np.nanmean(r, axis=0) if len(r) else np.zeros(r.shape[1])
        return np.where(np.isfinite(mu), mu, 0.0)

"""The per-candle estimates the volatility prior is built from, and its constants: log
returns, the Garman–Klass range, the RiskMetrics volatility of the baselines, the variance
proxy, and the features a fitted next-candle level mixes. Pure numpy; `volatility` (the
prior) and `volfit` (its fitting) both read them, so neither imports the other's module for
them.
"""

from __future__ import annotations

import math

import numpy as np

from .base import History
from .ewma import ewma_last

_GK_C = 2 * math.log(2) - 1
LAM_FAST_GRID = (0.9, 0.94, 0.97)
LAM_SLOW_GRID = (0.99, 0.995, 0.998)
PHI_GRID = (0.8, 0.9, 0.95, 0.98)
FAST_SPEEDS = (0.8, 0.94, 0.98, 0.995)  # the EWMAs a fitted fast level mixes
LEVEL_SPEED = 0.998  # the long-run level that puts other symbols' EWMAs in this one's units
SLOW_SEED = 200  # values averaged before a slow EWMA starts (its first estimate)


def log_returns(close: np.ndarray) -> np.ndarray:
    """One-step log returns, row 0 NaN (and NaN next to a missing close).

    >>> log_returns(np.array([[1.0], [np.e], [np.e]])).ravel().tolist()
    [nan, 1.0, 0.0]
    """
    close = np.asarray(close, dtype=np.float64)
    out = np.full_like(close, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        out[1:] = np.log(close[1:] / close[:-1])
    return out


def garman_klass(o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Garman–Klass variance of each candle: ½·ln(H/L)² − (2 ln 2 − 1)·ln(C/O)², floored at 0.

    >>> round(float(garman_klass(np.array(1.0), np.array(1.1), np.array(0.9), np.array(1.0))), 6)
    0.020134
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        v = 0.5 * np.log(h / lo) ** 2 - _GK_C * np.log(c / o) ** 2
    return np.where(np.isnan(v), np.nan, np.maximum(v, 0.0))


def riskmetrics_sigma(close: np.ndarray, lam: float) -> np.ndarray:
    """RiskMetrics one-step volatility at the last row: sqrt of the EWMA of squared log
    returns (mean zero), per column; NaN where the history holds no return.

    >>> c = np.exp(np.array([[0.0], [0.1], [0.0]]))
    >>> round(float(riskmetrics_sigma(c, 0.5)[0]), 6)  # mean of 0.01 and 0.01
    0.1
    """
    r = log_returns(close)
    return np.sqrt(ewma_last(r * r, lam))


def variance_proxy(h: History, range_weight: float) -> np.ndarray:
    """Per-candle variance estimate (n, S): squared log return blended with Garman–Klass."""
    r = log_returns(h.close)
    gk = garman_klass(h.open, h.high, h.low, h.close)
    x = (1 - range_weight) * r * r + range_weight * gk
    # Without a return (first row, after a hole) the range alone still says something.
    return np.where(np.isnan(r), gk, x)


def mix_features(own: np.ndarray, level: np.ndarray) -> np.ndarray:
    """The inputs of a fitted fast level (2K, ..., S): each symbol's own EWMAs at K speeds
    (own: (K, ..., S)), then the other symbols' (their mean, each put in this symbol's units
    by the ratio of the long-run levels (..., S)): the same coin quoted elsewhere moves with
    it, and a thin market's own proxy is the noisier one. One symbol: the second half is 0;
    where no other symbol has a level yet, the symbol's own EWMAs stand in.

    >>> own = np.array([[[1.0, 4.0]]]); level = np.array([[2.0, 8.0]])
    >>> mix_features(own, level)[:, 0].tolist()  # EUR's 4 at level 8 is 1 at USD's level 2
    [[1.0, 4.0], [1.0, 4.0]]
    """
    n_s = own.shape[-1]
    cross = np.zeros_like(own)
    if n_s > 1:
        with np.errstate(divide="ignore", invalid="ignore"):
            unit = np.where(level > 0, own / level, np.nan)  # in units of the own level
        total = np.nansum(unit, axis=-1, keepdims=True)
        count = np.sum(np.isfinite(unit), axis=-1, keepdims=True)
        others = count - np.isfinite(unit)
        with np.errstate(divide="ignore", invalid="ignore"):
            cross = (total - np.nan_to_num(unit)) / others * level
        # No other symbol has a level yet: its own EWMA stands in for theirs.
        cross = np.where(others > 0, cross, own)
    return np.concatenate([own, cross])

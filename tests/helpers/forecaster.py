"""Small seq2seq configurations and synthetic price series the forecaster learns or must
not learn from (the forecaster tests, and the subprocesses of the reliability tests)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from forecaster.base import History
from forecaster.seq2seq import Seq2SeqConfig

STEP = 60_000
T0 = 1_700_000_000_000 - 1_700_000_000_000 % STEP
SYMS = ("BTC/USD", "BTC/EUR")


def sine_pair(n: int = 1500, noise: float = 0.0, seed: int = 0) -> History:
    """Two related noiseless (or noisy) price paths on a minute grid."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    usd = 100 * np.exp(0.02 * np.sin(2 * np.pi * t / 40) + noise * rng.standard_normal(n))
    eur = 90 * np.exp(0.015 * np.sin(2 * np.pi * t / 40 + 0.7) + noise * rng.standard_normal(n))
    close = np.stack([usd, eur], axis=1)
    vol = np.full_like(close, 2.0) + np.sin(t / 7)[:, None] + 1.5
    return History(T0 + t * STEP, close, vol, SYMS, STEP)


def candles_from_returns(r: np.ndarray) -> History:
    """Candles whose close follows log returns r (n, S); high/low bracket open and close."""
    close = 100 * np.exp(np.cumsum(r, axis=0))
    open_ = np.vstack([close[:1], close[:-1]])
    spread = np.abs(r) * 0.5 + 1e-5
    high = np.maximum(open_, close) * np.exp(spread)
    low = np.minimum(open_, close) * np.exp(-spread)
    n = len(r)
    return History(T0 + np.arange(n) * STEP, close, np.ones_like(close), SYMS, STEP,
                   open_, high, low)


def garch_returns(n: int, seed: int, omega: float = 2e-7, a: float = 0.12,
                  b: float = 0.86) -> np.ndarray:
    """Two symbols sharing a GARCH(1,1) volatility (strong clustering), Gaussian shocks."""
    rng = np.random.default_rng(seed)
    var = omega / (1 - a - b)
    out = np.empty((n, 2))
    for i in range(n):
        z = rng.standard_normal(2)
        out[i] = np.sqrt(var) * np.array([z[0], 0.9 * z[0] + math.sqrt(1 - 0.81) * z[1]])
        var = omega + a * out[i, 0] ** 2 + b * var
    return out


def small_config(**kw: Any) -> Seq2SeqConfig:
    base = dict(symbols=SYMS, step_ms=STEP, lookback=32, horizon=8, hidden=16, layers=2,
                dropout=0.0, patch=4, batch_size=64, initial_steps=200, retrain_steps=20,
                epochs=20.0, retrain_epochs=2.0,
                min_windows=32, learning_rate=3e-3, device="cpu", context=600)
    base.update(kw)
    return Seq2SeqConfig(**base)  # type: ignore[arg-type]

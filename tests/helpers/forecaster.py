"""A small seq2seq configuration and a toy price pair it learns quickly (the forecaster
tests, and the subprocesses of the reliability tests, use both)."""

from __future__ import annotations

from typing import Any

import numpy as np

from forecaster.base import History
from forecaster.seq2seq import Seq2SeqConfig

STEP = 60_000
SYMS = ("BTC/USD", "BTC/EUR")


def sine_pair(n: int = 1500, noise: float = 0.0, seed: int = 0) -> History:
    """Two related noiseless (or noisy) price paths on a minute grid."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    usd = 100 * np.exp(0.02 * np.sin(2 * np.pi * t / 40) + noise * rng.standard_normal(n))
    eur = 90 * np.exp(0.015 * np.sin(2 * np.pi * t / 40 + 0.7) + noise * rng.standard_normal(n))
    close = np.stack([usd, eur], axis=1)
    vol = np.full_like(close, 2.0) + np.sin(t / 7)[:, None] + 1.5
    return History(1_700_000_000_000 - 1_700_000_000_000 % STEP + t * STEP, close, vol, SYMS,
                   STEP)


def small_config(**kw: Any) -> Seq2SeqConfig:
    base = dict(symbols=SYMS, step_ms=STEP, lookback=32, horizon=8, hidden=16, layers=2,
                dropout=0.0, patch=4, batch_size=64, initial_steps=120, retrain_steps=20,
                min_windows=32, learning_rate=3e-3, device="cpu")
    base.update(kw)
    return Seq2SeqConfig(**base)  # type: ignore[arg-type]

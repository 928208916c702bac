"""Exponentially weighted moving averages over columns with missing values. Pure numpy.

A missing value (NaN) leaves the state unchanged; over the first `seed_n` valid values the
estimate is their running mean. Every estimate at a row uses only that row and the rows
before it.
"""

from __future__ import annotations

import functools
import math

import numpy as np

_BLOCK = 128


def _ewma_1d(x: np.ndarray, lam: float, init: float) -> np.ndarray:
    """EWMA state after each element of a NaN-free series: y_i = lam*y_{i-1} + (1-lam)*x_i.

    Blocked: each block of 128 is one matrix product, only the carry between blocks is
    sequential, so 20,000 candles cost a fraction of a millisecond rather than a Python
    loop over candles. The carry stays a loop on purpose: in one fixed order, the state at
    a row is bit-for-bit the same whatever follows it (a replay cut at T equals a longer
    one up to T).
    """
    m = len(x)
    if m == 0:
        return np.zeros(0)
    mat, carry_w = _block_weights(lam)
    pad = (-m) % _BLOCK
    xb = np.concatenate([x, np.zeros(pad)]).reshape(-1, _BLOCK)
    inner = xb @ mat.T  # (nb, B): contribution of each block's own elements
    out = np.empty_like(inner)
    y = init
    for b in range(len(xb)):
        out[b] = inner[b] + carry_w * y
        y = out[b, -1]
    return out.ravel()[:m]


@functools.lru_cache(maxsize=32)
def _block_weights(lam: float) -> tuple[np.ndarray, np.ndarray]:
    """(B, B) weights of a block's own elements, (B,) weight of the state before it: the
    same few speeds every fit, so built once."""
    k = np.arange(_BLOCK)
    decay = lam ** (k[:, None] - k[None, :]).clip(min=0) * (k[:, None] >= k[None, :])
    mat, carry_w = (1 - lam) * decay, lam ** (k + 1)
    mat.setflags(write=False)
    carry_w.setflags(write=False)
    return mat, carry_w


def ewma(x: np.ndarray, lam: float, *, seed_n: int = 30) -> np.ndarray:
    """Running EWMA of each column of x (n, S); NaN entries leave the state unchanged.

    Over the first `seed_n` valid values of a column the estimate is their running mean;
    from then on y = lam * y + (1 - lam) * x. Every estimate uses only values up to its
    row; rows before the first valid value stay NaN.

    >>> ewma(np.array([[1.0], [np.nan], [3.0], [5.0]]), 0.5, seed_n=2).ravel().tolist()
    [1.0, 1.0, 2.0, 3.5]
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        return ewma(x[:, None], lam, seed_n=seed_n)[:, 0]
    out = np.full_like(x, np.nan)
    for s in range(x.shape[1]):
        col = x[:, s]
        ok = np.flatnonzero(np.isfinite(col))
        if len(ok) == 0:
            continue
        vals = col[ok]
        k = min(seed_n, len(vals))
        y = np.empty(len(vals))
        y[:k] = np.cumsum(vals[:k]) / np.arange(1, k + 1)
        y[k:] = _ewma_1d(vals[k:], lam, float(y[k - 1]))
        # Hold the state across missing rows.
        pos = np.searchsorted(ok, np.arange(len(col)), side="right") - 1
        have = pos >= 0
        out[have, s] = y[pos[have]]
    return out


def ewma_last(x: np.ndarray, lam: float, *, seed_n: int = 30) -> np.ndarray:
    """The final EWMA state of each column (S,): what `ewma(x)[-1]` gives, in O(n).

    >>> ewma_last(np.array([[1.0], [np.nan], [3.0], [5.0]]), 0.5, seed_n=2).tolist()
    [3.5]
    """
    return ewma_last_many(x, (lam,), seed_n=seed_n)[0]


def ewma_last_many(x: np.ndarray, lams: tuple[float, ...], *, seed_n: int = 30) -> np.ndarray:
    """`ewma_last` at several speeds (L, S), reading each column once (a tick asks for six).

    >>> ewma_last_many(np.array([[1.0], [np.nan], [3.0], [5.0]]), (0.5, 0.0), seed_n=2).tolist()
    [[3.5], [5.0]]
    """
    x = np.asarray(x, dtype=np.float64)
    out = np.full((len(lams), x.shape[1]), np.nan)
    for s in range(x.shape[1]):
        vals = x[np.isfinite(x[:, s]), s]
        if len(vals) == 0:
            continue
        k = min(seed_n, len(vals))
        rest = vals[k:]
        seed = float(vals[:k].mean())
        for i, lam in enumerate(lams):
            # Weights below 1e-250 add nothing a float can hold, and products with subnormal
            # numbers are two orders of magnitude slower on x86: leave the older values out.
            keep = min(len(rest), _keep(lam))
            out[i, s] = (1 - lam) * float(_powers(lam, keep) @ rest[len(rest) - keep:]) + \
                lam ** len(rest) * seed
    return out


@functools.lru_cache(maxsize=64)
def _keep(lam: float) -> int:
    """How many of the newest values carry a weight above 1e-250."""
    if lam <= 0:
        return 1
    return int(math.ceil(-250 * math.log(10) / math.log(lam)))


@functools.lru_cache(maxsize=64)
def _powers(lam: float, n: int) -> np.ndarray:
    """lam**(n-1), ..., lam**0: the weights of the last n values. Cached: every tick asks
    for the same few lengths, and 20,000 powers cost more than the dot product."""
    w = lam ** np.arange(n - 1, -1, -1, dtype=np.float64)
    w.setflags(write=False)
    return w

"""Volatility known at the issue time: EWMAs, candle ranges, the calendar, and the
variance path they imply for the next steps. Pure numpy. (The EWMAs live in `ewma`, the
calendar in `season`, the fitting in `volfit`.)

The seq2seq network predicts price paths in units of this volatility, so its band follows
the volatility regime instead of having to rediscover it from raw returns, and the
baselines' RiskMetrics band is computed here too. Every estimate at a row uses only
that row and the rows before it.

Per candle the variance proxy blends the squared close-to-close log return with the
Garman–Klass range estimator, which uses open, high, low and close and is several times
more efficient than the squared return alone. A missing candle (NaN) is skipped: the
estimate is held, never fed a filled-in value.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .base import History
from .ewma import ewma, ewma_last, ewma_last_many
from .season import calendar_index, minute_index

Z80 = 1.2815515655446004  # standard normal 90 % quantile: the half-width of a central 80 % band
_GK_C = 2 * math.log(2) - 1
COVERAGE = 0.8
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


def _mixed(own: np.ndarray, level: np.ndarray, mix: np.ndarray) -> np.ndarray:
    """The fitted fast level (..., S): `mix_features` weighted by mix (S, 2K)."""
    feats = mix_features(own, level)
    return np.einsum("k...s,sk->...s", feats, mix)


@dataclass(frozen=True)
class VolPrior:
    """The variance path implied at an issue time by what was known then.

    One-step variance of the candle j steps ahead, per symbol:
    ``(slow + phi**(j-1) * (fast - slow) + psi**(j-1) * (now - fast)) * season(t + j)``.
    `fast` and `slow` are EWMAs of the deseasonalised variance proxy: volatility clusters
    (fast) and drifts back toward its longer-run level (slow) the further ahead one looks.
    `now` is the best forecast of the next candle alone: a weighted sum (`mix`, fitted on
    the training window) of EWMAs at FAST_SPEEDS of the symbol's own proxy and of the other
    symbols'; its lead over `fast` fades by `psi` per step (psi = 0: the next candle only).
    Without a mix (or for a symbol whose row of it is zero), now = fast. `season` is the
    calendar: `profile` by hour of day and weekend times `minute_profile` by slot of the
    hour (candles shorter than an hour).
    """

    lam_fast: float
    lam_slow: float
    phi: float
    range_weight: float
    profile: np.ndarray  # (48, S)
    step_ms: int
    minute_profile: np.ndarray | None = None  # (slots_per_hour, S)
    mix: np.ndarray | None = None  # (S, 2 * len(FAST_SPEEDS)): own speeds, then the others'
    psi: float = 0.0

    @classmethod
    def fit(cls, h: History, horizon: int, *, range_weight: float = 0.5,
            max_windows: int = 600) -> VolPrior:
        """Estimate the calendar, the speeds, the mean reversion and the next-candle mix on
        a training history (nothing after it): see `volfit.fit_prior`."""
        from .volfit import fit_prior

        return fit_prior(cls, h, horizon, range_weight=range_weight, max_windows=max_windows)

    def season(self, ts: np.ndarray) -> np.ndarray:
        """Calendar variance factor (m, S) of candles opening at ts (m,)."""
        f = self.profile[calendar_index(ts)]
        if self.minute_profile is not None and len(self.minute_profile) > 1:
            f = f * self.minute_profile[minute_index(ts, self.step_ms)]
        return f

    def deseasonalised(self, h: History) -> np.ndarray:
        x = variance_proxy(h, self.range_weight)
        return x / self.season(h.ts)

    def levels(self, h: History) -> tuple[np.ndarray, np.ndarray]:
        """(fast, slow) deseasonalised variance after every row, each (n, S)."""
        fast, slow, _ = self.states(h)
        return fast, slow

    def levels_last(self, h: History) -> tuple[np.ndarray, np.ndarray]:
        """(fast, slow) after the last row, each (S,)."""
        fast, slow, _ = self.states_last(h)
        return fast, slow

    def states(self, h: History) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(fast, slow, now) after every row, each (n, S)."""
        x = self.deseasonalised(h)
        fast, slow = ewma(x, self.lam_fast), ewma(x, self.lam_slow, seed_n=SLOW_SEED)
        if self.mix is None:
            return fast, slow, fast
        own = np.stack([ewma(x, lam) for lam in FAST_SPEEDS])
        now = _mixed(own, ewma(x, LEVEL_SPEED, seed_n=SLOW_SEED), self.mix)
        return fast, slow, np.where(self._mixes, now, fast)

    def states_last(self, h: History) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`states(h)` after the last row, each (S,), in O(n): what every forecast reads."""
        x = self.deseasonalised(h)
        fast = ewma_last(x, self.lam_fast)
        if self.mix is None:
            return fast, ewma_last(x, self.lam_slow, seed_n=SLOW_SEED), fast
        own = ewma_last_many(x, FAST_SPEEDS)
        slow, level = ewma_last_many(x, (self.lam_slow, LEVEL_SPEED), seed_n=SLOW_SEED)
        return fast, slow, np.where(self._mixes, _mixed(own, level, self.mix), fast)

    @property
    def _mixes(self) -> np.ndarray:
        """(S,) whether a symbol's next-candle level is its mix (a zero row: it is `fast`)."""
        assert self.mix is not None
        return np.any(self.mix != 0, axis=1)

    def path(self, fast: np.ndarray, slow: np.ndarray, ts_end: np.ndarray,
             horizon: int, now: np.ndarray | None = None) -> np.ndarray:
        """Cumulative variance (m, H, S) of the log return from each end time to j steps on.

        fast, slow (and now: None means fast): (m, S) levels at the end rows; ts_end: (m,)
        candle open times.
        """
        j = np.arange(1, horizon + 1)
        decay = self.phi ** (j - 1)  # (H,)
        one = slow[:, None, :] + decay[None, :, None] * (fast - slow)[:, None, :]
        if now is not None and self.mix is not None:
            lead = self.psi ** (j - 1.0)  # 1 at the next candle, then fading
            one = one + lead[None, :, None] * (now - fast)[:, None, :]
        fut = np.asarray(ts_end, dtype=np.int64)[:, None] + j[None, :] * self.step_ms
        prof = self.season(fut.ravel()).reshape(*fut.shape, -1)  # (m, H, S)
        return np.cumsum(np.maximum(one, 1e-14) * prof, axis=1)

    def to_json(self) -> dict[str, object]:
        return {"lam_fast": self.lam_fast, "lam_slow": self.lam_slow, "phi": self.phi,
                "range_weight": self.range_weight, "profile": self.profile.tolist(),
                "step_ms": self.step_ms,
                "minute_profile": None if self.minute_profile is None
                else self.minute_profile.tolist(),
                "mix": None if self.mix is None else self.mix.tolist(), "psi": self.psi}

    @classmethod
    def from_json(cls, d: dict[str, object]) -> VolPrior:
        prof = np.asarray(d["profile"], dtype=np.float64)
        if prof.ndim != 2 or prof.shape[0] != 48 or not np.all(np.isfinite(prof)):
            raise ValueError("volatility profile has the wrong shape or non-finite values")
        n_s = prof.shape[1]
        minute = _optional(d.get("minute_profile"), lambda a: a.shape[1] == n_s)
        mix = _optional(d.get("mix"), lambda a: a.shape == (n_s, 2 * len(FAST_SPEEDS)))
        return cls(float(d["lam_fast"]), float(d["lam_slow"]),  # type: ignore[arg-type]
                   float(d["phi"]), float(d["range_weight"]), prof,  # type: ignore[arg-type]
                   int(d["step_ms"]), minute, mix,  # type: ignore[call-overload]
                   float(d.get("psi", 0.0)))  # type: ignore[arg-type]


def _optional(v: object, fits: Callable[[np.ndarray], bool]) -> np.ndarray | None:
    """A stored optional matrix: None, or a finite 2-d array of the expected shape."""
    if v is None:
        return None
    a = np.asarray(v, dtype=np.float64)
    if a.ndim != 2 or a.size == 0 or not fits(a) or not np.all(np.isfinite(a)):
        raise ValueError("volatility prior: a stored matrix has the wrong shape or values")
    return a

"""Volatility known at the issue time: EWMAs, candle ranges, the calendar, and the
variance path they imply for the next steps. Pure numpy. (The EWMAs live in `ewma`, the
calendar in `season`, the per-candle estimates in `estimators`, the fitting in `volfit`.)

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

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .base import History
from .estimators import (  # noqa: F401 - the prior's public names, as before
    FAST_SPEEDS,
    LAM_FAST_GRID,
    LAM_SLOW_GRID,
    LEVEL_SPEED,
    PHI_GRID,
    SLOW_SEED,
    garman_klass,
    log_returns,
    mix_features,
    riskmetrics_sigma,
    variance_proxy,
)
from .ewma import ewma, ewma_last, ewma_last_many
from .season import calendar_index, minute_index


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
        prof = self.season(fut.ravel()).reshape(*fut.shape, self.profile.shape[1])  # (m, H, S)
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

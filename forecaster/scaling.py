"""Normalisation fit on the training window only, in units of the issue-time volatility.

Every window is expressed relative to what was known at its issue time t: its returns and
candle ranges are divided by the one-step volatility the prior expects for t + 1, and
its target path (cumulative log returns 1..H steps on) by the volatility the prior
expects for each step of that path. The network thus predicts standardised paths: a
band of ±1.28 means "the prior's 80 % band", and the band follows the volatility regime
by construction. Volume is standardised by the training window's mean and spread.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from . import windows
from .band import COVERAGE, Z80
from .base import History
from .volatility import VolPrior
from .volfit import fit_prior

CLIP = 8.0  # normalised inputs beyond this are clipped: one crash candle must not dominate
REGIME_CLIP = 3.0  # |log(fast / slow)| beyond this is clipped


@dataclass(frozen=True)
class Scales:
    """The issue-time volatility of a batch of windows."""

    sigma1: np.ndarray  # (m, S) one-step volatility expected for the next candle
    path_sd: np.ndarray  # (m, H, S) expected spread of the cumulative log return
    regime: np.ndarray  # (m, S) log(fast / slow): how hot volatility is right now

    def take(self, idx: np.ndarray) -> Scales:
        """The scales of windows `idx` of this batch."""
        return Scales(self.sigma1[idx], self.path_sd[idx], self.regime[idx])


@dataclass(frozen=True)
class Normaliser:
    prior: VolPrior
    vol_mean: np.ndarray  # (S,) of log volume
    vol_std: np.ndarray  # (S,)
    n_symbols: int
    # (H, S) half-width of the prior's 80 % band in standardised units: the 80 % quantile of
    # |standardised move| on the training windows. Fat tails make it differ from 1.28.
    base: np.ndarray

    @classmethod
    def fit(cls, h: History, ends: np.ndarray, horizon: int) -> Normaliser:
        """Fit on a training history and its training windows (ending at rows `ends`, whose
        targets lie inside `h`): nothing later is seen."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN column: see below
            lv = np.log1p(np.where(h.volume >= 0, h.volume, np.nan))
            mean = np.nanmean(lv, axis=0)
            std = np.nanstd(lv, axis=0)
        mean = np.where(np.isfinite(mean), mean, 0.0)
        std = np.where(np.isfinite(std) & (std > 1e-9), std, 1.0)
        n_s = len(h.symbols)
        norm = cls(fit_prior(h, horizon), mean, std, n_s, np.full((horizon, n_s), Z80))
        z = norm.targets(windows.targets(h.close, ends, horizon), norm.scales(h, ends, horizon))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            base = np.nanquantile(np.abs(z), COVERAGE, axis=0)
        base = np.where(np.isfinite(base) & (base > 0.05), base, Z80)
        return cls(norm.prior, mean, std, n_s, base)

    def scales(self, h: History, ends: np.ndarray, horizon: int) -> Scales:
        """Issue-time scales for windows ending at rows `ends` of `h` (from rows <= end)."""
        fast, slow, now = self.prior.states(h)
        return self._scales(fast[ends], slow[ends], now[ends], h.ts[ends], horizon)

    def scales_last(self, h: History, horizon: int) -> Scales:
        """`scales` for one window ending at the last row, computed in O(n)."""
        fast, slow, now = self.prior.states_last(h)
        return self._scales(fast[None], slow[None], now[None], h.ts[-1:], horizon)

    def _scales(self, fast: np.ndarray, slow: np.ndarray, now: np.ndarray,
                ts_end: np.ndarray, horizon: int) -> Scales:
        # The one-step volatility and the path start from `now`, the prior's best forecast
        # of the next candle; `regime` stays log(fast / slow), how hot volatility is.
        var = self.prior.path(fast, slow, ts_end, horizon, now)
        sd = np.sqrt(var)
        with np.errstate(divide="ignore", invalid="ignore"):
            regime = np.clip(np.log(fast / slow), -REGIME_CLIP, REGIME_CLIP)
        return Scales(sd[:, 0, :], sd, np.nan_to_num(regime))

    def targets(self, moves: np.ndarray, scales: Scales) -> np.ndarray:
        """(m, H, S) cumulative log returns -> standardised units."""
        return moves / scales.path_sd

    def unscale(self, z: np.ndarray, scales: Scales) -> np.ndarray:
        """Inverse of `targets`; a trailing quantile axis is allowed.

        >>> from forecaster.volatility import VolPrior
        >>> n = Normaliser(VolPrior(0.9, 0.99, 0.9, 0.5, np.ones((48, 1)), 60_000),
        ...                np.zeros(1), np.ones(1), 1, np.ones((2, 1)))
        >>> sc = Scales(np.ones((1, 1)), np.array([[[0.02], [0.03]]]), np.zeros((1, 1)))
        >>> y = np.array([[[0.01], [-0.03]]])
        >>> bool(np.allclose(n.unscale(n.targets(y, sc), sc), y))
        True
        """
        if z.ndim == 4:
            return z * scales.path_sd[..., None]
        return z * scales.path_sd

    def to_json(self) -> dict[str, object]:
        return {"prior": self.prior.to_json(), "vol_mean": self.vol_mean.tolist(),
                "vol_std": self.vol_std.tolist(), "n_symbols": self.n_symbols,
                "base": self.base.tolist()}

    @classmethod
    def from_json(cls, d: dict[str, object]) -> Normaliser:
        prior = VolPrior.from_json(d["prior"])  # type: ignore[arg-type]
        n = int(d["n_symbols"])  # type: ignore[call-overload]
        mean = np.asarray(d["vol_mean"], dtype=np.float64)
        std = np.asarray(d["vol_std"], dtype=np.float64)
        base = np.asarray(d["base"], dtype=np.float64)
        if mean.shape != (n,) or std.shape != (n,) or prior.profile.shape[1] != n or \
                base.ndim != 2 or base.shape[1] != n or not np.all(np.isfinite(base)):
            raise ValueError("normaliser does not match the number of symbols")
        return cls(prior, mean, std, n, base)

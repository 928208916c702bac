"""Scaling fit on the training window only, and its exact inverse.

Inputs are standardised per feature. Targets (cumulative log returns k steps
ahead) are divided by sigma * sqrt(k), sigma being the one-step return spread
of each symbol: every horizon then weighs about the same in the loss, and a
model output of 0 means "no change", exactly the naive forecast.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

CLIP = 8.0  # standardised inputs beyond this are clipped: one crash candle must not dominate


@dataclass(frozen=True)
class Scaler:
    mean: np.ndarray  # (F,)
    std: np.ndarray  # (F,)
    sigma: np.ndarray  # (S,) one-step log-return spread per symbol

    @classmethod
    def fit(cls, feats: np.ndarray, n_symbols: int) -> Scaler:
        """Fit on the rows of a training window (NaN rows ignored).

        >>> f = np.array([[0.01, 1.0], [-0.01, 3.0], [np.nan, 5.0]])
        >>> s = Scaler.fit(f, 1)
        >>> s.mean.round(3).tolist(), s.std.round(3).tolist(), s.sigma.round(3).tolist()
        ([0.0, 3.0], [0.01, 1.633], [0.01])
        """
        with warnings.catch_warnings():
            # An all-NaN column (no usable return yet) is handled just below.
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(feats, axis=0)
            std = np.nanstd(feats, axis=0)
            r = feats[:, :n_symbols]
            sigma = np.sqrt(np.nanmean(r * r, axis=0))
        # A constant feature (e.g. zero volume everywhere) gets unit scale, not a division by 0.
        mean = np.where(np.isfinite(mean), mean, 0.0)
        std = np.where(np.isfinite(std) & (std > 1e-12), std, 1.0)
        sigma = np.where(np.isfinite(sigma) & (sigma > 1e-12), sigma, 1e-4)
        return cls(mean, std, sigma)

    def inputs(self, feats: np.ndarray) -> np.ndarray:
        return np.clip((feats - self.mean) / self.std, -CLIP, CLIP)

    def target_scale(self, horizon: int) -> np.ndarray:
        """(H, S) divisor of the cumulative return k steps ahead."""
        k = np.sqrt(np.arange(1, horizon + 1, dtype=np.float64))
        return k[:, None] * self.sigma[None, :]

    def scale_targets(self, y: np.ndarray) -> np.ndarray:
        """(m, H, S) cumulative log returns -> model units."""
        return y / self.target_scale(y.shape[1])[None]

    def unscale_targets(self, z: np.ndarray) -> np.ndarray:
        """Inverse of scale_targets; the extra trailing axis (quantiles) is allowed.

        >>> s = Scaler(np.zeros(2), np.ones(2), np.array([0.02]))
        >>> y = np.array([[[0.01], [0.03]]])
        >>> bool(np.allclose(s.unscale_targets(s.scale_targets(y)), y))
        True
        """
        scale = self.target_scale(z.shape[1])
        if z.ndim == 4:
            return z * scale[None, :, :, None]
        return z * scale[None]

    def to_json(self) -> dict[str, list[float]]:
        return {"mean": self.mean.tolist(), "std": self.std.tolist(), "sigma": self.sigma.tolist()}

    @classmethod
    def from_json(cls, d: dict[str, list[float]]) -> Scaler:
        return cls(np.asarray(d["mean"], float), np.asarray(d["std"], float),
                   np.asarray(d["sigma"], float))

"""From the network's raw quantiles and the volatility prior to the served forecast.

Three numbers per horizon decide it, all fitted on out-of-sample evidence: `alpha`
(H, S) is 1 where the median gate let the network's median move off the last close and 0
elsewhere; `gamma` (H,) how far the band goes from the prior's toward the network's;
`widen` (H,) the conformal correction of a band the network moved. With alpha and gamma
all zero the forecast is the last close inside the prior's band, exactly.
"""

from __future__ import annotations

import numpy as np

from .scaling import Normaliser, Scales

Band = tuple[np.ndarray, np.ndarray]


def prior_band(norm: Normaliser, sc: Scales) -> Band:
    """The prior's own band (lower, upper), each (m, H, S) log returns around no change."""
    half = norm.base[None] * sc.path_sd
    return -half, half


def blend(r: np.ndarray, prior: Band, alpha: np.ndarray,
          gamma: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lower, median, upper) (m, H, S): the gated median, the band gamma of the way from
    the prior's to the network's. r: raw quantiles (m, H, S, 3) in log returns."""
    g = gamma[None, :, None]
    med = r[..., 1] * alpha[None]
    lo = (1 - g) * prior[0] + g * r[..., 0]
    hi = (1 - g) * prior[1] + g * r[..., 2]
    return lo, med, hi


def serve(r: np.ndarray, prior: Band, alpha: np.ndarray, gamma: np.ndarray,
          widen: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Calibrated (lower, median, upper) log returns (m, H, S) from raw quantiles: the
    blend, its band widened by `widen` band widths, and never a band that excludes its
    own median."""
    lo, med, hi = blend(r, prior, alpha, gamma)
    width = hi - lo
    w = widen[None, :, None]
    return np.minimum(lo - w * width, med), med, np.maximum(hi + w * width, med)

"""What validation decides after training: how far the median may leave the last close,
and how much wider (or narrower) the band must be to cover 80 %. Pure numpy.

Both are fitted on the time-ordered validation slice, which the network never trained on.
"""

from __future__ import annotations

import numpy as np

SHRINK_GRID = np.linspace(0.0, 1.0, 21)
BAND_GRID = np.linspace(0.0, 1.0, 5)
SKILL_Z = 3.0  # standard errors by which the model must beat the last close on validation
BAND_SKILL_Z = 2.0  # ... and by which the network's band must beat the prior's
COVERAGE = 0.8
WIDEN_PRIOR_N = 10.0  # independent samples' worth of trust in "no widening needed"


def shrink(med: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per horizon and symbol, the factor (0..1) on the median log return.

    med, y: (v, H, S) forecast median and actual cumulative log returns on validation.
    The factor minimising the validation MAE is kept only if the shrunk forecast beats
    "no change" (the last close) by more than SKILL_Z standard errors, where overlapping
    windows count as about one independent sample per horizon length. Without that
    evidence the model forecasts the last close: on prices that behave like a random walk
    any move is noise that costs accuracy.

    >>> rng = np.random.default_rng(0)
    >>> y = rng.standard_normal((400, 2, 1))
    >>> shrink(rng.standard_normal((400, 2, 1)), y).ravel().tolist()  # no skill: no move
    [0.0, 0.0]
    >>> shrink(y + 0.1 * rng.standard_normal((400, 2, 1)), y).ravel().tolist()  # skill
    [1.0, 1.0]
    """
    v, horizon, _ = y.shape
    errs = np.abs(y[None] - SHRINK_GRID[:, None, None, None] * med[None])  # (A, v, H, S)
    best = np.argmin(errs.mean(axis=1), axis=0)  # (H, S)
    chosen = np.take_along_axis(errs, best[None, None], axis=0)[0]  # (v, H, S)
    gain = chosen - np.abs(y)  # negative where the shrunk forecast beats the last close
    n_eff = np.maximum(2.0, v / np.arange(1, horizon + 1, dtype=np.float64))[:, None]
    se = gain.std(axis=0, ddof=1) / np.sqrt(n_eff)
    return np.where(gain.mean(axis=0) + SKILL_Z * se < 0, SHRINK_GRID[best], 0.0)


def interval_score(lo: np.ndarray, hi: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The 80 % interval score of each band: width + 10 x how far the actual lies outside.

    >>> interval_score(np.array([-1.0]), np.array([1.0]), np.array([2.0])).tolist()
    [12.0]
    """
    return (hi - lo) + 10.0 * np.maximum(lo - y, 0.0) + 10.0 * np.maximum(y - hi, 0.0)


def band_weight(prior: tuple[np.ndarray, np.ndarray], learned: tuple[np.ndarray, np.ndarray],
                y: np.ndarray) -> np.ndarray:
    """Per horizon, how much (0..1) of the way from the prior's band to the network's band
    to go, pooled over symbols (H,).

    prior, learned: (lower, upper) each (v, H, S); y: (v, H, S). The weight minimising the
    validation interval score is kept only where it beats the prior's band by more than
    BAND_SKILL_Z standard errors (overlapping windows counted as one sample per horizon
    length): the network's band is used only where it has shown it is better.
    """
    v, horizon, _ = y.shape
    plo, phi = prior
    llo, lhi = learned
    base = interval_score(plo, phi, y)  # (v, H, S)
    out = np.zeros(horizon)
    n_eff = np.maximum(2.0, v / np.arange(1, horizon + 1, dtype=np.float64))
    for k in range(horizon):
        best_w, best_mean = 0.0, 0.0
        for w in BAND_GRID[1:]:
            sc = interval_score((1 - w) * plo[:, k] + w * llo[:, k],
                                (1 - w) * phi[:, k] + w * lhi[:, k], y[:, k])
            gain = (sc - base[:, k]).mean(axis=1)  # per window, pooled over symbols
            mean = float(gain.mean())
            se = float(gain.std(ddof=1)) / np.sqrt(n_eff[k]) if v > 1 else np.inf
            if mean + BAND_SKILL_Z * se < 0 and mean < best_mean:
                best_w, best_mean = float(w), mean
        out[k] = best_w
    return out


def widen(lo: np.ndarray, hi: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Conformal adjustment of the band per horizon, in multiples of its width (H,).

    Conformalised quantile regression: the score of a validation window is how far the
    actual lies outside its band (negative inside), in units of the band's width, so the
    adjustment scales with the band and a band that follows volatility keeps doing so.
    Pooled over symbols. A long horizon has few independent windows on a validation
    slice, so its adjustment is shrunk toward 0 (no change) by its effective sample size.
    The result is >= -0.45: a band is never inverted.
    """
    v, horizon, n_s = y.shape
    width = np.maximum(hi - lo, 1e-12)
    score = np.maximum(lo - y, y - hi) / width  # (v, H, S)
    pooled = np.moveaxis(score, 1, 0).reshape(horizon, -1)  # (H, v * S)
    n = pooled.shape[1]
    level = min(1.0, COVERAGE * (n + 1) / n)
    raw = np.quantile(pooled, level, axis=1)  # (H,)
    n_eff = v * n_s / np.arange(1, horizon + 1, dtype=np.float64)
    return np.maximum(raw * n_eff / (n_eff + WIDEN_PRIOR_N), -0.45)

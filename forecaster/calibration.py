"""What out-of-sample evidence decides after training: whether the median may leave the
last close, how much of the network's band to use, and how much wider (or narrower) the
band must be to cover 80 %. Pure numpy.

The median gate is a one-sided Diebold–Mariano test per symbol and stored horizon on the
loss differential d = |y − median| − |y| (the absolute error the network's median adds
over the last close's, in log returns), with a Newey–West standard error over h − 1 lags
because windows issued one candle apart share h − 1 steps of their h-step targets. The
median moves in a cell only where mean(d) + z·se < 0; z is Bonferroni's over the cells
tested (5 horizons × 2 symbols: z = 2.58), so on prices without skill the chance that a
retrain moves the median anywhere is at most 5 % (`FAMILY_ALPHA`), whatever the number of
cells. The smallest edge it sees: with 80 % power an edge of (z + 0.84)·sd(d)/√n, i.e.
about 3.4·sd(d)/(mean|y|·√n) of the MAE; on real BTC minutes sd(d)/mean|y| ≈ 0.3, so a
1 % MAE edge needs about 10,000 out-of-sample windows and a 2 % one 2,600 (see
`min_detectable`). That is why the evidence is not the 512 newest windows but the whole
validation slice plus the prequential record (`evidence.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from .band import COVERAGE, interval_score

FAMILY_ALPHA = 0.05  # a retrain on prices without skill moves the median with at most this chance
MIN_N = 200  # out-of-sample windows below which a cell is not judged (the median stays)
POWER_Z = 0.8416212335729143  # standard normal 80 % quantile: the power quoted for edges
BAND_GRID = np.linspace(0.0, 1.0, 5)
BAND_SKILL_Z = 2.0  # standard errors by which the network's band must beat the prior's
WIDEN_PRIOR_N = 10.0  # independent samples' worth of trust in "no widening needed"


def critical_z(cells: int) -> float:
    """One-sided Bonferroni threshold over `cells` tests at FAMILY_ALPHA.

    >>> round(critical_z(10), 3)
    2.576
    """
    return NormalDist().inv_cdf(1.0 - FAMILY_ALPHA / max(cells, 1))


def hac_se(d: np.ndarray, lags: int) -> float:
    """Standard error of the mean of a series whose first `lags` autocovariances may be
    non-zero (h − 1 for overlapping h-step windows): Diebold and Mariano's truncated
    kernel, which is unbiased for such a series, falling back to Newey–West's Bartlett
    weights when a strongly negative autocovariance would make it negative.

    >>> x = np.random.default_rng(0).standard_normal(10_000)
    >>> round(hac_se(x, 0) * 100, 2), round(hac_se(np.repeat(x, 4), 3) / hac_se(x, 0), 2)
    (1.0, 1.0)
    """
    n = len(d)
    if n < 2:
        return float("inf")
    e = d - d.mean()
    gam = [float(e @ e) / n] + [float(e[j:] @ e[:-j]) / n for j in range(1, min(lags, n - 1) + 1)]
    var = gam[0] + 2.0 * sum(gam[1:])
    if var <= 0:
        var = gam[0] + 2.0 * sum((1.0 - j / (lags + 1)) * g for j, g in enumerate(gam[1:], 1))
    return float(np.sqrt(max(var, 0.0) / n))


@dataclass(frozen=True)
class Cell:
    """The evidence of one symbol and horizon (relative to the last close's MAE)."""

    symbol: str
    horizon: int
    n: int
    gain: float  # mean(d) / mean|y|: −0.01 is an MAE 1 % below the last close's
    se: float  # standard error of `gain`
    z: float  # threshold the gain had to clear, in standard errors
    moved: bool

    def to_json(self) -> dict[str, object]:
        return {"symbol": self.symbol, "horizon": self.horizon, "n": self.n,
                "gain": _round(self.gain), "se": _round(self.se), "z": round(self.z, 3),
                "moved": self.moved}


def median_gate(d: np.ndarray, y_abs: np.ndarray, horizons: list[int],
                symbols: tuple[str, ...]) -> list[Cell]:
    """Which cells' medians may move, from loss differentials in time order.

    d, y_abs: (n, C) with C = len(horizons) × len(symbols) cells (horizon-major), NaN where
    a window has no outcome for that cell. Returns one `Cell` per column.

    >>> rng = np.random.default_rng(1)
    >>> y = rng.standard_normal((4000, 2))
    >>> noise = np.abs(y - 0.3 * rng.standard_normal((4000, 2))) - np.abs(y)
    >>> [c.moved for c in median_gate(noise, np.abs(y), [1], ("A", "B"))]
    [False, False]
    >>> skill = np.abs(y - np.c_[y[:, 0] * 0.3, np.zeros(4000)]) - np.abs(y)
    >>> [c.moved for c in median_gate(skill, np.abs(y), [1], ("A", "B"))]
    [True, False]
    """
    z = critical_z(d.shape[1])
    out = []
    for c in range(d.shape[1]):
        h, s = horizons[c // len(symbols)], symbols[c % len(symbols)]
        ok = np.isfinite(d[:, c]) & np.isfinite(y_abs[:, c])
        dc, scale = d[ok, c], float(np.mean(y_abs[ok, c])) if ok.any() else 0.0
        n = len(dc)
        if n < MIN_N or scale <= 0:
            out.append(Cell(s, h, n, float("nan"), float("nan"), z, False))
            continue
        gain, se = float(dc.mean()) / scale, hac_se(dc, h - 1) / scale
        out.append(Cell(s, h, n, gain, se, z, bool(gain + z * se < 0)))
    return out


def min_detectable(n: int, spread: float = 0.3, cells: int = 10) -> float:
    """The MAE edge (a fraction) the gate detects with 80 % power on n independent
    windows, for a loss differential whose sd is `spread` × the mean |move|.

    >>> round(min_detectable(10_000), 4), round(min_detectable(512), 3)
    (0.0103, 0.045)
    """
    return float((critical_z(cells) + POWER_Z) * spread / np.sqrt(max(n, 1)))


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
    prior_lo, prior_hi = prior
    net_lo, net_hi = learned
    base = interval_score(prior_lo, prior_hi, y)  # (v, H, S)
    out = np.zeros(horizon)
    n_eff = np.maximum(2.0, v / np.arange(1, horizon + 1, dtype=np.float64))
    for k in range(horizon):
        best_w, best_mean = 0.0, 0.0
        for w in BAND_GRID[1:]:
            sc = interval_score((1 - w) * prior_lo[:, k] + w * net_lo[:, k],
                                (1 - w) * prior_hi[:, k] + w * net_hi[:, k], y[:, k])
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


def _round(x: float) -> float | None:
    return None if not np.isfinite(x) else float(f"{x:.6g}")

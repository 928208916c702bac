"""Fitting the volatility prior on a training history. Pure numpy.

Three steps, each on the training history only:

1. the calendar (`season.calendar_profiles`), from the variance proxy;
2. the fast level: non-negative weights on EWMAs of the deseasonalised proxy at several
   speeds, the symbol's own and the other symbols', that best forecast the next candle's
   proxy by QLIKE (the loss that ranks variance forecasts like the likelihood does, and is
   not dominated by a few crash candles as squared error is). A few weights fitted on
   thousands of candles: a 1-minute market and a 1-hour one each get the mix that suits
   them, and a thin market leans on the liquid one's volatility;
3. the slow speed and the mean reversion from a small grid, scored by the 80 % interval
   score of the band each implies on the history's own windows (its width calibrated
   in-sample), averaged over horizons in units of their typical move.
"""

from __future__ import annotations

import numpy as np

from .band import COVERAGE, PENALTY
from .base import History
from .estimators import (
    FAST_SPEEDS,
    LAM_FAST_GRID,
    LAM_SLOW_GRID,
    LEVEL_SPEED,
    PHI_GRID,
    SLOW_SEED,
    mix_features,
    variance_proxy,
)
from .ewma import ewma
from .season import calendar_profiles
from .volatility import VolPrior

MIN_MIX_ROWS = 1000  # fewer candles with a next one than this: the plain EWMA is used
MIX_WARMUP = 200  # rows after a symbol's first value before its EWMAs are trusted as inputs
QLIKE_ROUNDS = 4
PSI_GRID = (0.0, 0.5)


def nnls(gram: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Non-negative least squares from the normal equations (gram = AᵀA, rhs = Aᵀy) of a
    few columns: refit without the most negative coefficient until none is (the active set
    shrinks by one each time).

    >>> a = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    >>> nnls(a.T @ a, a.T @ np.array([1.0, -1.0, 0.0])).round(6).tolist()
    [0.5, 0.0]
    """
    active = list(range(len(rhs)))
    b = np.zeros(len(rhs))
    while active:
        sol = np.linalg.lstsq(gram[np.ix_(active, active)], rhs[active], rcond=None)[0]
        if np.all(sol >= 0):
            b[active] = sol
            return b
        active.pop(int(np.argmin(sol)))
    return b


def qlike_weights(feats: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative b minimising Σ y/σ² + log σ² with σ² = feats @ b (feats (n, k), y (n,)).

    Iteratively reweighted least squares: the QLIKE first-order condition is least squares
    weighted by 1/σ⁴ at the solution.

    >>> rng = np.random.default_rng(1)
    >>> f = np.abs(rng.standard_normal((4000, 2))) + 0.1
    >>> y = (f @ np.array([0.7, 0.0])) * rng.standard_normal(4000) ** 2
    >>> qlike_weights(f, y).round(1).tolist()
    [0.7, 0.0]
    """
    w = np.ones(len(y))
    floor = 1e-3 * max(float(np.mean(y)), 1e-300)
    b = np.zeros(feats.shape[1])
    for _ in range(QLIKE_ROUNDS):
        fw = feats * w[:, None]
        b = nnls(fw.T @ feats, fw.T @ y)
        s2 = np.maximum(feats @ b, floor)
        w = 1.0 / (s2 * s2)
        w = w / w.mean()  # keeps the numbers well scaled; the solution does not change
    return b


def fit_mix(xd: np.ndarray, feats_all: np.ndarray) -> np.ndarray | None:
    """Weights (S, 2K) of the fast level on the deseasonalised proxy xd (n, S) and its
    `mix_features` (2K, n, S), or None when the history is too short for them (the plain
    fast EWMA is used then)."""
    n, n_s = xd.shape
    k = len(FAST_SPEEDS)
    mix = np.zeros((n_s, 2 * k))
    for s in range(n_s):
        feats = feats_all[:, :-1, s].T  # (n - 1, 2K): row t forecasts row t + 1
        y = xd[1:, s]
        first = np.flatnonzero(np.isfinite(xd[:, s]))
        start = (first[0] if len(first) else n) + MIX_WARMUP
        ok = np.all(np.isfinite(feats), axis=1) & np.isfinite(y)
        ok[:start] = False
        if ok.sum() < MIN_MIX_ROWS:
            return None
        b = qlike_weights(feats[ok], y[ok])
        if not np.any(b > 0):
            return None
        mix[s] = b
    return mix


def fit_prior(h: History, horizon: int, *, range_weight: float = 0.5,
              max_windows: int = 600) -> VolPrior:
    """Estimate the calendar, the speeds, the mean reversion and the next-candle mix of a
    `VolPrior` on a training history (nothing after it): see the module doc."""
    x = variance_proxy(h, range_weight)
    profile, minute = calendar_profiles(x, h.ts, h.step_ms)
    base = VolPrior(0.94, 0.995, 0.95, range_weight, profile, h.step_ms, minute)
    xd = base.deseasonalised(h)
    own = np.stack([ewma(xd, lam) for lam in FAST_SPEEDS])  # (K, n, S)
    feats = mix_features(own, ewma(xd, LEVEL_SPEED, seed_n=SLOW_SEED))
    mix = fit_mix(xd, feats)
    lc = np.log(h.close)
    ends = np.arange(len(h) - horizon)
    ends = ends[(ends >= min(100, len(h) // 4))]
    if len(ends) > max_windows:
        ends = ends[np.linspace(0, len(ends) - 1, max_windows).astype(np.int64)]
    if len(ends) < 20:
        return _with(base, mix=mix)
    k = np.arange(1, horizon + 1)
    moves = lc[ends[:, None] + k[None, :]] - lc[ends][:, None, :]  # (m, H, S)
    ok = np.all(np.isfinite(moves), axis=(1, 2))
    ends, moves = ends[ok], moves[ok]
    if len(ends) < 20:
        return _with(base, mix=mix)
    typical = np.mean(np.abs(moves), axis=0) + 1e-12  # (H, S)

    def per_symbol(cand: VolPrior, fast: np.ndarray, slow: np.ndarray, upto: int,
                   now: np.ndarray | None = None) -> np.ndarray:
        sd = np.sqrt(cand.path(fast, slow, h.ts[ends], upto, now))
        mv = np.abs(moves[:, :upto])
        width = np.quantile(mv / sd, COVERAGE, axis=0)[None] * sd  # calibrated in-sample
        return np.mean((2 * width + PENALTY * np.maximum(mv - width, 0)) / typical[None, :upto],
                       axis=(0, 1))

    def score(cand: VolPrior, fast: np.ndarray, slow: np.ndarray, upto: int) -> float:
        return float(np.mean(per_symbol(cand, fast, slow, upto)))

    slows = {lam: ewma(xd, lam, seed_n=SLOW_SEED)[ends] for lam in LAM_SLOW_GRID}
    # The one-step band depends on the fast EWMA alone: its speed is chosen on one step
    # ahead, then the slow level and the mean reversion on every horizon.
    fasts = {lam: ewma(xd, lam)[ends] for lam in LAM_FAST_GRID}
    lam_fast = min(LAM_FAST_GRID, key=lambda lam: score(
        _with(base, lam_fast=lam), fasts[lam], slows[base.lam_slow], 1))
    fast = fasts[lam_fast]
    best, best_score = base, np.inf
    for lam_slow in LAM_SLOW_GRID:
        for phi in PHI_GRID:
            cand = _with(base, lam_fast=lam_fast, lam_slow=lam_slow, phi=phi)
            sc = score(cand, fast, slows[lam_slow], horizon)
            if sc < best_score - 1e-12:
                best, best_score = cand, sc
    if mix is None:
        return best
    # The next-candle mix and how far its lead over `fast` carries, per symbol: kept only
    # for a symbol whose whole path scores better with it than without (a zero row: without).
    now = np.einsum("kms,sk->ms", feats[:, ends], mix)  # what `states` gives
    slow = slows[best.lam_slow]
    plain = per_symbol(best, fast, slow, horizon)
    chosen, chosen_score = best, float(plain.sum())
    for psi in PSI_GRID:
        sc = per_symbol(_with(best, mix=mix, psi=psi), fast, slow, horizon, now)
        better = sc < plain - 1e-12
        total = float(np.where(better, sc, plain).sum())
        if better.any() and total < chosen_score - 1e-12:
            chosen = _with(best, mix=np.where(better[:, None], mix, 0.0), psi=psi)
            chosen_score = total
    return chosen


def _with(p: VolPrior, **kw: object) -> VolPrior:
    from dataclasses import replace

    return replace(p, **kw)  # type: ignore[arg-type]

"""Volatility known at the issue time: EWMAs, candle ranges, a calendar profile, and the
variance path they imply for the next steps. Pure numpy.

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

import functools
import math
from dataclasses import dataclass

import numpy as np

from .base import History

Z80 = 1.2815515655446004  # standard normal 90 % quantile: the half-width of a central 80 % band
_GK_C = 2 * math.log(2) - 1
_HOUR_MS = 3_600_000
_DAY_MS = 86_400_000
_BLOCK = 128
COVERAGE = 0.8
LAM_FAST_GRID = (0.9, 0.94, 0.97)
LAM_SLOW_GRID = (0.99, 0.995, 0.998)
PHI_GRID = (0.8, 0.9, 0.95, 0.98)


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


def _ewma_1d(x: np.ndarray, lam: float, init: float) -> np.ndarray:
    """EWMA state after each element of a NaN-free series: y_i = lam*y_{i-1} + (1-lam)*x_i.

    Blocked: each block of 128 is one matrix product, only the carry between blocks is
    sequential, so 20,000 candles cost microseconds rather than a Python loop.
    """
    m = len(x)
    if m == 0:
        return np.zeros(0)
    k = np.arange(_BLOCK)
    decay = lam ** (k[:, None] - k[None, :]).clip(min=0) * (k[:, None] >= k[None, :])
    mat = (1 - lam) * decay  # (B, B) lower triangular
    carry_w = lam ** (k + 1)  # weight of the state before the block
    pad = (-m) % _BLOCK
    xb = np.concatenate([x, np.zeros(pad)]).reshape(-1, _BLOCK)
    inner = xb @ mat.T  # (nb, B): contribution of each block's own elements
    out = np.empty_like(inner)
    y = init
    for b in range(len(xb)):
        out[b] = inner[b] + carry_w * y
        y = out[b, -1]
    return out.ravel()[:m]


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
    x = np.asarray(x, dtype=np.float64)
    out = np.full(x.shape[1], np.nan)
    for s in range(x.shape[1]):
        vals = x[np.isfinite(x[:, s]), s]
        if len(vals) == 0:
            continue
        k = min(seed_n, len(vals))
        rest = vals[k:]
        # Weights below 1e-250 add nothing a float can hold, and products with subnormal
        # numbers are two orders of magnitude slower on x86: leave the older values out.
        keep = min(len(rest), int(math.ceil(-250 * math.log(10) / math.log(lam))))
        out[s] = (1 - lam) * float(_powers(lam, keep) @ rest[len(rest) - keep:]) + \
            lam ** len(rest) * float(vals[:k].mean())
    return out


@functools.lru_cache(maxsize=64)
def _powers(lam: float, n: int) -> np.ndarray:
    """lam**(n-1), ..., lam**0: the weights of the last n values. Cached: every tick asks
    for the same few lengths, and 20,000 powers cost more than the dot product."""
    w = lam ** np.arange(n - 1, -1, -1, dtype=np.float64)
    w.setflags(write=False)
    return w


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


def calendar_index(ts: np.ndarray) -> np.ndarray:
    """Calendar cell of candle open times: hour of day (0..23) + 24 on Saturdays and Sundays.

    >>> calendar_index(np.array([0, 2 * 86_400_000 + 5 * 3_600_000])).tolist()  # Thu 00h, Sat 05h
    [0, 29]
    """
    ts = np.asarray(ts, dtype=np.int64)
    hour = (ts // _HOUR_MS) % 24
    weekday = (ts // _DAY_MS + 3) % 7  # 0 = Monday (1970-01-01 was a Thursday)
    return (hour + 24 * (weekday >= 5)).astype(np.int64)


def calendar_profile(x: np.ndarray, ts: np.ndarray, shrink_days: float = 30.0) -> np.ndarray:
    """Multiplicative variance profile (48, S) by hour of day and weekend, mean about 1.

    Hour of day and weekday/weekend are estimated as two separate factors from mean
    absolute sizes (the square root of the proxy), not mean squares: one crash candle
    would otherwise decide its hour's factor for weeks. Each cell is shrunk toward 1 by
    the number of distinct days it was seen on (n days keep n / (n + shrink_days) of the
    deviation): sixty minutes of one afternoon are one observation of that hour, not
    sixty, because volatility clusters. Daily candles all land in one hour and get a flat
    hour factor.
    """
    cells = calendar_index(ts)
    hours, weekend = cells % 24, cells >= 24
    day = np.asarray(ts, dtype=np.int64) // _DAY_MS
    n_s = x.shape[1]
    out = np.ones((48, n_s))
    for s in range(n_s):
        a = np.sqrt(x[:, s])
        ok = np.isfinite(a)
        if not ok.any() or a[ok].mean() <= 0:
            continue
        hf = _factors(a, ok, hours, 24, day, shrink_days)
        wf = _factors(a / np.sqrt(hf[hours]), ok, weekend.astype(np.int64), 2, day, shrink_days)
        out[:, s] = np.clip(np.concatenate([hf * wf[0], hf * wf[1]]), 0.2, 5.0)
    return out


def _factors(a: np.ndarray, ok: np.ndarray, cell: np.ndarray, n_cells: int, day: np.ndarray,
             shrink_days: float) -> np.ndarray:
    """Variance factor per cell: (mean |size| in the cell / overall)², shrunk toward 1."""
    mean = a[ok].mean()
    f = np.ones(n_cells)
    for k in range(n_cells):
        sel = ok & (cell == k)
        if sel.any():
            n = len(np.unique(day[sel]))
            f[k] = 1 + ((a[sel].mean() / mean) ** 2 - 1) * n / (n + shrink_days)
    return f


@dataclass(frozen=True)
class VolPrior:
    """The variance path implied at an issue time by what was known then.

    One-step variance of the candle j steps ahead, per symbol:
    ``(slow + phi**(j-1) * (fast - slow)) * profile[calendar(t + j)]``, where `fast` and
    `slow` are EWMAs of the deseasonalised variance proxy: volatility clusters (fast),
    and drifts back toward its longer-run level (slow) the further ahead one looks.
    """

    lam_fast: float
    lam_slow: float
    phi: float
    range_weight: float
    profile: np.ndarray  # (48, S)
    step_ms: int

    @classmethod
    def fit(cls, h: History, horizon: int, *, range_weight: float = 0.5,
            max_windows: int = 600) -> VolPrior:
        """Estimate the calendar profile and choose the EWMA speeds and the mean reversion
        on a training history (nothing after it).

        The choice is a small grid scored by the 80 % interval score of the band each
        setting implies on the history's own windows (its width calibrated in-sample),
        averaged over horizons in units of their typical move: candle-count constants that
        suit hourly candles would not suit minutes, so the data decides.
        """
        x = variance_proxy(h, range_weight)
        profile = calendar_profile(x, h.ts)
        base = cls(0.94, 0.995, 0.95, range_weight, profile, h.step_ms)
        lc = np.log(h.close)
        ends = np.arange(len(h) - horizon)
        ends = ends[(ends >= min(100, len(h) // 4))]
        if len(ends) > max_windows:
            ends = ends[np.linspace(0, len(ends) - 1, max_windows).astype(np.int64)]
        if len(ends) < 20:
            return base
        k = np.arange(1, horizon + 1)
        moves = lc[ends[:, None] + k[None, :]] - lc[ends][:, None, :]  # (m, H, S)
        ok = np.all(np.isfinite(moves), axis=(1, 2))
        ends, moves = ends[ok], moves[ok]
        if len(ends) < 20:
            return base
        xd = x / profile[calendar_index(h.ts)]
        typical = np.mean(np.abs(moves), axis=0) + 1e-12  # (H, S)

        def score(cand: VolPrior, fast: np.ndarray, slow: np.ndarray, upto: int) -> float:
            sd = np.sqrt(cand.path(fast, slow, h.ts[ends], upto))
            mv = np.abs(moves[:, :upto])
            width = np.quantile(mv / sd, COVERAGE, axis=0)[None] * sd  # calibrated in-sample
            return float(np.mean((2 * width + 10 * np.maximum(mv - width, 0))
                                 / typical[None, :upto]))

        # The one-step band depends on the fast EWMA alone: its speed is chosen on one
        # step ahead, then the slow level and the mean reversion on every horizon.
        fasts = {lam: ewma(xd, lam)[ends] for lam in LAM_FAST_GRID}
        slow0 = ewma(xd, base.lam_slow, seed_n=200)[ends]
        lam_fast = min(LAM_FAST_GRID, key=lambda lam: score(
            cls(lam, base.lam_slow, base.phi, range_weight, profile, h.step_ms),
            fasts[lam], slow0, 1))
        best, best_score = base, np.inf
        for lam_slow in LAM_SLOW_GRID:
            slow = ewma(xd, lam_slow, seed_n=200)[ends]
            for phi in PHI_GRID:
                cand = cls(lam_fast, lam_slow, phi, range_weight, profile, h.step_ms)
                sc = score(cand, fasts[lam_fast], slow, horizon)
                if sc < best_score - 1e-12:
                    best, best_score = cand, sc
        return best

    def deseasonalised(self, h: History) -> np.ndarray:
        x = variance_proxy(h, self.range_weight)
        return x / self.profile[calendar_index(h.ts)]

    def levels(self, h: History) -> tuple[np.ndarray, np.ndarray]:
        """(fast, slow) deseasonalised variance after every row, each (n, S)."""
        x = self.deseasonalised(h)
        return ewma(x, self.lam_fast), ewma(x, self.lam_slow, seed_n=200)

    def levels_last(self, h: History) -> tuple[np.ndarray, np.ndarray]:
        """(fast, slow) after the last row, each (S,)."""
        x = self.deseasonalised(h)
        return ewma_last(x, self.lam_fast), ewma_last(x, self.lam_slow, seed_n=200)

    def path(self, fast: np.ndarray, slow: np.ndarray, ts_end: np.ndarray,
             horizon: int) -> np.ndarray:
        """Cumulative variance (m, H, S) of the log return from each end time to j steps on.

        fast, slow: (m, S) levels at the end rows; ts_end: (m,) candle open times.
        """
        j = np.arange(1, horizon + 1)
        decay = self.phi ** (j - 1)  # (H,)
        one = slow[:, None, :] + decay[None, :, None] * (fast - slow)[:, None, :]
        fut = np.asarray(ts_end, dtype=np.int64)[:, None] + j[None, :] * self.step_ms
        prof = self.profile[calendar_index(fut)]  # (m, H, S)
        return np.cumsum(np.maximum(one, 1e-14) * prof, axis=1)

    def to_json(self) -> dict[str, object]:
        return {"lam_fast": self.lam_fast, "lam_slow": self.lam_slow, "phi": self.phi,
                "range_weight": self.range_weight, "profile": self.profile.tolist(),
                "step_ms": self.step_ms}

    @classmethod
    def from_json(cls, d: dict[str, object]) -> VolPrior:
        prof = np.asarray(d["profile"], dtype=np.float64)
        if prof.ndim != 2 or prof.shape[0] != 48 or not np.all(np.isfinite(prof)):
            raise ValueError("volatility profile has the wrong shape or non-finite values")
        return cls(float(d["lam_fast"]), float(d["lam_slow"]),  # type: ignore[arg-type]
                   float(d["phi"]), float(d["range_weight"]), prof,  # type: ignore[arg-type]
                   int(d["step_ms"]))  # type: ignore[call-overload]

"""Windows and features, pure numpy.

A window ending at row ``t`` uses the closes of rows ``t-L .. t`` (L returns)
as encoder input, and the closes of rows ``t+1 .. t+H`` as the target path,
expressed as cumulative log returns from the close at ``t``. A window is only
built where every one of those candles exists: windows never span a hole.
"""

from __future__ import annotations

import numpy as np

from .base import History
from .volatility import garman_klass, log_returns

TIME_FEATURES = 4  # time of day sin/cos, day of week sin/cos
_DAY_MS = 86_400_000
_WEEK_MS = 7 * _DAY_MS


def time_features(ts: np.ndarray) -> np.ndarray:
    """Cyclic calendar features of epoch-ms times, shape (n, 4), UTC.

    >>> np.round(time_features(np.array([0, 21_600_000]))[:, :2], 3).tolist()  # 00:00, 06:00
    [[0.0, 1.0], [1.0, 0.0]]
    """
    ts = np.asarray(ts, dtype=np.float64)
    day = 2 * np.pi * (ts % _DAY_MS) / _DAY_MS
    # 1970-01-01 was a Thursday; the phase offset does not matter to a model.
    week = 2 * np.pi * (ts % _WEEK_MS) / _WEEK_MS + 2 * np.pi * 3 / 7
    return np.stack([np.sin(day), np.cos(day), np.sin(week), np.cos(week)], axis=1)


def row_features(h: History) -> np.ndarray:
    """Per-row features before normalisation (n, 3S + 4): log return (S), square root of
    the Garman–Klass range variance (S), log volume (S), calendar (4).

    The return and range columns are divided by the issue-time volatility per window
    (`scaling.Normaliser`); a row whose return cannot be computed (first row, next to a
    hole) is NaN there, which keeps windows from using it.
    """
    r = log_returns(h.close)
    rng = np.sqrt(garman_klass(h.open, h.high, h.low, h.close))
    with np.errstate(invalid="ignore", divide="ignore"):
        lv = np.log1p(np.where(h.volume >= 0, h.volume, np.nan))
    return np.concatenate([r, rng, lv, time_features(h.ts)], axis=1)


def _present_runs(h: History) -> np.ndarray:
    """run[i] = number of consecutive rows ending at i with a close and a volume."""
    ok = np.all(np.isfinite(h.close), axis=1) & np.all(np.isfinite(h.volume), axis=1)
    idx = np.arange(len(ok))
    last_bad = np.where(ok, -1, idx)
    return idx - np.maximum.accumulate(last_bad) if len(ok) else idx


def valid_ends(h: History, lookback: int, horizon: int) -> np.ndarray:
    """Rows t that can end a training window: closes t-L .. t+H all present.

    >>> c = np.array([[1.0], [2], [3], [4], [np.nan], [6], [7], [8], [9]])
    >>> h = History(np.arange(9) * 60_000, c, c.copy(), ('X',), 60_000)
    >>> valid_ends(h, lookback=2, horizon=1).tolist()
    [2, 7]
    """
    n = len(h)
    if n < lookback + horizon + 1:
        return np.zeros(0, dtype=np.int64)
    run = _present_runs(h)
    ends = np.arange(lookback, n - horizon)
    return ends[run[ends + horizon] >= lookback + horizon + 1]


def input_ends(h: History, lookback: int) -> np.ndarray:
    """Rows t whose input window t-L .. t is complete (a forecast could be issued there),
    whatever comes after.

    >>> c = np.array([[1.0], [2], [3], [4], [np.nan], [6], [7], [8], [9]])
    >>> input_ends(History(np.arange(9) * 60_000, c, c.copy(), ('X',), 60_000), 2).tolist()
    [2, 3, 7, 8]
    """
    if len(h) < lookback + 1:
        return np.zeros(0, dtype=np.int64)
    run = _present_runs(h)
    ends = np.arange(lookback, len(h))
    return ends[run[ends] >= lookback + 1]


def window_ok(h: History, lookback: int) -> bool:
    """Whether the last lookback+1 candles are all present (a forecast can be made)."""
    if len(h) < lookback + 1:
        return False
    k = slice(len(h) - lookback - 1, None)
    return all(bool(np.all(np.isfinite(a[k]))) for a in (h.close, h.volume, h.high, h.low,
                                                             h.open))


def targets(close: np.ndarray, ends: np.ndarray, horizon: int) -> np.ndarray:
    """Cumulative log returns log(close[t+k] / close[t]), k = 1..H, shape (m, H, S).

    >>> c = np.exp(np.array([[0.0], [1], [3], [6]]))
    >>> targets(c, np.array([0, 1]), 2)[:, :, 0].tolist()
    [[1.0, 3.0], [2.0, 5.0]]
    """
    lc = np.log(close)
    k = np.arange(1, horizon + 1)
    return lc[ends[:, None] + k[None, :]] - lc[ends][:, None, :]


def future_time(ts_end: np.ndarray, step_ms: int, horizon: int) -> np.ndarray:
    """Calendar features of the H future candles after each end time, (m, H, 4)."""
    k = np.arange(1, horizon + 1)
    fut = np.asarray(ts_end, dtype=np.int64)[:, None] + k[None, :] * step_ms
    return time_features(fut.ravel()).reshape(len(ts_end), horizon, TIME_FEATURES)

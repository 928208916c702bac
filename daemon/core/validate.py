"""Candle validation (what README: Commands says is rejected), pure and vectorised.

One implementation serves the exchange source (a few hundred rows a call) and
CSV import (millions of rows), so both reject exactly the same things for
exactly the same reasons.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Row = tuple[int, float, float, float, float, float]

# Timestamps below this are almost certainly seconds, not milliseconds
# (1e11 ms is 1973; 1e11 s is the year 5138).
SECONDS_THRESHOLD = 100_000_000_000
MAX_TS = 10**15  # the year 33658: anything later is garbage, and must not overflow int64


@dataclass(frozen=True)
class RejectedRow:
    """A candle row that failed a check, and why (not to be confused with a refused
    retrain, `forecaster.base.Rejected`)."""

    index: int  # position in the input
    ts: int | None
    reason: str


@dataclass
class Checked:
    """Valid candles (closed, ascending, unique) as columns, plus what was rejected."""

    ts: np.ndarray  # (m,) int64
    ohlcv: np.ndarray  # (m, 5) float64
    rejected: list[RejectedRow]
    open_dropped: int = 0  # the still-open candle, dropped without complaint
    duplicates: int = 0  # identical repeats collapsed to one
    out_of_order: bool = False

    @property
    def rows(self) -> list[Row]:
        return [(t, *x) for t, x in zip(self.ts.tolist(), self.ohlcv.tolist(), strict=True)]

    @classmethod
    def empty(cls) -> Checked:
        return cls(np.zeros(0, np.int64), np.zeros((0, 5)), [])


def check(
    ts: np.ndarray,
    ohlcv: np.ndarray,
    step_ms: int,
    now_ms: int | None = None,
) -> Checked:
    """Validate candles given as float arrays: ts (n,), ohlcv (n, 5).

    Keeps candles with finite positive prices, low <= open, close <= high,
    finite non-negative volume and a millisecond timestamp on the timeframe grid.
    With `now_ms`, the still-open candle is dropped and future ones rejected.

    >>> t0 = 1_600_000_020_000  # a minute boundary
    >>> ts = np.array([t0, t0 + 60_000, t0 + 90_000], float)
    >>> c = check(ts, np.array([[1, 2, 1, 1.5, 3]] * 3, float), 60_000)
    >>> [r[0] - t0 for r in c.rows], [x.reason for x in c.rejected]
    ([0, 60000], ['ts_ms 1600000110000 is not on the 60000 ms grid of the timeframe'])
    """
    ts = np.asarray(ts, dtype=np.float64)
    ohlcv = np.asarray(ohlcv, dtype=np.float64).reshape(len(ts), 5)
    n = len(ts)

    # Every check as a boolean mask, in order: the first failing check names a row. Masks
    # are cheap over millions of rows; reason texts are built only for the failing ones.
    checks: list[tuple[np.ndarray, str]] = []
    o, h, lo, c, v = (ohlcv[:, i] for i in range(5))
    finite_ts = np.isfinite(ts)
    checks.append((~finite_ts, "ts_ms is missing or not a number"))
    checks.append((finite_ts & (np.abs(ts) > MAX_TS), "ts_ms is implausibly large"))
    usable = finite_ts & (np.abs(ts) <= MAX_TS)
    ts_int = np.where(usable, ts, 0).astype(np.int64)
    checks.append((usable & (ts != np.floor(np.where(usable, ts, 0))),
                   "ts_ms is not a whole number"))
    checks.append((ts_int < 0, "ts_ms is negative"))
    checks.append(((ts_int > 0) & (ts_int < SECONDS_THRESHOLD),
                   "ts_ms looks like seconds, not milliseconds"))
    for name, col in (("open", o), ("high", h), ("low", lo), ("close", c)):
        finite = np.isfinite(col)
        checks.append((~finite, f"{name} is missing or not finite"))
        checks.append((finite & (col <= 0), f"{name} is not positive"))
    finite_v = np.isfinite(v)
    checks.append((~finite_v, "volume is missing or not finite"))
    checks.append((finite_v & (v < 0), "volume is negative"))
    with np.errstate(invalid="ignore"):
        checks.append((h < lo, "high < low"))
        checks.append(((o < lo) | (o > h), "open outside [low, high]"))
        checks.append(((c < lo) | (c > h), "close outside [low, high]"))
    bad = np.zeros(n, dtype=bool)
    for mask, _ in checks:
        bad |= mask
    off_grid = ((ts_int % step_ms) != 0) & ~bad
    bad |= off_grid
    reason: dict[int, str] = {}
    failing = np.flatnonzero(bad)
    if len(failing):
        sub = np.full(len(failing), "", dtype=object)
        for mask, text in checks:
            sub[mask[failing] & (sub == "")] = text
        reason = dict(zip(failing.tolist(), sub.tolist(), strict=True))
        for i in np.flatnonzero(off_grid).tolist():
            reason[i] = f"ts_ms {ts_int[i]} is not on the {step_ms} ms grid of the timeframe"

    open_dropped = 0
    if now_ms is not None:
        is_open = (ts_int <= now_ms) & (now_ms < ts_int + step_ms) & ~bad
        open_dropped = int(np.sum(is_open))
        future = (ts_int > now_ms) & ~bad & ~is_open
        bad |= is_open | future
        for i in np.flatnonzero(future).tolist():
            reason[i] = "candle is in the future"

    rejected = [RejectedRow(i, int(ts_int[i]) if np.isfinite(ts[i]) else None, r)
                for i, r in sorted(reason.items())]
    good = np.flatnonzero(~bad)
    out_of_order = bool(np.any(np.diff(ts_int[good]) < 0)) if len(good) > 1 else False
    order = good[np.argsort(ts_int[good], kind="stable")]

    duplicates = 0
    # Equal timestamps: identical copies collapse to one; differing copies are all
    # rejected, since nothing tells which one the exchange meant.
    ts_sorted = ts_int[order]
    if len(order) > 1 and np.any(ts_sorted[1:] == ts_sorted[:-1]):
        keep: list[int] = []
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and ts_sorted[j + 1] == ts_sorted[i]:
                j += 1
            group = order[i : j + 1]
            if len(group) == 1 or all(np.array_equal(ohlcv[g], ohlcv[group[0]]) for g in group):
                duplicates += len(group) - 1
                keep.append(int(group[0]))
            else:
                for g in group:
                    rejected.append(RejectedRow(int(g), int(ts_int[g]),
                                             "duplicate timestamp with different values"))
            i = j + 1
        order = np.asarray(keep, dtype=np.int64)
    rejected.sort(key=lambda r: r.index)
    return Checked(ts_int[order], ohlcv[order], rejected, open_dropped, duplicates, out_of_order)


def check_rows(rows: list[list[float | None]], step_ms: int, now_ms: int | None = None) -> Checked:
    """Validate ccxt-style rows [ts, o, h, l, c, v] (None where a field is missing)."""
    if not rows:
        return Checked.empty()
    arr = np.full((len(rows), 6), np.nan)
    for i, r in enumerate(rows):
        for j in range(6):
            x = r[j] if isinstance(r, (list, tuple)) and j < len(r) else None
            if isinstance(x, (int, float)) and not isinstance(x, bool):
                arr[i, j] = x
    return check(arr[:, 0], arr[:, 1:], step_ms, now_ms)

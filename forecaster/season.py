"""The calendar of volatility: hour of day, weekday/weekend and, for candles shorter than an
hour, minute of the hour. Pure numpy.

Each factor is a multiplicative variance factor estimated from mean absolute sizes (the
square root of a variance proxy), not mean squares: one crash candle would otherwise decide
its cell for weeks. Volatility clusters, so a cell is never compared with the whole sample:
every candle is first divided by the mean of its own group (minute of the hour: its clock
hour; hour of day: its UTC day; weekend: its week), which removes the level of the day, and
each group gives one observation per cell. How far a cell's mean may move away from 1 is
decided by the data (empirical Bayes, James–Stein): by the spread of the cell means beyond
what their own sampling noise explains. Three days of minutes then keep a clear hour-of-day
shape and drop most of a noisy minute-of-hour one; 800 days of hours keep nearly everything.
"""

from __future__ import annotations

import numpy as np

HOUR_MS = 3_600_000
DAY_MS = 86_400_000
WEEK_OFFSET_DAYS = 3  # 1970-01-01 was a Thursday: (day + 3) // 7 counts Monday-based weeks
FACTOR_RANGE = (0.2, 5.0)  # a variance factor beyond this is an estimation accident


def calendar_index(ts: np.ndarray) -> np.ndarray:
    """Calendar cell of candle open times: hour of day (0..23) + 24 on Saturdays and Sundays.

    >>> calendar_index(np.array([0, 2 * 86_400_000 + 5 * 3_600_000])).tolist()  # Thu 00h, Sat 05h
    [0, 29]
    """
    ts = np.asarray(ts, dtype=np.int64)
    hour = (ts // HOUR_MS) % 24
    weekday = (ts // DAY_MS + WEEK_OFFSET_DAYS) % 7  # 0 = Monday
    return (hour + 24 * (weekday >= 5)).astype(np.int64)


def slots_per_hour(step_ms: int) -> int:
    """Candles per clock hour when they tile it (1-minute: 60), else 1 (hourly, daily).

    >>> slots_per_hour(60_000), slots_per_hour(3_600_000), slots_per_hour(7 * 60_000)
    (60, 1, 1)
    """
    if 0 < step_ms < HOUR_MS and HOUR_MS % step_ms == 0:
        return HOUR_MS // step_ms
    return 1


def minute_index(ts: np.ndarray, step_ms: int) -> np.ndarray:
    """Slot of each candle within its clock hour (0 for candles of an hour or more).

    >>> minute_index(np.array([0, 59 * 60_000, 61 * 60_000]), 60_000).tolist()
    [0, 59, 1]
    """
    ts = np.asarray(ts, dtype=np.int64)
    return ((ts % HOUR_MS) // step_ms % slots_per_hour(step_ms)).astype(np.int64)


def shrunk_factors(a: np.ndarray, cell: np.ndarray, group: np.ndarray,
                   n_cells: int) -> np.ndarray:
    """Mean relative size per cell (each candle over its group's mean), shrunk toward 1.

    Every (group, cell) pair is one observation; the shrinkage of a cell is
    signal / (signal + its noise), with noise = the variance of one observation (pooled over
    the cells) / the cell's number of observations, and signal = the spread of the cell
    means less the mean noise and its own sampling error (never below 0). Cells seen in
    fewer than two groups stay at 1.

    >>> rng = np.random.default_rng(0)
    >>> cell = np.tile(np.arange(4), 200); group = np.repeat(np.arange(200), 4)
    >>> a = np.abs(rng.standard_normal(800)) * np.array([1.0, 1.0, 2.0, 1.0])[cell]
    >>> f = shrunk_factors(a, cell, group, 4)
    >>> bool(1.5 < f[2] / f[0] < 2.5), round(float(shrunk_factors(a, cell, group * 0, 4)[2]), 6)
    (True, 1.0)
    """
    ok = np.isfinite(a)
    a, cell, group = a[ok], cell[ok], group[ok]
    if len(a) == 0:
        return np.ones(n_cells)
    _, gi = np.unique(group, return_inverse=True)
    gmean = np.bincount(gi, a) / np.bincount(gi)
    keep = gmean[gi] > 0
    rel, cell, gi = a[keep] / gmean[gi][keep], cell[keep], gi[keep]
    keys, ki = np.unique(gi * n_cells + cell, return_inverse=True)
    obs = np.bincount(ki, rel) / np.bincount(ki)  # one value per (group, cell)
    oc = keys % n_cells
    n = np.bincount(oc, minlength=n_cells).astype(np.float64)
    s1 = np.bincount(oc, obs, minlength=n_cells)
    s2 = np.bincount(oc, obs * obs, minlength=n_cells)
    seen = n >= 2
    if seen.sum() < 2:
        return np.ones(n_cells)
    mean = np.where(seen, s1 / np.maximum(n, 1), 1.0)
    # The spread of one observation around its cell's mean, pooled over the cells: a cell
    # seen on two days alone cannot say how noisy it is.
    within = np.where(seen, np.maximum(s2 - n * mean ** 2, 0.0), 0.0).sum()
    spread = within / max(float((n[seen] - 1).sum()), 1.0)
    noise = spread / np.maximum(n, 1)
    centre = mean[seen].mean()
    # Without any effect the spread of k cell means is about the noise, give or take
    # sqrt(2 / (k - 1)) of it: only what stands out beyond that counts as signal,
    # so pure noise (a series without a calendar) gives a flat profile.
    k = int(seen.sum())
    margin = 1 + np.sqrt(2 / (k - 1))
    signal = max(float(np.mean((mean[seen] - centre) ** 2) - margin * noise[seen].mean()), 0.0)
    keep_dev = np.where(seen, signal / (signal + noise + 1e-300), 0.0)
    return 1 + keep_dev * (mean / centre - 1)


def calendar_profiles(x: np.ndarray, ts: np.ndarray,
                      step_ms: int) -> tuple[np.ndarray, np.ndarray]:
    """Variance factors (48, S) by hour of day × weekend and (slots_per_hour, S) by slot of
    the hour, estimated from the variance proxy x (n, S) in that order of fineness: the
    minute of the hour against its clock hour, the hour against its day (sizes divided by
    the minute factor), the weekend against its week (divided by both)."""
    ts = np.asarray(ts, dtype=np.int64)
    day = ts // DAY_MS
    cells = calendar_index(ts)
    hour, weekend = cells % 24, (cells >= 24).astype(np.int64)
    week = (day + WEEK_OFFSET_DAYS) // 7
    slots = slots_per_hour(step_ms)
    slot = minute_index(ts, step_ms)
    n_s = x.shape[1]
    prof, minute = np.ones((48, n_s)), np.ones((slots, n_s))
    for s in range(n_s):
        a = np.sqrt(np.maximum(x[:, s], 0.0))
        mf = shrunk_factors(a, slot, ts // HOUR_MS, slots) if slots > 1 else np.ones(1)
        a = a / np.where(mf[slot] > 0, mf[slot], 1.0)
        hf = shrunk_factors(a, hour, day, 24)
        a = a / np.where(hf[hour] > 0, hf[hour], 1.0)
        wf = shrunk_factors(a, weekend, week, 2)
        prof[:, s] = np.clip(np.concatenate([hf * wf[0], hf * wf[1]]) ** 2, *FACTOR_RANGE)
        minute[:, s] = np.clip(mf ** 2, *FACTOR_RANGE)
    return prof, minute

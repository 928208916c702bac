"""The 80 % prediction interval every model's band is judged by: one place for its numbers.

The store's `forecast_accuracy` view, the volatility prior's grid, the calibration of the
seq2seq band and the benchmarks all score a band the same way: its width plus 2/α times how
far the actual lies outside it (α = 0.2 for a central 80 % band, so 10), the standard
interval score (Gneiting & Raftery 2007). Lower is better.
"""

from __future__ import annotations

import numpy as np

ALPHA = 0.2  # the share of outcomes a band may miss
COVERAGE = 1 - ALPHA  # a central 80 % band: the 10 % and 90 % quantiles
Z80 = 1.2815515655446004  # standard normal 90 % quantile: the half-width of a Gaussian band
PENALTY = 2 / ALPHA  # 10: the interval score's weight on a miss


def interval_score(lo: np.ndarray, hi: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The 80 % interval score of each band: width + 10 x how far the actual lies outside.

    >>> interval_score(np.array([-1.0]), np.array([1.0]), np.array([2.0])).tolist()
    [12.0]
    """
    return (hi - lo) + PENALTY * np.maximum(lo - y, 0.0) + PENALTY * np.maximum(y - hi, 0.0)

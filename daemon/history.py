"""From stored candles to the forecaster's History: one time grid, holes left as NaN.

The only filling done is explicit and bounded: candle times the exchange
confirmed it has no candle for (no trades, remembered in `empty_candles`) get
a flat candle (previous close, zero volume) when the run of them is at most
`max_fill` long. Anything else missing stays NaN, so windows that touch it are
not forecast from.
"""

from __future__ import annotations

import numpy as np

from forecaster.base import History
from storage import Store, candles


def load(store: Store, exchange: str, symbols: list[str], timeframe: str, step_ms: int,
         end_ts: int, n: int, max_fill: int) -> tuple[History, int]:
    """The n grid rows ending at end_ts (inclusive); returns it with the count of filled cells."""
    start = end_ts - (n - 1) * step_ms
    ts = start + np.arange(n, dtype=np.int64) * step_ms
    close = np.full((n, len(symbols)), np.nan)
    volume = np.full((n, len(symbols)), np.nan)
    empty = np.zeros((n, len(symbols)), dtype=bool)
    with store.read("load history") as conn:
        for j, sym in enumerate(symbols):
            rows = candles.range_rows(conn, exchange, sym, timeframe, start, end_ts + 1)
            if rows:
                arr = np.asarray(rows, dtype=np.float64)
                idx = ((arr[:, 0].astype(np.int64) - start) // step_ms).astype(np.int64)
                close[idx, j] = arr[:, 4]
                volume[idx, j] = arr[:, 5]
            e = candles.empty_ts(conn, exchange, sym, timeframe, start, end_ts + 1)
            if e:
                empty[(np.asarray(e, dtype=np.int64) - start) // step_ms, j] = True
    filled = fill_confirmed_empty(close, volume, empty, max_fill)
    return History(ts, close, volume, tuple(symbols), step_ms), filled


def fill_confirmed_empty(close: np.ndarray, volume: np.ndarray, empty: np.ndarray,
                         max_fill: int) -> int:
    """Flat-fill runs of confirmed no-trade candles of length <= max_fill, in place.

    >>> c = np.array([[1.0], [np.nan], [np.nan], [2.0], [np.nan]])
    >>> v = np.array([[5.0], [np.nan], [np.nan], [6.0], [np.nan]])
    >>> e = np.array([[False], [True], [True], [False], [False]])
    >>> fill_confirmed_empty(c, v, e, max_fill=2), c.ravel().tolist(), v.ravel().tolist()[:3]
    (2, [1.0, 1.0, 1.0, 2.0, nan], [5.0, 0.0, 0.0])
    """
    filled = 0
    if max_fill <= 0 or not empty.any():
        return 0
    n, s = close.shape
    for j in range(s):
        i = 0
        while i < n:
            if not (empty[i, j] and np.isnan(close[i, j])):
                i += 1
                continue
            k = i
            while k < n and empty[k, j] and np.isnan(close[k, j]):
                k += 1
            if i > 0 and np.isfinite(close[i - 1, j]) and k - i <= max_fill:
                close[i:k, j] = close[i - 1, j]
                volume[i:k, j] = 0.0
                filled += k - i
            i = k
    return filled

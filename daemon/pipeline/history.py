"""From stored candles to the forecaster's History: one time grid, holes left as NaN.

The only filling done is explicit and bounded: candle times the exchange confirmed it has
no candle for (no trades, remembered in `empty_candles`) get a flat candle (previous
close, zero volume) when the run of them is at most `max_fill` long. Anything else
missing stays NaN, so windows that touch it are not forecast from.

`CandleWindow` keeps the newest rows of a series in memory between ticks, so a tick reads
only the candles that are new instead of the whole training window. It checks, every
time, that the store still holds exactly the rows it remembers (a hole filled by a
`tickcast backfill` in another process is reloaded, never missed), and fills each slice it
hands out exactly as a fresh read of that slice would be filled: a cached read and a
fresh one give identical histories, so a resumed replay equals an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from daemon.core.series import Series
from forecaster.base import History
from storage import Store, candles

_FIELDS = ("open", "high", "low", "close", "volume")


@dataclass
class _Rows:
    """Raw grid rows: NaN where no candle is stored, `empty` where the exchange said none."""

    ts: np.ndarray  # (n,) int64
    ohlcv: np.ndarray  # (5, n, S)
    empty: np.ndarray  # (n, S) bool

    @classmethod
    def blank(cls, start: int, n: int, step: int, n_sym: int) -> _Rows:
        return cls(start + np.arange(n, dtype=np.int64) * step,
                   np.full((5, n, n_sym), np.nan), np.zeros((n, n_sym), dtype=bool))

    def counts(self) -> tuple[np.ndarray, np.ndarray]:
        """(stored candles, confirmed-empty times) per symbol."""
        return np.isfinite(self.ohlcv[3]).sum(axis=0), self.empty.sum(axis=0)


def _read(store: Store, series: Series, start: int, end_ts: int,
          check: _Rows | None = None) -> _Rows | None:
    """Grid rows start..end_ts (inclusive) as stored. With `check`, first verify in the same
    read transaction that the store still holds exactly the rows of `check`: None if not."""
    step = series.step_ms
    n = (end_ts - start) // step + 1
    out = _Rows.blank(start, n, step, len(series.symbols))
    col = {sym: j for j, sym in enumerate(series.symbols)}
    with store.read("load history") as conn:
        if check is not None and not _same_counts(conn, series, check):
            return None
        rows, empty = candles.window_rows(conn, series.exchange, series.timeframe,
                                          series.symbols, start, end_ts + 1)
    if rows:
        sym = np.fromiter((col[r[0]] for r in rows), dtype=np.int64, count=len(rows))
        arr = np.asarray([r[1:] for r in rows], dtype=np.float64)
        idx = (arr[:, 0].astype(np.int64) - start) // step
        out.ohlcv[:, idx, sym] = arr[:, 1:6].T
    for s, t in empty:
        out.empty[(t - start) // step, col[s]] = True
    return out


def _same_counts(conn: Any, series: Series, rows: _Rows) -> bool:
    """Whether the store holds exactly the candles and empty times of `rows`: candles are
    never changed in place, only added, so equal counts per symbol mean equal rows."""
    have_c, have_e = rows.counts()
    got_c, got_e = candles.counts(conn, series.exchange, series.timeframe, series.symbols,
                                  int(rows.ts[0]), int(rows.ts[-1]) + 1)
    return all(got_c.get(sym, 0) == have_c[j] and got_e.get(sym, 0) == have_e[j]
               for j, sym in enumerate(series.symbols))


def _history(rows: _Rows, series: Series, max_fill: int) -> History:
    ohlcv = rows.ohlcv
    if max_fill > 0 and rows.empty.any():
        ohlcv = ohlcv.copy()  # the cache keeps the raw rows; filling is per slice
        fill_confirmed_empty(ohlcv, rows.empty, max_fill)
    o, h, lo, c, v = ohlcv
    return History(rows.ts, c, v, series.symbols, series.step_ms, o, h, lo)


def load(store: Store, series: Series, end_ts: int, n: int, max_fill: int) -> History:
    """The n grid rows ending at end_ts (inclusive), read afresh."""
    rows = _read(store, series, end_ts - (n - 1) * series.step_ms, end_ts)
    assert rows is not None  # no check asked for: always read
    return _history(rows, series, max_fill)


def fill_confirmed_empty(ohlcv: np.ndarray, empty: np.ndarray, max_fill: int) -> int:
    """Flat-fill runs of confirmed no-trade candles of length <= max_fill, in place.

    ohlcv (5, n, S): a filled candle has open = high = low = close = the previous close and
    volume 0. A run with no stored candle before it (in this slice) is left missing.

    >>> c = np.array([[1.0], [np.nan], [np.nan], [2.0], [np.nan]])
    >>> x = np.stack([c, c, c, c, np.array([[5.0], [np.nan], [np.nan], [6.0], [np.nan]])])
    >>> e = np.array([[False], [True], [True], [False], [False]])
    >>> fill_confirmed_empty(x, e, max_fill=2), x[3].ravel().tolist(), x[4].ravel().tolist()[:3]
    (2, [1.0, 1.0, 1.0, 2.0, nan], [5.0, 0.0, 0.0])
    """
    filled = 0
    close = ohlcv[3]
    for j in range(close.shape[1]):
        run = empty[:, j] & np.isnan(close[:, j])
        if not run.any():
            continue
        edges = np.diff(np.concatenate([[0], run.astype(np.int8), [0]]))
        a, b = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        # Runs are maximal, so the candle before one is never inside another: every run is
        # filled from the stored close before it, all at once (a Python loop over runs cost
        # 2.5 ms a slice on a thin market's two weeks of minutes, several slices a tick).
        prev = close[np.maximum(a - 1, 0), j]
        ok = (a > 0) & np.isfinite(prev) & (b - a <= max_fill)
        a, b, prev = a[ok], b[ok], prev[ok]
        n = b - a
        if not len(n):
            continue
        idx = np.arange(int(n.sum())) + np.repeat(a - (np.cumsum(n) - n), n)
        ohlcv[:4, idx, j] = np.repeat(prev, n)
        ohlcv[4, idx, j] = 0.0
        filled += int(n.sum())
    return filled


OPEN_TAIL = 240  # newest rows in which an open row is read again rather than checked


def _open_from(rows: _Rows) -> int:
    """Index of the first open row among the newest OPEN_TAIL rows (len(rows) if none): a
    row where some symbol has neither a stored candle nor a confirmed no-trade mark yet."""
    lo = max(0, len(rows.ts) - OPEN_TAIL)
    open_ = (np.isnan(rows.ohlcv[3, lo:]) & ~rows.empty[lo:]).any(axis=1)
    hit = np.flatnonzero(open_)
    return lo + int(hit[0]) if len(hit) else len(rows.ts)


class CandleWindow:
    """The newest `size` grid rows of a series, kept between ticks."""

    def __init__(self, store: Store, series: Series, size: int, max_fill: int) -> None:
        self.store = store
        self.series = series
        self.size = size
        self.max_fill = max_fill
        self._rows: _Rows | None = None

    def refresh(self, end_ts: int) -> None:
        """Bring the rows held up to end_ts (once per tick): read what is new, and reload
        everything if the store no longer holds exactly the rows remembered."""
        self._ensure(end_ts, check=True)

    def history(self, end_ts: int, n: int) -> History:
        """The n grid rows ending at end_ts (n <= size), identical to `load(...)`.

        Served from the rows held when `refresh` covered end_ts this tick; read otherwise.
        """
        if n > self.size:
            return load(self.store, self.series, end_ts, n, self.max_fill)
        rows = self._ensure(end_ts, check=False)
        k = int((end_ts - rows.ts[0]) // self.series.step_ms) + 1
        lo = max(0, k - n)
        sl = _Rows(rows.ts[lo:k], rows.ohlcv[:, lo:k], rows.empty[lo:k])
        if len(sl.ts) < n:  # the window starts before the rows held: never here by design
            return load(self.store, self.series, end_ts, n, self.max_fill)
        return _history(sl, self.series, self.max_fill)

    def _ensure(self, end_ts: int, *, check: bool) -> _Rows:
        step = self.series.step_ms
        want_start = end_ts - (self.size - 1) * step
        rows = self._rows
        if rows is not None and want_start >= rows.ts[0] and end_ts >= rows.ts[0]:
            last = int(rows.ts[-1])
            if end_ts <= last and not check:
                return rows  # covered by what is held
            # New rows, and (once a tick) the check that the rows held are still the store's,
            # in one read transaction. The newest rows that are still open (a symbol with
            # neither a candle nor a confirmed no-trade mark) are read again instead of
            # checked: that is where a thin market's no-trade minutes get confirmed when
            # its next candle arrives, which would otherwise fail the check and reload the
            # whole window (every few ticks on BTC/EUR minutes, 100 ms each).
            k = _open_from(rows) if check else len(rows.ts)
            if k > 0:
                held = rows if k == len(rows.ts) else _Rows(rows.ts[:k], rows.ohlcv[:, :k],
                                                              rows.empty[:k])
                first = int(held.ts[-1]) + step
                new = _read(self.store, self.series, first, max(end_ts, last),
                            check=held if check else None)
                if new is not None:
                    if len(new.ts):
                        held = _Rows(np.concatenate([held.ts, new.ts]),
                                     np.concatenate([held.ohlcv, new.ohlcv], axis=1),
                                     np.concatenate([held.empty, new.empty]))
                    return self._keep(held)
        fresh = _read(self.store, self.series, want_start, end_ts)
        assert fresh is not None
        return self._keep(fresh)

    def _keep(self, rows: _Rows) -> _Rows:
        # Hold up to twice the size, trimming in one go: a request whose end lags the
        # newest row (one symbol behind the other) is still served from memory.
        if len(rows.ts) > 2 * self.size:
            cut = len(rows.ts) - self.size
            rows = _Rows(rows.ts[cut:], rows.ohlcv[:, cut:], rows.empty[cut:])
        self._rows = rows
        return rows

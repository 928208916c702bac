"""The candle source of a replay: historical candles in memory, revealed only once they have
closed by the simulated now (the prefix property: a forecast issued at T can only have seen
data up to T). The inputs it reveals are read by `daemon.files.replay_data`."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from daemon.core.series import Series
from daemon.pipeline.source import FetchResult, FetchSummary, empty_between

Arrays = tuple[np.ndarray, np.ndarray]  # ts int64 (n,), ohlcv float64 (n, 5)


class ReplaySource:
    """A candle source over in-memory data that never reveals a candle before it closes."""

    def __init__(self, exchange: str, data: Mapping[str, Arrays]) -> None:
        self.exchange = exchange
        self.data = data

    def fetch_closed(self, series: Series, symbol: str, since_ms: int, until_ms: int | None,
                     now_ms: int, on_page: Callable[[FetchResult], None], *,
                     since_is_stored: bool = True) -> FetchSummary:
        ts, ohlcv = self.data[symbol]
        open_ts = series.open_ts(now_ms)
        end = open_ts if until_ms is None else min(until_ms, open_ts)
        lo = int(np.searchsorted(ts, since_ms, side="left"))
        hi = int(np.searchsorted(ts, end, side="left"))
        rows = [(t, *x) for t, x in zip(ts[lo:hi].tolist(), ohlcv[lo:hi].tolist(), strict=True)]
        part = FetchResult(rows=rows, pages=1)  # type: ignore[arg-type]
        # Minutes missing between revealed candles are no-trade minutes of this "exchange".
        part.empty_ts = empty_between(part.rows, [], None, series.step_ms)
        on_page(part)
        done = FetchSummary()
        done.count(part)
        return done

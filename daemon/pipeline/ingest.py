"""Pipeline step 1: fetch closed candles, store them, remember checked empty times.

Used by the live tick, by `tickcast backfill` and by replay (whose source is the
data file rather than an exchange): one path from 'the source answered' to
'the rows are committed'.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from daemon.core import crashpoints
from daemon.core.clock import iso
from daemon.core.series import Series
from daemon.pipeline.source import CandleSource, FetchResult
from storage import Store, candles

log = logging.getLogger("tickcast.pipeline")


@dataclass
class IngestStats:
    stored: int = 0
    unchanged: int = 0
    conflicts: int = 0
    rejected: int = 0
    empty_marked: int = 0
    pages: int = 0
    incomplete: bool = False
    rejected_reasons: dict[str, int] = field(default_factory=dict)

    def add(self, other: IngestStats) -> None:
        self.stored += other.stored
        self.unchanged += other.unchanged
        self.conflicts += other.conflicts
        self.rejected += other.rejected
        self.empty_marked += other.empty_marked
        self.pages += other.pages
        self.incomplete |= other.incomplete
        for k, v in other.rejected_reasons.items():
            self.rejected_reasons[k] = self.rejected_reasons.get(k, 0) + v


def store_part(store: Store, series: Series, symbol: str, part: FetchResult, now_ms: int,
               stats: IngestStats) -> None:
    """Commit one page: its valid candles and the no-trade times it confirmed, together."""
    ex, tf = series.exchange, series.timeframe
    with store.write(f"store {symbol} candles") as conn:
        res = candles.insert(conn, ex, symbol, tf, part.rows)
        marked = candles.mark_empty(conn, ex, symbol, tf, part.empty_ts, now_ms)
    crashpoints.hit("after-candles-commit")
    for stored, incoming in res.conflicts:
        log.warning("conflict: %s %s candle at %s arrived again with different values %s; "
                    "keeping the stored %s", ex, symbol, iso(stored[0]), incoming[1:],
                    stored[1:])
    stats.stored += res.inserted
    stats.unchanged += res.unchanged
    stats.conflicts += len(res.conflicts)
    stats.rejected += len(part.rejected)
    for r in part.rejected:
        key = re.sub(r"\d+", "N", r.reason)
        stats.rejected_reasons[key] = stats.rejected_reasons.get(key, 0) + 1
    stats.empty_marked += marked
    stats.pages += part.pages


def fetch_and_store(
    store: Store,
    source: CandleSource,
    series: Series,
    symbol: str,
    since_ms: int,
    until_ms: int | None,
    now_ms: int,
    *,
    since_is_stored: bool,
    on_progress: Callable[[IngestStats], None] | None = None,
) -> IngestStats:
    stats = IngestStats()

    def on_page(part: FetchResult) -> None:
        store_part(store, series, symbol, part, now_ms, stats)
        if on_progress is not None:
            on_progress(stats)

    res = source.fetch_closed(series, symbol, since_ms, until_ms, now_ms, on_page,
                              since_is_stored=since_is_stored)
    stats.incomplete = not res.complete
    return stats


def poll(store: Store, source: CandleSource, series: Series, symbol: str, now_ms: int, *,
         history: int) -> IngestStats:
    """Fetch everything closed since the newest stored candle (or `history` candles back)."""
    with store.read() as conn:
        newest = candles.newest_ts(conn, series.exchange, symbol, series.timeframe)
    if newest is None:
        since = series.open_ts(now_ms) - history * series.step_ms
        return fetch_and_store(store, source, series, symbol, since, None, now_ms,
                               since_is_stored=False)
    return fetch_and_store(store, source, series, symbol, newest, None, now_ms,
                           since_is_stored=True)

"""`tickcast backfill`: fetch closed candles for a range, resume, repair holes."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from storage import Store, candles

from .clock import iso
from .ingest import IngestStats, fetch_and_store
from .progress import Progress
from .source import CandleSource

log = logging.getLogger(__name__)


@dataclass
class SymbolSummary:
    symbol: str
    stats: IngestStats = field(default_factory=IngestStats)
    gaps_found: int = 0
    gaps_left: int = 0
    missing_left: int = 0  # candle times still missing inside the range


def plan_start(since: int | None, oldest: int | None, now_ms: int, step_ms: int,
               history: int) -> int:
    """Where a backfill starts: --since, else the oldest stored candle, else `history` back."""
    if since is not None:
        return since - since % step_ms if since % step_ms else since
    if oldest is not None:
        return oldest
    return now_ms - now_ms % step_ms - history * step_ms


def backfill_symbol(store: Store, source: CandleSource, symbol: str, timeframe: str,
                    step_ms: int, since: int | None, until: int | None, now_ms: int,
                    history: int, bar: Progress | None = None) -> SymbolSummary:
    out = SymbolSummary(symbol)
    ex = source.exchange
    with store.read() as conn:
        oldest = candles.oldest_ts(conn, ex, symbol, timeframe)
        newest = candles.newest_ts(conn, ex, symbol, timeframe)
    start = plan_start(since, oldest, now_ms, step_ms, history)
    open_ts = now_ms - now_ms % step_ms
    end = open_ts if until is None else min(until, open_ts)
    base = bar.done if bar else 0

    def progress(stats: IngestStats) -> None:
        if bar is not None:
            done = out.stats.stored + out.stats.unchanged + stats.stored + stats.unchanged
            bar.update(base + done, f"{symbol} rejected {out.stats.rejected + stats.rejected}")

    # 1. Older history than what is stored.
    if oldest is not None and start < oldest:
        out.stats.add(fetch_and_store(store, source, symbol, timeframe, step_ms, start,
                                      min(oldest, end), now_ms, since_is_stored=False,
                                      on_progress=progress))
    # 2. Forward from the newest stored candle (resume), or from the start.
    if newest is not None and start <= newest < end:
        out.stats.add(fetch_and_store(store, source, symbol, timeframe, step_ms, newest, end,
                                      now_ms, since_is_stored=True, on_progress=progress))
    elif newest is None or newest < start:
        out.stats.add(fetch_and_store(store, source, symbol, timeframe, step_ms, start, end,
                                      now_ms, since_is_stored=False, on_progress=progress))
    # 3. Holes inside the range; each refetch starts at the stored candle before it.
    with store.read() as conn:
        holes = candles.gaps(conn, ex, symbol, timeframe, step_ms, start, end)
    out.gaps_found = len(holes)
    for a, b in holes:
        log.info("%s %s: refetching hole %s .. %s (%d candles)", ex, symbol, iso(a), iso(b),
                 (b - a) // step_ms)
        out.stats.add(fetch_and_store(store, source, symbol, timeframe, step_ms, a - step_ms, b,
                                      now_ms, since_is_stored=True, on_progress=progress))
    with store.read() as conn:
        left = candles.gaps(conn, ex, symbol, timeframe, step_ms, start, end)
    out.gaps_left = len(left)
    out.missing_left = sum((b - a) // step_ms for a, b in left)
    for a, b in left[:20]:
        log.warning("%s %s: hole left %s .. %s (%d candles): the exchange returned nothing "
                    "usable there", ex, symbol, iso(a), iso(b), (b - a) // step_ms)
    return out


def backfill(store: Store, source: CandleSource, symbols: list[str], timeframe: str,
             step_ms: int, since: int | None, until: int | None, now_ms: int,
             history: int) -> list[SymbolSummary]:
    open_ts = now_ms - now_ms % step_ms
    end = open_ts if until is None else min(until, open_ts)
    total = 0
    with store.read() as conn:
        for s in symbols:
            oldest = candles.oldest_ts(conn, source.exchange, s, timeframe)
            start = plan_start(since, oldest, now_ms, step_ms, history)
            total += max(0, (end - start) // step_ms)
    bar = Progress("backfill", total, unit=" candles")
    out = []
    for s in symbols:
        out.append(backfill_symbol(store, source, s, timeframe, step_ms, since, until, now_ms,
                                   history, bar))
    bar.close()
    return out

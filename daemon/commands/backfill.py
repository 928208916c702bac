"""`tickcast backfill`: fetch closed candles for a range, resume, repair holes.

The arguments and the exchange's market list are checked before a store is created for
them; then every symbol is fetched page by page, each page validated and committed as it
arrives (`ingest.fetch_and_store`), so a long backfill holds one page at a time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from daemon import wiring
from daemon.config.settings import Settings
from daemon.core import errors
from daemon.core.clock import from_spec, iso
from daemon.core.progress import Progress
from daemon.core.series import Series
from daemon.pipeline.ingest import IngestStats, fetch_and_store
from daemon.pipeline.source import CandleSource, RetryLater
from storage import Store, candles

log = logging.getLogger("tickcast.commands")


@dataclass(frozen=True)
class Span:
    """The range a backfill covers, as the command line and the clock give it."""

    since: int | None  # --since, inclusive; None: the oldest stored candle, else `history` back
    until: int | None  # --until, exclusive; None: now
    now_ms: int
    history: int  # candles to reach back when neither --since nor a stored candle says

    def start(self, oldest: int | None, step_ms: int) -> int:
        """Where a backfill starts: --since, else the oldest stored candle, else `history`
        candles back.

        >>> Span(None, None, 600_000, 3).start(None, 60_000)
        420000
        >>> Span(90_000, None, 0, 3).start(0, 60_000)
        60000
        """
        if self.since is not None:
            return self.since - self.since % step_ms
        if oldest is not None:
            return oldest
        return self.now_ms - self.now_ms % step_ms - self.history * step_ms

    def end(self, step_ms: int) -> int:
        """End (exclusive): --until, but never past the candle still open."""
        open_ts = self.now_ms - self.now_ms % step_ms
        return open_ts if self.until is None else min(self.until, open_ts)


@dataclass
class SymbolSummary:
    symbol: str
    stats: IngestStats = field(default_factory=IngestStats)
    gaps_found: int = 0
    gaps_left: int = 0
    missing_left: int = 0  # candle times still missing inside the range


def backfill_symbol(store: Store, source: CandleSource, series: Series, symbol: str,
                    span: Span, bar: Progress | None = None) -> SymbolSummary:
    out = SymbolSummary(symbol)
    ex, tf, step = series.exchange, series.timeframe, series.step_ms
    now = span.now_ms
    with store.read() as conn:
        oldest = candles.oldest_ts(conn, ex, symbol, tf)
        newest = candles.newest_ts(conn, ex, symbol, tf)
    start, end = span.start(oldest, step), span.end(step)
    base = bar.done if bar else 0

    def progress(stats: IngestStats) -> None:
        if bar is not None:
            done = out.stats.stored + out.stats.unchanged + stats.stored + stats.unchanged
            bar.update(base + done, f"{symbol} rejected {out.stats.rejected + stats.rejected}")

    def fetch(since: int, until: int, *, since_is_stored: bool) -> None:
        out.stats.add(fetch_and_store(store, source, series, symbol, since, until, now,
                                      since_is_stored=since_is_stored, on_progress=progress))

    # 1. Older history than what is stored.
    if oldest is not None and start < oldest:
        fetch(start, min(oldest, end), since_is_stored=False)
    # 2. Forward from the newest stored candle (resume), or from the start.
    if newest is not None and start <= newest < end:
        fetch(newest, end, since_is_stored=True)
    elif newest is None or newest < start:
        fetch(start, end, since_is_stored=False)
    # 3. Holes inside the range; each refetch starts at the stored candle before it.
    with store.read() as conn:
        holes = candles.gaps(conn, ex, symbol, tf, step, start, end)
    out.gaps_found = len(holes)
    for a, b in holes:
        log.info("%s %s: refetching hole %s .. %s (%d candles)", ex, symbol, iso(a), iso(b),
                 (b - a) // step)
        fetch(a - step, b, since_is_stored=True)
    with store.read() as conn:
        left = candles.gaps(conn, ex, symbol, tf, step, start, end)
    out.gaps_left = len(left)
    out.missing_left = sum((b - a) // step for a, b in left)
    for a, b in left[:20]:
        log.warning("%s %s: hole left %s .. %s (%d candles): the exchange returned nothing "
                    "usable there", ex, symbol, iso(a), iso(b), (b - a) // step)
    return out


def backfill(store: Store, source: CandleSource, series: Series,
             span: Span) -> list[SymbolSummary]:
    step = series.step_ms
    total = 0
    with store.read() as conn:
        for s in series.symbols:
            oldest = candles.oldest_ts(conn, series.exchange, s, series.timeframe)
            total += max(0, (span.end(step) - span.start(oldest, step)) // step)
    bar = Progress("backfill", total, unit=" candles")
    out = [backfill_symbol(store, source, series, s, span, bar) for s in series.symbols]
    bar.close()
    return out


def backfill_command(cfg: Settings, since: int | None, until: int | None) -> int:
    now = from_spec(cfg.daemon.clock).now_ms()
    if since is not None and until is not None and until <= since:
        raise errors.UsageError("--until must be after --since")
    series = cfg.series
    source = wiring.make_source(cfg)  # an unknown exchange id is refused here
    try:
        # The exchange must list the symbols before a store is created for them.
        source.load_markets(series.symbols)
        store = wiring.open_configured_store(cfg, now)
        try:
            summaries = backfill(store, source, series,
                                 Span(since, until, now, wiring.history_candles(cfg)))
        finally:
            store.close()
    except RetryLater as e:
        raise RetryLater(f"backfill stopped: {e} (what was fetched is stored; run again to "
                         "resume)") from e
    stored = sum(s.stats.stored for s in summaries)
    rejected = sum(s.stats.rejected for s in summaries)
    conflicts = sum(s.stats.conflicts for s in summaries)
    gaps_left = sum(s.gaps_left for s in summaries)
    missing = sum(s.missing_left for s in summaries)
    for s in summaries:
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(s.stats.rejected_reasons.items()))
        log.info("%s: stored %d, already stored %d, rejected %d%s, conflicts %d, no-trade "
                 "candles confirmed %d, holes found %d, holes left %d", s.symbol, s.stats.stored,
                 s.stats.unchanged, s.stats.rejected, f" ({reasons})" if reasons else "",
                 s.stats.conflicts, s.stats.empty_marked, s.gaps_found, s.gaps_left)
    print(f"backfill: {stored} candles stored, {rejected} rejected, {conflicts} conflicts, "
          f"{gaps_left} gaps left ({missing} candles)")
    return errors.EXIT_OK

"""Closed candles from a real exchange through ccxt (live ticks and backfill).

What to ask for lives here: the client and its URLs, the markets, one validated page, and
paging forward over a range. How a call is retried, paced and its errors translated lives in
`calls`.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from copy import deepcopy
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import ccxt

from daemon.core.clock import iso
from daemon.core.errors import ConfigError
from daemon.core.series import Series
from daemon.core.validate import Checked, check_rows
from daemon.pipeline.source import FetchResult, FetchSummary, empty_between
from daemon.sources.calls import Caller

log = logging.getLogger("tickcast.sources")  # the loggers' names: ARCHITECTURE.md


@dataclass
class Page:
    """One validated answer of the exchange."""

    checked: Checked
    newest_seen: int | None  # newest candle time in the answer, the open candle included
    raw_count: int


def rewrite_urls(urls: Any, api_url: str) -> Any:
    """Replace scheme://host[:port] of every URL inside ccxt's urls['api'], keeping paths.

    >>> rewrite_urls({'public': 'https://www.bitstamp.net/api'}, 'http://127.0.0.1:8080')
    {'public': 'http://127.0.0.1:8080/api'}
    """
    new = urlsplit(api_url)
    if isinstance(urls, dict):
        return {k: rewrite_urls(v, api_url) for k, v in urls.items()}
    if isinstance(urls, str) and urls.startswith(("http://", "https://")):
        old = urlsplit(urls)
        return urlunsplit((new.scheme, new.netloc, old.path, old.query, old.fragment))
    return urls


class CcxtSource:
    """A :class:`~daemon.pipeline.source.CandleSource` over one ccxt exchange."""

    def __init__(
        self,
        exchange_id: str,
        *,
        api_url: str = "",
        timeout_ms: int = 10_000,
        rate_limit: bool = True,
        max_retries: int = 5,
        backoff_max_s: float = 30.0,
        stop: threading.Event | None = None,
        rng: random.Random | None = None,
        call_budget_s: float | None = None,
    ) -> None:
        if exchange_id not in ccxt.exchanges:
            raise ConfigError(f"exchange.id: {exchange_id!r} is not a ccxt exchange id")
        cls = getattr(ccxt, exchange_id)
        self.exchange = exchange_id
        self.client: ccxt.Exchange = cls({"timeout": timeout_ms, "enableRateLimit": rate_limit})
        if api_url:
            self.client.urls["api"] = rewrite_urls(deepcopy(self.client.urls["api"]), api_url)
        self.calls = Caller(exchange_id, max_retries=max_retries, backoff_max_s=backoff_max_s,
                            stop=stop, rng=rng, call_budget_s=call_budget_s)
        feats = (self.client.features or {}).get("spot", {}).get("fetchOHLCV") or {}
        self.page_limit = int(feats.get("limit") or 500)
        self._markets_loaded = False

    def load_markets(self, symbols: tuple[str, ...] | list[str]) -> None:
        """Load markets once and insist the configured symbols exist."""
        if self._markets_loaded:
            return

        def call() -> dict[str, Any]:
            # A garbage answer leaves ccxt with an empty market table that it never
            # reloads by itself, and bitstamp caches the raw answer: clear both.
            cache = self.client.options.get("fetchMarkets")
            if isinstance(cache, dict):
                cache.pop("response", None)
                cache.pop("timestamp", None)
            markets = self.client.load_markets(reload=True)
            if not isinstance(markets, dict) or not markets:
                raise ccxt.BadResponse("empty market list")
            return markets

        markets = self.calls.call(f"load {self.exchange} markets", call)
        missing = [s for s in symbols if s not in markets]
        if missing:
            raise ConfigError(
                f"exchange.symbols: {', '.join(missing)} not traded on {self.exchange}"
            )
        self._markets_loaded = True

    def fetch_page(self, series: Series, symbol: str, since_ms: int, now_ms: int, *,
                   allow_empty: bool) -> Page:
        """One OHLCV request, validated.

        When the request re-asks for a candle known to exist (`allow_empty` False),
        an answer without a single candle is suspect: ccxt turns garbage and 'no
        data' alike into [], so it is retried, never taken as 'nothing new'.
        """
        self.load_markets([symbol])
        tf = series.timeframe

        def call() -> list[list[Any]]:
            raw = self.client.fetch_ohlcv(symbol, tf, since=since_ms, limit=self.page_limit)
            if not isinstance(raw, list):
                raise ccxt.BadResponse(f"OHLCV answer is not a list: {type(raw).__name__}")
            if not raw and not allow_empty:
                raise ccxt.BadResponse("empty OHLCV answer where candles must exist")
            return raw

        raw = self.calls.call(f"fetch {symbol} {tf} candles since {iso(since_ms)}", call)
        checked = check_rows(raw, series.step_ms, now_ms)
        seen = [r[0] for r in raw if isinstance(r, list) and r and isinstance(r[0], int)]
        return Page(checked, max(seen) if seen else None, len(raw))

    def fetch_closed(
        self,
        series: Series,
        symbol: str,
        since_ms: int,
        until_ms: int | None,
        now_ms: int,
        on_page: Callable[[FetchResult], None],
        *,
        since_is_stored: bool = True,
    ) -> FetchSummary:
        """Closed candles with since <= ts < until (until defaults to now), paging forward.

        Callers pass `since` = the newest stored candle (`since_is_stored`): re-asking
        for it makes every healthy answer non-empty. Each following page starts at
        the newest candle of the previous one, for the same reason. `on_page`
        receives each page's part as it arrives and stores it; only counts are kept
        here, so a backfill of any length holds one page at a time.
        """
        step = series.step_ms
        open_ts = series.open_ts(now_ms)
        end = open_ts if until_ms is None else min(until_ms, open_ts)
        last_wanted = end - step  # newest closed candle time we could want
        total = FetchSummary()
        cursor = since_ms
        overlap = since_is_stored
        while cursor <= last_wanted:
            page = self.fetch_page(series, symbol, cursor, now_ms, allow_empty=not overlap)
            part = FetchResult(pages=1, open_dropped=page.checked.open_dropped,
                               duplicates=page.checked.duplicates)
            page_rows = page.checked.rows
            part.rows = [r for r in page_rows if cursor <= r[0] < end]
            part.rejected = [r for r in page.checked.rejected
                             if r.ts is None or cursor <= r.ts < end]
            for r in part.rejected:
                log.warning("rejected %s %s candle at %s: %s", self.exchange, symbol,
                            iso(r.ts), r.reason)
            part.empty_ts = [t for t in empty_between(page_rows, page.checked.rejected,
                                                      page.newest_seen, step)
                             if cursor <= t < end]
            total.count(part)
            on_page(part)
            seen = [r[0] for r in part.rows] + [r.ts for r in part.rejected if r.ts is not None]
            furthest = max(seen, default=cursor)
            if furthest >= last_wanted or (page.newest_seen or 0) >= open_ts:
                break  # reached the newest closed candle, or the open one
            if furthest > cursor:
                cursor, overlap = furthest, furthest in {r[0] for r in part.rows}
                continue
            # Nothing after the cursor in a whole page: a stretch the exchange has
            # no candles for (downtime). Step over it; backfill's gap repair asks again.
            log.warning("%s %s: no candles for %d candles from %s; skipping ahead",
                        self.exchange, symbol, self.page_limit, iso(cursor))
            total.complete = False
            cursor, overlap = cursor + self.page_limit * step, False
        return total

"""Where candles come from: the ccxt exchange source (live, backfill).

ccxt errors are translated here, at the boundary, into three outcomes the rest
of the daemon acts on:

* :class:`RetryLater` - network trouble, rate limits, maintenance, suspect
  answers: back off (already done here, capped) and let the next tick resume
  from the store;
* :class:`SkipSymbol` - this symbol cannot be fetched right now, go on with the
  others;
* :class:`~daemon.errors.ConfigError` - bad symbol, credentials, unknown
  exchange: retrying cannot help, stop with exit 78.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from copy import deepcopy
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit, urlunsplit

import ccxt

from .clock import iso, monotonic
from .errors import ConfigError, TemporaryFailure
from .validate import Checked, Rejected, Row, check_rows

log = logging.getLogger(__name__)
T = TypeVar("T")


RATE_LIMIT_MIN_S = 2.0
RATE_LIMIT_MAX_S = 120.0


class RetryLater(TemporaryFailure):
    """The exchange cannot answer properly now; the next tick resumes from the store."""


class SkipSymbol(Exception):
    """This symbol cannot be fetched now (the exchange refused the request)."""


class Stopping(Exception):
    """Shutdown was requested while waiting to retry."""


@dataclass
class Page:
    """One validated answer of the exchange."""

    checked: Checked
    newest_seen: int | None  # newest candle time in the answer, the open candle included
    raw_count: int


@dataclass
class FetchResult:
    rows: list[Row] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    empty_ts: list[int] = field(default_factory=list)  # confirmed no-trade candle times
    open_dropped: int = 0
    duplicates: int = 0
    pages: int = 0
    complete: bool = True  # False when a gap was skipped or the fetch stopped early


class CandleSource(Protocol):
    """Anything that can answer 'closed candles of a symbol since a time'."""

    exchange: str

    def fetch_closed(
        self,
        symbol: str,
        timeframe: str,
        step_ms: int,
        since_ms: int,
        until_ms: int | None,
        now_ms: int,
        on_page: Callable[[FetchResult], None] | None = None,
        *,
        since_is_stored: bool = True,
    ) -> FetchResult: ...


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


def empty_between(rows: list[Row], rejected: list[Rejected], newest_seen: int | None,
                  step_ms: int) -> list[int]:
    """Candle times an answer skipped between candles it did return.

    The exchange produced a later candle, so it has moved past these times: they
    had no trades. Times of rejected candles are not empty (the candle exists but
    was bad), and nothing before the first returned candle is assumed.

    >>> empty_between([(0, 1, 1, 1, 1, 0), (180_000, 1, 1, 1, 1, 0)], [], 240_000, 60_000)
    [60000, 120000]
    """
    if not rows:
        return []
    # A rejected candle (even one off the grid) still claims its slot: not a no-trade time.
    present = {r[0] for r in rows} | {r.ts - r.ts % step_ms for r in rejected if r.ts is not None}
    last = max(rows[-1][0], newest_seen or rows[-1][0])
    return [t for t in range(rows[0][0], last, step_ms) if t not in present]


class CcxtSource:
    """Closed candles from a real exchange through ccxt."""

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
    ) -> None:
        if exchange_id not in ccxt.exchanges:
            raise ConfigError(f"exchange.id: {exchange_id!r} is not a ccxt exchange id")
        cls = getattr(ccxt, exchange_id)
        self.exchange = exchange_id
        self.client: ccxt.Exchange = cls({"timeout": timeout_ms, "enableRateLimit": rate_limit})
        if api_url:
            self.client.urls["api"] = rewrite_urls(deepcopy(self.client.urls["api"]), api_url)
        self.max_retries = max_retries
        self.backoff_max_s = backoff_max_s
        self.stop = stop or threading.Event()
        self.rng = rng or random.Random()
        feats = (self.client.features or {}).get("spot", {}).get("fetchOHLCV") or {}
        self.page_limit = int(feats.get("limit") or 500)
        self._markets_loaded = False
        self.requests = 0
        # Longest time one call may spend retrying (None: only max_retries bounds it).
        # The daemon sets it below the tick interval so an outage cannot stall ticks.
        self.call_budget_s: float | None = None
        # After a rate-limit answer nobody asks the exchange anything until this time
        # (monotonic); consecutive limits double the pause up to RATE_LIMIT_MAX_S.
        self._cooldown_until = 0.0
        self._cooldown_s = 0.0

    # -- error translation -------------------------------------------------
    def _cool_down(self, what: str, t0: float) -> None:
        """Wait out a rate-limit pause, or give up the call if it outlasts the budget."""
        remaining = self._cooldown_until - monotonic()
        if remaining <= 0:
            return
        if self.call_budget_s is not None and monotonic() - t0 + remaining > self.call_budget_s:
            raise RetryLater(f"{what}: rate-limited by {self.exchange}; not asking again for "
                             f"{remaining:.0f}s")
        if self.stop.wait(remaining):
            raise Stopping()

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """Run one ccxt call with capped exponential backoff on temporary faults."""
        delay = 0.5
        last: Exception | None = None
        t0 = monotonic()
        for attempt in range(self.max_retries + 1):
            if self.stop.is_set():
                raise Stopping()
            self._cool_down(what, t0)
            try:
                self.requests += 1
                out = fn()
                self._cooldown_s = 0.0
                return out
            except (ccxt.BadSymbol, ccxt.AuthenticationError, ccxt.AccountSuspended,
                    ccxt.NotSupported) as e:
                raise ConfigError(f"exchange {self.exchange}: {what} refused: {e}") from e
            except (ccxt.RateLimitExceeded, ccxt.DDoSProtection) as e:
                # The exchange asked us to slow down: a pause shared by every call (both
                # symbols, the next ticks), doubling while the limits keep coming.
                last = e
                self._cooldown_s = min(RATE_LIMIT_MAX_S, max(RATE_LIMIT_MIN_S,
                                                             2 * self._cooldown_s))
                self._cooldown_until = monotonic() + self._cooldown_s
                log.warning("%s: rate-limited (%s); pausing all requests for %.0fs", what,
                            type(e).__name__, self._cooldown_s)
                continue
            except (ccxt.NetworkError, ccxt.BadResponse) as e:
                last = e
            except ccxt.BadRequest as e:
                raise SkipSymbol(f"{what}: exchange refused the request: {e}") from e
            except ccxt.ExchangeError as e:
                # An error payload from the exchange: often transient ("internal error").
                last = e
            if attempt == self.max_retries:
                break
            wait = min(self.backoff_max_s, delay) * (0.5 + 0.5 * self.rng.random())
            if self.call_budget_s is not None and monotonic() - t0 + wait > self.call_budget_s:
                break
            log.warning("%s failed (%s: %s); retry %d/%d in %.1fs", what, type(last).__name__,
                        _short(last), attempt + 1, self.max_retries, wait)
            if self.stop.wait(wait):
                raise Stopping()
            delay = min(self.backoff_max_s, delay * 2)
        raise RetryLater(f"{what}: giving up after {attempt + 1} tries: "
                         f"{type(last).__name__}: {_short(last)}") from last

    def load_markets(self, symbols: list[str]) -> None:
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

        markets = self._call(f"load {self.exchange} markets", call)
        missing = [s for s in symbols if s not in markets]
        if missing:
            raise ConfigError(
                f"exchange.symbols: {', '.join(missing)} not traded on {self.exchange}"
            )
        self._markets_loaded = True

    # -- fetching ----------------------------------------------------------
    def fetch_page(self, symbol: str, timeframe: str, step_ms: int, since_ms: int,
                   now_ms: int, *, allow_empty: bool) -> Page:
        """One OHLCV request, validated.

        When the request re-asks for a candle known to exist (`allow_empty` False),
        an answer without a single candle is suspect: ccxt turns garbage and 'no
        data' alike into [], so it is retried, never taken as 'nothing new'.
        """
        self.load_markets([symbol])

        def call() -> list[list[Any]]:
            raw = self.client.fetch_ohlcv(symbol, timeframe, since=since_ms, limit=self.page_limit)
            if not isinstance(raw, list):
                raise ccxt.BadResponse(f"OHLCV answer is not a list: {type(raw).__name__}")
            if not raw and not allow_empty:
                raise ccxt.BadResponse("empty OHLCV answer where candles must exist")
            return raw

        raw = self._call(f"fetch {symbol} {timeframe} candles since {iso(since_ms)}", call)
        checked = check_rows(raw, step_ms, now_ms)
        seen = [r[0] for r in raw if isinstance(r, list) and r and isinstance(r[0], int)]
        return Page(checked, max(seen) if seen else None, len(raw))

    def fetch_closed(
        self,
        symbol: str,
        timeframe: str,
        step_ms: int,
        since_ms: int,
        until_ms: int | None,
        now_ms: int,
        on_page: Callable[[FetchResult], None] | None = None,
        *,
        since_is_stored: bool = True,
    ) -> FetchResult:
        """Closed candles with since <= ts < until (until defaults to now), paging forward.

        Callers pass `since` = the newest stored candle (`since_is_stored`): re-asking
        for it makes every healthy answer non-empty. Each following page starts at
        the newest candle of the previous one, for the same reason. `on_page`
        receives each page's part as it arrives, so a long fetch is stored as it goes.
        """
        open_ts = now_ms - now_ms % step_ms
        end = open_ts if until_ms is None else min(until_ms, open_ts)
        last_wanted = end - step_ms  # newest closed candle time we could want
        total = FetchResult()
        cursor = since_ms
        overlap = since_is_stored
        while cursor <= last_wanted:
            page = self.fetch_page(symbol, timeframe, step_ms, cursor, now_ms,
                                   allow_empty=not overlap)
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
                                                      page.newest_seen, step_ms)
                             if cursor <= t < end]
            _merge(total, part)
            if on_page is not None:
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
            cursor, overlap = cursor + self.page_limit * step_ms, False
        return total


def _merge(total: FetchResult, part: FetchResult) -> None:
    total.rows.extend(part.rows)
    total.rejected.extend(part.rejected)
    total.empty_ts.extend(part.empty_ts)
    total.open_dropped += part.open_dropped
    total.duplicates += part.duplicates
    total.pages += part.pages


def _short(e: Exception | None, n: int = 200) -> str:
    s = str(e)
    return s if len(s) <= n else s[:n] + "..."

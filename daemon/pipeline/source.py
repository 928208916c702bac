"""What a candle source is: the protocol the pipeline asks, what it answers, and the three
ways it can fail.

Two sources exist, both in `daemon.sources`: the exchange through ccxt
(`exchange.CcxtSource`: live, backfill) and the historical data of a replay
(`replay.ReplaySource`). This module imports neither
ccxt nor any data, so the pipeline and replay do not pay for an exchange client.

Failures are named by what the caller does next:

* :class:`RetryLater` - network trouble, rate limits, maintenance, suspect answers: the
  source already backed off (capped); the next tick resumes from the store;
* :class:`SkipSymbol` - this symbol cannot be fetched right now, go on with the others;
* :class:`~daemon.core.errors.ConfigError` - bad symbol, credentials, unknown exchange:
  retrying cannot help, stop with exit 78.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from daemon.core.errors import TemporaryFailure
from daemon.core.series import Series
from daemon.core.validate import RejectedRow, Row


class RetryLater(TemporaryFailure):
    """The exchange cannot answer properly now; the next tick resumes from the store.

    `kind` names the fault for metrics (`tickcast_exchange_errors_total{kind}`): one of
    ERROR_KINDS.
    """

    kind = "unavailable"

    def __init__(self, *args: object, kind: str | None = None) -> None:
        super().__init__(*args)
        if kind is not None:
            self.kind = kind


class SkipSymbol(Exception):
    """This symbol cannot be fetched now (the exchange refused the request)."""

    kind = "refused"


# What went wrong with a fetch, as metrics label it: rate limits, timeouts, the exchange
# down (5xx, maintenance), other network faults, answers that make no sense (garbage, an
# empty answer where candles must exist), error payloads, refused requests.
ERROR_KINDS = ("rate_limit", "timeout", "unavailable", "network", "bad_response",
               "exchange_error", "refused")


class Stopping(Exception):
    """Shutdown was requested while waiting to retry."""


@dataclass
class FetchResult:
    """One page's part of a fetch: what the caller stores before the next page is asked."""

    rows: list[Row] = field(default_factory=list)
    rejected: list[RejectedRow] = field(default_factory=list)
    empty_ts: list[int] = field(default_factory=list)  # confirmed no-trade candle times
    open_dropped: int = 0
    duplicates: int = 0
    pages: int = 0


@dataclass
class FetchSummary:
    """A whole fetch in numbers. Its pages went to `on_page` one at a time and are not kept,
    so a backfill of any length holds one page."""

    pages: int = 0
    rows: int = 0
    rejected: int = 0
    empty: int = 0
    open_dropped: int = 0
    duplicates: int = 0
    complete: bool = True  # False when a gap was skipped or the fetch stopped early

    def count(self, part: FetchResult) -> None:
        """Count one page's part (its rows are the caller's, through `on_page`)."""
        self.pages += part.pages
        self.rows += len(part.rows)
        self.rejected += len(part.rejected)
        self.empty += len(part.empty_ts)
        self.open_dropped += part.open_dropped
        self.duplicates += part.duplicates


class CandleSource(Protocol):
    """Anything that can answer 'closed candles of a symbol since a time'."""

    exchange: str

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
        """Closed candles of `symbol` with since <= ts < until (until defaults to now).

        `on_page` receives each page's part as it arrives and stores it; the source keeps
        none of them, so memory stays flat in the number of pages. `since_is_stored`:
        `since_ms` is the newest stored candle, so a healthy answer is never empty.
        """
        ...


def empty_between(rows: list[Row], rejected: list[RejectedRow], newest_seen: int | None,
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

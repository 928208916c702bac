"""One ccxt call at a time, with capped backoff, a shared rate-limit cool-down, and ccxt's
errors translated into what the caller must do (see `daemon.pipeline.source`).

The policy lives here so the exchange source itself only says *what* to ask for.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from typing import TypeVar

import ccxt

from daemon.core.clock import monotonic
from daemon.core.errors import ConfigError
from daemon.pipeline.source import RetryLater, SkipSymbol, Stopping

# The name this code has always logged under: operators' journal filters rely on it.
log = logging.getLogger("tickcast.sources")
T = TypeVar("T")

RATE_LIMIT_MIN_S = 2.0
RATE_LIMIT_MAX_S = 120.0


def cool_down_after(previous_s: float) -> float:
    """The pause after a rate-limit answer, given the pause before it (0 after a success):
    2 s, then doubling, at most 120 s.

    >>> [cool_down_after(x) for x in (0.0, 2.0, 4.0, 100.0)]
    [2.0, 4.0, 8.0, 120.0]
    """
    return min(RATE_LIMIT_MAX_S, max(RATE_LIMIT_MIN_S, 2 * previous_s))


class Caller:
    """Runs ccxt calls for one exchange; its cool-down is shared by every call it makes."""

    def __init__(self, exchange: str, *, max_retries: int = 5, backoff_max_s: float = 30.0,
                 stop: threading.Event | None = None, rng: random.Random | None = None,
                 call_budget_s: float | None = None) -> None:
        self.exchange = exchange
        self.max_retries = max_retries
        self.backoff_max_s = backoff_max_s
        self.stop = stop or threading.Event()
        self.rng = rng or random.Random()
        # Longest time one call may spend retrying (None: only max_retries bounds it).
        # The daemon sets it below the tick interval so an outage cannot stall ticks.
        self.call_budget_s = call_budget_s
        self.requests = 0
        # After a rate-limit answer nobody asks the exchange anything until this time
        # (monotonic); consecutive limits double the pause up to RATE_LIMIT_MAX_S.
        self._cooldown_until = 0.0
        self._cooldown_s = 0.0

    def _cool_down(self, what: str, t0: float) -> None:
        """Wait out a rate-limit pause, or give up the call if it outlasts the budget."""
        remaining = self._cooldown_until - monotonic()
        if remaining <= 0:
            return
        if self.call_budget_s is not None and monotonic() - t0 + remaining > self.call_budget_s:
            raise RetryLater(f"{what}: rate-limited by {self.exchange}; not asking again for "
                             f"{remaining:.0f}s", kind="rate_limit")
        if self.stop.wait(remaining):
            raise Stopping()

    def call(self, what: str, fn: Callable[[], T]) -> T:
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
                self._cooldown_s = cool_down_after(self._cooldown_s)
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
                         f"{type(last).__name__}: {_short(last)}", kind=error_kind(last)) from last


def error_kind(e: Exception | None) -> str:
    """The `source.ERROR_KINDS` name of a ccxt error (most specific class first).

    >>> error_kind(ccxt.RequestTimeout()), error_kind(ccxt.OnMaintenance())
    ('timeout', 'unavailable')
    """
    for cls, kind in ((ccxt.RateLimitExceeded, "rate_limit"), (ccxt.DDoSProtection, "rate_limit"),
                      (ccxt.RequestTimeout, "timeout"), (ccxt.ExchangeNotAvailable, "unavailable"),
                      (ccxt.NetworkError, "network"), (ccxt.BadResponse, "bad_response"),
                      (ccxt.ExchangeError, "exchange_error")):
        if isinstance(e, cls):
            return kind
    return "network"


def _short(e: Exception | None, n: int = 200) -> str:
    s = str(e)
    return s if len(s) <= n else s[:n] + "..."

"""The Series value: which candles a command, a tick or a model set works on."""

from __future__ import annotations

from dataclasses import dataclass, field

from daemon.core.timeframes import to_ms


@dataclass(frozen=True)
class Series:
    """One exchange's candles of some symbols at one timeframe, with the candle length.

    Passed whole instead of loose (exchange, symbols, timeframe, step) arguments, so the
    four can never disagree; `step_ms` is derived from the timeframe.

    >>> s = Series("bitstamp", ("BTC/USD", "BTC/EUR"), "1h")
    >>> s.step_ms, s.open_ts(7_300_000)
    (3600000, 7200000)
    """

    exchange: str
    symbols: tuple[str, ...]
    timeframe: str
    step_ms: int = field(init=False)

    def __post_init__(self) -> None:
        # A list given by a caller must not make the frozen value mutable.
        object.__setattr__(self, "symbols", tuple(self.symbols))
        object.__setattr__(self, "step_ms", to_ms(self.timeframe))

    def open_ts(self, now_ms: int) -> int:
        """Open time of the candle still open at `now_ms` (the newest that is not closed)."""
        return now_ms - now_ms % self.step_ms

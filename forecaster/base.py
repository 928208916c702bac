"""The forecaster protocol: two small methods and a state.

Modelled on river's shape: configuration goes into the constructor, `learn`
takes a block of history, `forecast` maps a window to prices for the
requested horizons. Numbers in, numbers out: nothing here knows about the
store, the exchange or the clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True)
class History:
    """Candles of several symbols on one regular time grid.

    ``ts[i] = ts[0] + i * step_ms``; a candle that is missing is NaN in both
    ``close`` and ``volume`` (never forward-filled here: windows that touch a
    NaN are simply not used).
    """

    ts: np.ndarray  # (n,) int64, epoch ms of candle open
    close: np.ndarray  # (n, S) float64
    volume: np.ndarray  # (n, S) float64
    symbols: tuple[str, ...]
    step_ms: int

    def __post_init__(self) -> None:
        n = len(self.ts)
        if self.close.shape != (n, len(self.symbols)) or self.volume.shape != self.close.shape:
            raise ValueError(
                f"History shapes disagree: ts {self.ts.shape}, close {self.close.shape}, "
                f"volume {self.volume.shape}, symbols {len(self.symbols)}"
            )
        if n > 1 and np.any(np.diff(self.ts) != self.step_ms):
            raise ValueError("History.ts must be a regular grid of step_ms")

    def __len__(self) -> int:
        return len(self.ts)

    def tail(self, n: int) -> History:
        return History(self.ts[-n:], self.close[-n:], self.volume[-n:], self.symbols, self.step_ms)

    def upto(self, ts_incl: int) -> History:
        """The part with ts <= ts_incl (what was known at that candle's close)."""
        k = int(np.searchsorted(self.ts, ts_incl, side="right"))
        return History(self.ts[:k], self.close[:k], self.volume[:k], self.symbols, self.step_ms)


@dataclass(frozen=True)
class Forecast:
    symbol: str
    horizon: int  # candles ahead
    yhat: float  # forecast close of the candle `horizon` steps after the last one seen
    lower: float | None  # 80% interval (10% quantile), None when the model has none
    upper: float | None  # 90% quantile


@dataclass
class LearnResult:
    accepted: bool
    reason: str  # why it was accepted or rejected, for logs and training_runs
    n_windows: int = 0
    train_loss: float | None = None
    val_loss: float | None = None
    prev_val_loss: float | None = None
    steps: int = 0
    device: str = "cpu"
    extra: dict[str, Any] = field(default_factory=dict)


class Forecaster(Protocol):
    name: str

    @property
    def version(self) -> str:
        """Identifies the weights (or code) that produce forecasts; stored on every row."""
        ...

    @property
    def ready(self) -> bool:
        """Whether forecast() can be called (a model without weights is not ready)."""
        ...

    def learn(self, history: History) -> LearnResult: ...

    def forecast(self, window: History, horizons: list[int]) -> list[Forecast]:
        """Forecasts from a window whose last row is the newest closed candle.

        Raises :class:`NotEnoughData` when the window is too short or has holes.
        """
        ...


class CannotForecast(ValueError):
    """No forecast from this window; the caller goes on with the other models."""


class NotEnoughData(CannotForecast):
    """The window is too short or has missing candles where the model needs them."""


class UnusableOutput(CannotForecast):
    """The model produced non-finite or implausible numbers; nothing is stored."""

"""The forecaster protocol: a small `Forecaster` every model is, and a `Trainable` part
only learned models add.

Modelled on river's shape: configuration goes into the constructor, `forecast` maps a
history to prices for the requested horizons, and a learned model's `learn` takes a block
of history. Numbers in, numbers out: nothing here knows about the store, the exchange or
the clock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class History:
    """Candles of several symbols on one regular time grid.

    ``ts[i] = ts[0] + i * step_ms``; a candle that is missing is NaN in every
    column (never forward-filled here: windows that touch a NaN are simply not
    used). ``open``, ``high`` and ``low`` default to ``close`` when not given
    (a series of closes only, as the toy problems are).
    """

    ts: np.ndarray  # (n,) int64, epoch ms of candle open
    close: np.ndarray  # (n, S) float64
    volume: np.ndarray  # (n, S) float64
    symbols: tuple[str, ...]
    step_ms: int
    open: np.ndarray = None  # type: ignore[assignment]  # (n, S), defaults to close
    high: np.ndarray = None  # type: ignore[assignment]
    low: np.ndarray = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        for name in ("open", "high", "low"):
            if getattr(self, name) is None:
                object.__setattr__(self, name, self.close)
        n = len(self.ts)
        shape = (n, len(self.symbols))
        if any(a.shape != shape for a in (self.close, self.volume, self.open, self.high,
                                          self.low)):
            raise ValueError(
                f"History shapes disagree: ts {self.ts.shape}, close {self.close.shape}, "
                f"volume {self.volume.shape}, symbols {len(self.symbols)}"
            )
        if n > 1 and np.any(np.diff(self.ts) != self.step_ms):
            raise ValueError("History.ts must be a regular grid of step_ms")

    def __len__(self) -> int:
        return len(self.ts)

    def rows(self, sl: slice) -> History:
        return History(self.ts[sl], self.close[sl], self.volume[sl], self.symbols, self.step_ms,
                       self.open[sl], self.high[sl], self.low[sl])

    def columns(self, symbols: tuple[str, ...]) -> History:
        """The same rows for some of the symbols (a view, not a copy, for one symbol)."""
        if len(symbols) == 1:
            j = self.symbols.index(symbols[0])
            sl = slice(j, j + 1)
            return History(self.ts, self.close[:, sl], self.volume[:, sl], tuple(symbols),
                           self.step_ms, self.open[:, sl], self.high[:, sl], self.low[:, sl])
        k = [self.symbols.index(s) for s in symbols]
        return History(self.ts, self.close[:, k], self.volume[:, k], tuple(symbols),
                       self.step_ms, self.open[:, k], self.high[:, k], self.low[:, k])

    def tail(self, n: int) -> History:
        return self.rows(slice(max(len(self) - n, 0), None))

    def upto(self, ts_incl: int) -> History:
        """The part with ts <= ts_incl (what was known at that candle's close)."""
        k = int(np.searchsorted(self.ts, ts_incl, side="right"))
        return self.rows(slice(0, k))


@dataclass(frozen=True)
class Forecast:
    symbol: str
    horizon: int  # candles ahead
    yhat: float  # forecast close of the candle `horizon` steps after the last one seen
    lower: float | None  # 80% interval (10% quantile), None when the model has none
    upper: float | None  # 90% quantile


class RejectCode(StrEnum):
    """Why a training run's result was not kept (stored in training_runs.reason)."""

    NOT_ENOUGH_DATA = "not-enough-data"
    NON_FINITE = "non-finite"  # a loss or gradient was NaN or infinite
    WORSE_THAN_CURRENT = "worse-than-current"  # worse than the model in use on validation


@dataclass(frozen=True)
class TrainStats:
    n_windows: int = 0
    steps: int = 0
    train_loss: float | None = None
    val_loss: float | None = None
    prev_val_loss: float | None = None
    device: str = "cpu"
    # What decided how far the median may leave the last close, per symbol and horizon
    # (gain, standard error, n, threshold, moved): stored with the training run.
    evidence: dict[str, Any] | None = None


@dataclass(frozen=True)
class Accepted:
    """A new model that validation preferred; installed only by `adopt`."""

    candidate: Any
    version: str
    reason: str
    stats: TrainStats


@dataclass(frozen=True)
class Rejected:
    """The model in use stays."""

    code: RejectCode
    reason: str
    stats: TrainStats


@dataclass(frozen=True)
class Stopped:
    """Training was asked to stop (shutdown) before it finished; nothing changes."""

    reason: str
    stats: TrainStats


LearnOutcome = Accepted | Rejected | Stopped


@runtime_checkable
class Forecaster(Protocol):
    """What the pipeline needs from every model, the baselines and seq2seq alike.

    `joint` models read every symbol of a history together and forecast from the newest
    time all symbols have reached; the others forecast each symbol from its own column
    as soon as its candle is there. `context` is how many candles of history `forecast`
    wants (it may get fewer on a young store). A model that needs nothing but that
    history (naive, drift) is just this.
    """

    name: str
    joint: bool
    context: int

    @property
    def version(self) -> str:
        """Identifies the weights (or code) that produce forecasts; stored on every row."""
        ...

    def forecast(self, history: History, horizons: list[int]) -> list[Forecast]:
        """Forecasts from a history whose last row is the newest closed candle.

        Raises :class:`CannotForecast` when this history cannot be forecast from (a model
        that has not learned yet raises :class:`NotEnoughData`).
        """
        ...


@runtime_checkable
class Trainable(Protocol):
    """The part only learned models have: fitted on a rolling window, persisted as a
    checkpoint, and installed only once it is recorded."""

    @property
    def ready(self) -> bool:
        """Whether a model has been learned or loaded (forecast() can be called)."""
        ...

    def learn(self, history: History, *,
              should_stop: Callable[[], bool] | None = None) -> LearnOutcome:
        """Fit on `history` (ending at the newest closed candle); installs nothing."""
        ...

    def adopt(self, candidate: Any) -> None:
        """Install the candidate of an `Accepted` outcome."""
        ...

    def dumps(self, candidate: Any | None = None) -> bytes:
        """The model in use (or a candidate) as checkpoint bytes: tensors and JSON only."""
        ...

    def loads(self, data: bytes) -> None:
        """Install a model from checkpoint bytes; CheckpointError leaves the current one."""
        ...


@runtime_checkable
class Learner(Forecaster, Trainable, Protocol):
    """A model that forecasts and learns (seq2seq, linear)."""


def is_ready(model: Forecaster) -> bool:
    """A model that learns is ready once it has; one that does not always is."""
    return not isinstance(model, Trainable) or model.ready


class CannotForecast(ValueError):
    """No forecast from this window; the caller goes on with the other models."""


class NotEnoughData(CannotForecast):
    """The window is too short or has missing candles where the model needs them."""


class UnusableOutput(CannotForecast):
    """The model produced non-finite or implausible numbers; nothing is stored."""

"""One tick per closed candle (ARCHITECTURE.md: One live tick): ingest, retrain when due,
forecast, score, persist.

Live mode and replay share this code; they differ only in the `now` they pass in, the
candle source, and the trainer (synchronous in replay, a background worker live).
Nothing here reads the clock.

Every model of the set goes through the same loop. A model that reads the symbols
jointly (`joint`) forecasts from the newest time all symbols have reached; the others
forecast each symbol from its own newest candle. Each gets the history it asks for
(`context` candles), sliced from one in-memory window of the series.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from daemon.config.settings import Settings
from daemon.core import crashpoints
from daemon.core.clock import iso
from daemon.core.series import Series
from daemon.pipeline.history import CandleWindow
from daemon.pipeline.ingest import IngestStats, poll
from daemon.pipeline.modelset import ModelSet, TrainOutcome
from daemon.pipeline.source import CandleSource, RetryLater, SkipSymbol
from forecaster.base import CannotForecast, Forecast, Forecaster, History, is_ready
from storage import ForecastRow, Store, candles, forecasts, runs

log = logging.getLogger("tickcast.pipeline")

FIRST_RETRY = 5  # candles between attempts while a model still has no first version


@dataclass
class TickReport:
    now_ms: int
    ingested: dict[str, IngestStats] = field(default_factory=dict)
    fetch_errors: dict[str, str] = field(default_factory=dict)
    scored: int = 0
    forecasts: int = 0
    issued: dict[str, int] = field(default_factory=dict)  # model -> issued_ts forecast from
    skipped: dict[str, str] = field(default_factory=dict)  # model -> why no forecast
    training: list[TrainOutcome] | None = None
    training_started: bool = False
    newest_common: int | None = None  # newest candle every symbol had, closed by now_ms
    # For metrics and /healthz: the newest closed candle per symbol after ingesting, what
    # kind of exchange error each failed symbol had (`RetryLater.kind`), and the rows
    # each model stored and had scored.
    newest: dict[str, int | None] = field(default_factory=dict)
    fetch_error_kinds: dict[str, str] = field(default_factory=dict)
    stored_by_model: dict[str, int] = field(default_factory=dict)
    scored_by_model: dict[str, int] = field(default_factory=dict)


# A trainer is told "retrain on this history, started at this time"; replay runs it
# inline, the daemon hands it to a worker thread. It returns whether it took the job.
Trainer = Callable[[History, int], bool]


class Pipeline:
    def __init__(self, cfg: Settings, store: Store, source: CandleSource, models: ModelSet,
                 series: Series, *, history_candles: int | None = None) -> None:
        self.store = store
        self.source = source
        self.models = models
        self.series = series
        self.horizons = sorted(cfg.model.horizons)
        self.lookback = cfg.model.lookback
        self.train_window = cfg.model.train_window
        self.retrain_every = cfg.model.retrain_every
        self.min_first = cfg.model.lookback + max(self.horizons) + 64
        self.history_candles = history_candles if history_candles is not None else self.train_window
        self.window = CandleWindow(store, series, max(self.train_window, models.context),
                                   cfg.model.max_fill)
        self._last_attempt_end: int | None = None
        self._attempt_loaded = False
        self._hole_logged: dict[str, int] = {}
        # (model, symbol or "" for a joint model) -> newest issued_ts already forecast by
        # this process: a tick without a new candle recomputes nothing.
        self._issued: dict[tuple[str, str], int] = {}

    # -- the tick ---------------------------------------------------------------------
    def tick(self, now_ms: int, trainer: Trainer | None = None) -> TickReport:
        rep = TickReport(now_ms)
        self.ingest(now_ms, rep)
        newest = rep.newest = self.newest(now_ms)
        common = rep.newest_common = _common(newest)
        present = [t for t in newest.values() if t is not None]
        if present:
            self.window.refresh(max(present))
        if common is not None and self.retrain_due(common):
            self.retrain(common, now_ms, rep, trainer)
        rows = self.forecast(now_ms, rep, newest)
        # Scoring and the new forecasts commit together: one write transaction a tick.
        with self.store.write("score and store forecasts") as conn:
            rep.scored_by_model = forecasts.score_by_model(
                conn, now_ms, self.series.timeframe, self.series.step_ms,
                exchange=self.series.exchange)
            rep.scored = sum(rep.scored_by_model.values())
            if rows:
                rep.stored_by_model = forecasts.insert_by_model(conn, rows)
                rep.forecasts = sum(rep.stored_by_model.values())
                crashpoints.hit("before-forecasts-commit")
        return rep

    def ingest(self, now_ms: int, rep: TickReport) -> None:
        for sym in self.series.symbols:
            try:
                rep.ingested[sym] = poll(self.store, self.source, self.series, sym, now_ms,
                                         history=self.history_candles)
            except (RetryLater, SkipSymbol) as e:
                # The next tick resumes from the store: an outage leaves no hole.
                rep.fetch_errors[sym] = str(e)
                rep.fetch_error_kinds[sym] = e.kind
                log.warning("%s %s: %s", self.series.exchange, sym, e)

    def newest(self, now_ms: int | None = None) -> dict[str, int | None]:
        """Newest stored candle per symbol; with `now_ms`, only candles closed by then.

        Forecasts are issued only from candles closed at `now`: a store that holds later
        ones (a resumed replay, a clock set back) is never read ahead of time.
        """
        s = self.series
        cap = None if now_ms is None else s.open_ts(now_ms) - s.step_ms
        with self.store.read() as conn:
            return {sym: candles.newest_ts(conn, s.exchange, sym, s.timeframe, cap)
                    for sym in s.symbols}

    def newest_common(self, now_ms: int | None = None) -> int | None:
        """The newest candle time every symbol has reached (joint models issue from it)."""
        return _common(self.newest(now_ms))

    # -- retraining ---------------------------------------------------------------------
    def last_attempt_end(self) -> int | None:
        if not self._attempt_loaded:
            s = self.series
            with self.store.read() as conn:
                self._last_attempt_end = runs.last_attempt_end(conn, s.exchange, s.timeframe)
            self._attempt_loaded = True
        return self._last_attempt_end

    def retrain_due(self, newest: int) -> bool:
        last = self.last_attempt_end()
        step = self.series.step_ms
        if last is not None:
            # A model still without a first version tries again after a few candles.
            every = self.retrain_every if all(is_ready(m) for m in self.models) else \
                min(self.retrain_every, FIRST_RETRY)
            return newest - last >= every * step
        # No attempt yet: train as soon as there is enough history for a first model.
        s = self.series
        with self.store.read() as conn:
            have = min(candles.count(conn, s.exchange, sym, s.timeframe,
                                     newest - self.train_window * step, newest + 1)
                       for sym in s.symbols)
        return have >= self.min_first

    def retrain(self, newest: int, now_ms: int, rep: TickReport,
                trainer: Trainer | None) -> None:
        hist = self.window.history(newest, self.train_window)
        if trainer is None:
            out = self.models.train(self.store, hist, started_at=now_ms, now_fn=lambda: now_ms)
            rep.training = out
            rep.training_started = out is not None
        else:
            rep.training_started = trainer(hist, now_ms)
        if rep.training_started:
            self._last_attempt_end = newest

    # -- forecasting ----------------------------------------------------------------------
    def forecast(self, now_ms: int, rep: TickReport,
                 newest: dict[str, int | None]) -> list[ForecastRow]:
        """Forecast rows of every model whose newest history is usable."""
        rows: list[ForecastRow] = []
        common = _common(newest)
        for m in self.models:
            if not is_ready(m):
                rep.skipped[m.name] = "no trained model yet"
                continue
            if m.joint:
                targets = [("", common)] if common is not None else []
            else:
                targets = [(sym, t) for sym, t in newest.items() if t is not None]
            for key, end in targets:
                if self._issued.get((m.name, key), -1) >= end:
                    continue
                hist = self.window.history(end, m.context)
                if key:
                    hist = hist.columns((key,))
                rows.extend(self._forecast_one(m, key, hist, end, now_ms, rep))
        return rows

    def _forecast_one(self, m: Forecaster, key: str, hist: History, end: int, now_ms: int,
                      rep: TickReport) -> list[ForecastRow]:
        try:
            out = m.forecast(hist, self.horizons)
        except CannotForecast as e:
            rep.skipped[m.name] = str(e)
            if self._hole_logged.get(m.name) is None:
                log.warning("%s: not forecasting from %s: %s (the other models go on)",
                            m.name, iso(end), e)
                self._hole_logged[m.name] = end
            return []
        self._hole_logged.pop(m.name, None)
        rep.issued[m.name] = end
        self._issued[(m.name, key)] = end
        return self._rows(m.name, m.version, end, out, now_ms)

    def _rows(self, model: str, version: str, issued: int, out: list[Forecast],
              now_ms: int) -> list[ForecastRow]:
        s = self.series
        rows = []
        for f in out:
            vals = (f.yhat, f.lower, f.upper)
            if not all(v is None or (np.isfinite(v) and v > 0) for v in vals):
                log.error("%s produced a non-finite forecast for %s h=%d; not stored", model,
                          f.symbol, f.horizon)
                continue
            rows.append(ForecastRow(
                model=model, model_version=version, exchange=s.exchange, symbol=f.symbol,
                timeframe=s.timeframe, issued_ts=issued,
                target_ts=issued + f.horizon * s.step_ms, horizon=f.horizon,
                yhat=float(f.yhat), lower=None if f.lower is None else float(f.lower),
                upper=None if f.upper is None else float(f.upper), created_at=now_ms))
        return rows


def _common(newest: dict[str, int | None]) -> int | None:
    """The newest candle time every symbol has reached; None while one has none."""
    times = list(newest.values())
    return None if any(t is None for t in times) else min(times)  # type: ignore[type-var]

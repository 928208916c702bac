"""One tick per closed candle (SPEC §7): ingest, score, retrain when due, forecast, persist.

Live mode and replay share this code; they differ only in the `now` they pass
in, the candle source, and the trainer (synchronous in replay, a background
worker live). Nothing here reads the clock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from forecaster.base import CannotForecast, Forecast, History
from storage import ForecastRow, Store, candles, forecasts, runs

from . import crashpoints, history
from .clock import iso
from .ingest import IngestStats, poll
from .models import SEQ2SEQ, ModelSet, TrainOutcome
from .series import Series
from .settings import Settings
from .source import CandleSource, RetryLater, SkipSymbol

log = logging.getLogger(__name__)


@dataclass
class TickReport:
    now_ms: int
    ingested: dict[str, IngestStats] = field(default_factory=dict)
    fetch_errors: dict[str, str] = field(default_factory=dict)
    scored: int = 0
    forecasts: int = 0
    issued: dict[str, int] = field(default_factory=dict)  # model -> issued_ts forecast from
    skipped: dict[str, str] = field(default_factory=dict)  # model -> why no forecast
    training: TrainOutcome | None = None
    training_started: bool = False
    newest_common: int | None = None  # newest candle every symbol had, closed by now_ms


# A trainer is told "retrain on this history, started at this time"; replay runs it
# inline, the daemon hands it to a worker thread. It returns whether it took the job.
Trainer = Callable[[History, int], bool]


class Pipeline:
    def __init__(self, cfg: Settings, store: Store, source: CandleSource, models: ModelSet,
                 series: Series, *, history_candles: int | None = None) -> None:
        self.cfg = cfg
        self.store = store
        self.source = source
        self.models = models
        self.series = series
        self.exchange = series.exchange
        self.symbols = list(series.symbols)
        self.timeframe = series.timeframe
        self.step_ms = series.step_ms
        self.horizons = sorted(cfg.model.horizons)
        self.lookback = cfg.model.lookback
        self.train_window = cfg.model.train_window
        self.retrain_every = cfg.model.retrain_every
        self.max_fill = cfg.model.max_fill
        self.history_candles = history_candles if history_candles is not None else self.train_window
        self._last_attempt_end: int | None = None
        self._attempt_loaded = False
        self._hole_logged: int | None = None
        # (model, symbol) -> newest issued_ts already forecast by this process: a tick
        # without a new candle recomputes nothing (the store's unique key would drop it).
        self._issued: dict[tuple[str, str], int] = {}

    # -- the tick ---------------------------------------------------------------------
    def tick(self, now_ms: int, trainer: Trainer | None = None) -> TickReport:
        rep = TickReport(now_ms)
        self.ingest(now_ms, rep)
        with self.store.write("score forecasts") as conn:
            rep.scored = forecasts.score(conn, now_ms, self.timeframe, self.step_ms)
        newest = self.newest(now_ms)
        common = rep.newest_common = _common(newest)
        if common is not None and self.retrain_due(common):
            self.retrain(common, now_ms, rep, trainer)
        rows = self.forecast(now_ms, rep, newest)
        if rows:
            with self.store.write("store forecasts") as conn:
                rep.forecasts = forecasts.insert(conn, rows)
                crashpoints.hit("before-forecasts-commit")
        return rep

    def ingest(self, now_ms: int, rep: TickReport) -> None:
        for sym in self.symbols:
            try:
                rep.ingested[sym] = poll(self.store, self.source, self.series, sym, now_ms,
                                         history=self.history_candles)
            except (RetryLater, SkipSymbol) as e:
                # The next tick resumes from the store: an outage leaves no hole.
                rep.fetch_errors[sym] = str(e)
                log.warning("%s %s: %s", self.exchange, sym, e)

    # -- retraining ---------------------------------------------------------------------
    def newest(self, now_ms: int | None = None) -> dict[str, int | None]:
        """Newest stored candle per symbol; with `now_ms`, only candles closed by then.

        Forecasts are issued only from candles closed at `now`: a store that holds
        later ones (a resumed replay, a clock set back) is never read ahead of time.
        """
        cap = None if now_ms is None else now_ms - now_ms % self.step_ms - self.step_ms
        with self.store.read() as conn:
            return {s: candles.newest_ts(conn, self.exchange, s, self.timeframe, cap)
                    for s in self.symbols}

    def newest_common(self, now_ms: int | None = None) -> int | None:
        """The newest candle time every symbol has reached (seq2seq issues from it)."""
        return _common(self.newest(now_ms))

    def last_attempt_end(self) -> int | None:
        if not self._attempt_loaded:
            with self.store.read() as conn:
                self._last_attempt_end = runs.last_attempt_end(conn, SEQ2SEQ, self.exchange,
                                                               self.timeframe)
            self._attempt_loaded = True
        return self._last_attempt_end

    def retrain_due(self, newest: int) -> bool:
        last = self.last_attempt_end()
        if last is not None:
            return newest - last >= self.retrain_every * self.step_ms
        # No attempt yet: train as soon as there is enough history for a first model.
        need = self.lookback + max(self.horizons) + self.models.seq2seq.config.min_windows
        with self.store.read() as conn:
            have = min(candles.count(conn, self.exchange, s, self.timeframe,
                                     newest - self.train_window * self.step_ms, newest + 1)
                       for s in self.symbols)
        return have >= need

    def retrain(self, newest: int, now_ms: int, rep: TickReport,
                trainer: Trainer | None) -> None:
        hist, _ = history.load(self.store, self.exchange, self.symbols, self.timeframe,
                               self.step_ms, newest, self.train_window, self.max_fill)
        if trainer is None:
            out = self.models.train(self.store, hist, started_at=now_ms, now_fn=lambda: now_ms)
            rep.training = out
            rep.training_started = out is not None
        else:
            rep.training_started = trainer(hist, now_ms)
        if rep.training_started:
            self._last_attempt_end = newest

    # -- forecasting ----------------------------------------------------------------------
    def _window(self, joint: History | None, symbols: list[str], end: int) -> History:
        """The lookback+1 rows ending at `end` for some symbols: sliced from the joint
        window when it covers them, else read from the store."""
        n = self.lookback + 1
        if joint is not None and joint.ts[0] <= end - (n - 1) * self.step_ms:
            w = joint.upto(end).tail(n)
            cols = [self.symbols.index(s) for s in symbols]
            return History(w.ts, w.close[:, cols], w.volume[:, cols], tuple(symbols),
                           self.step_ms)
        return history.load(self.store, self.exchange, symbols, self.timeframe, self.step_ms,
                            end, n, self.max_fill)[0]

    def forecast(self, now_ms: int, rep: TickReport,
                 newest: dict[str, int | None]) -> list[ForecastRow]:
        """Forecast rows for every model whose newest window is usable."""
        rows: list[ForecastRow] = []
        n = self.lookback + 1
        present = [t for t in newest.values() if t is not None]
        joint = None
        if len(present) == len(self.symbols):
            # One read serves every model while the symbols are (nearly) in step.
            lag = (max(present) - min(present)) // self.step_ms
            if lag <= self.lookback:
                joint, _ = history.load(self.store, self.exchange, self.symbols,
                                        self.timeframe, self.step_ms, max(present), n + lag,
                                        self.max_fill)
        for sym in self.symbols:
            end = newest[sym]
            if end is None:
                continue
            todo = [m for m in self.models.baselines if self._issued.get((m.name, sym), -1) < end]
            if not todo:
                continue
            win = self._window(joint, [sym], end)
            for model in todo:
                try:
                    out = model.forecast(win, self.horizons)
                except CannotForecast as e:
                    rep.skipped[model.name] = str(e)
                    continue
                rows.extend(self._rows(model.name, model.version, end, out, now_ms))
                rep.issued[model.name] = end
                self._issued[(model.name, sym)] = end
        s2s = self.models.seq2seq
        common = _common(newest)
        if not s2s.ready:
            rep.skipped[SEQ2SEQ] = "no trained model yet"
        elif common is not None and self._issued.get((SEQ2SEQ, ""), -1) < common:
            win = self._window(joint, self.symbols, common)
            try:
                out = s2s.forecast(win, self.horizons)
                rows.extend(self._rows(SEQ2SEQ, s2s.version, common, out, now_ms))
                rep.issued[SEQ2SEQ] = common
                self._issued[(SEQ2SEQ, "")] = common
                self._hole_logged = None
            except CannotForecast as e:
                rep.skipped[SEQ2SEQ] = str(e)
                if self._hole_logged is None:
                    log.warning("seq2seq: not forecasting from %s: %s (the baselines go on)",
                                iso(common), e)
                    self._hole_logged = common
        return rows

    def _rows(self, model: str, version: str, issued: int, out: list[Forecast],
              now_ms: int) -> list[ForecastRow]:
        rows = []
        for f in out:
            vals = (f.yhat, f.lower, f.upper)
            if not all(v is None or (np.isfinite(v) and v > 0) for v in vals):
                log.error("%s produced a non-finite forecast for %s h=%d; not stored", model,
                          f.symbol, f.horizon)
                continue
            rows.append(ForecastRow(
                model=model, model_version=version, exchange=self.exchange, symbol=f.symbol,
                timeframe=self.timeframe, issued_ts=issued,
                target_ts=issued + f.horizon * self.step_ms, horizon=f.horizon,
                yhat=float(f.yhat), lower=None if f.lower is None else float(f.lower),
                upper=None if f.upper is None else float(f.upper), created_at=now_ms))
        return rows


def _common(newest: dict[str, int | None]) -> int | None:
    """The newest candle time every symbol has reached; None while one has none."""
    times = list(newest.values())
    return None if any(t is None for t in times) else min(times)  # type: ignore[type-var]

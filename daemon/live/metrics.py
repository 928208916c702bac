"""What the live daemon tells Prometheus (the table in README: Operating it), and the verdict
of `/healthz`.

Everything here is fed from outside the tick: `tick_done` takes the report a tick already
returned (a few counter increments, no I/O), `training_done` the outcomes the training
thread already has, and `refresh` the rolling accuracy and store size that the exporter's
own thread reads from the store at most once a minute. A scrape only reads these values
(custom collectors yield snapshots), so it can neither block a tick nor see half an update.

Times people alert on are in the daemon's clock, so an accelerated test clock and the wall
clock read the same: ages are measured on the monotonic clock times the clock's speed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from daemon.core.clock import Clock, iso, monotonic
from daemon.core.series import Series
from daemon.live.ticker import TickLoop
from daemon.pipeline.ingest import IngestStats
from daemon.pipeline.modelset import ModelSet, TrainOutcome
from daemon.pipeline.source import ERROR_KINDS
from daemon.pipeline.tick import TickReport

log = logging.getLogger("tickcast.live")

TICK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
TRAIN_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
TRAIN_STATUSES = ("accepted", "rejected", "failed")


@dataclass(frozen=True)
class StoreSnapshot:
    """What the exporter's thread last read from the store (replaced whole, never edited)."""

    accuracy: tuple[dict[str, Any], ...] = ()
    size_bytes: int | None = None
    window_hours: int = 24
    read_at_ms: int | None = None


@dataclass
class _State:
    """What ticks and trainings report; written by their threads, read by scrapes."""

    newest: dict[str, int | None] = field(default_factory=dict)
    last_tick_mono: float | None = None
    errors: dict[str, str] = field(default_factory=dict)  # symbol -> kind, last tick
    devices: dict[str, str] = field(default_factory=dict)


class DaemonMetrics:
    """The registry of one `tickcast run` and the health verdict behind `/healthz`."""

    def __init__(self, *, series: Series, models: ModelSet, ticker: TickLoop, clock: Clock,
                 speed: float, poll_delay_s: float, window_hours: int,
                 newest: dict[str, int | None], rejected_in_a_row: dict[str, int]) -> None:
        self.series = series
        self.models = models
        self.ticker = ticker
        self.clock = clock
        self.speed = speed
        # Healthy while a tick completed and every symbol's newest candle closed within
        # two candle periods plus the poll delay (daemon seconds).
        self.limit_s = 2 * series.step_ms / 1000 + poll_delay_s
        self.started_mono = monotonic()
        self.state = _State(newest=dict(newest))
        self.snapshot = StoreSnapshot(window_hours=window_hours)
        self.registry = CollectorRegistry(auto_describe=False)
        r, ex = self.registry, series.exchange
        self.tick_seconds = Histogram(
            "tickcast_tick_duration_seconds", "Wall time of each completed tick",
            buckets=TICK_BUCKETS, registry=r)
        self.candles_stored = Counter(
            "tickcast_candles_stored", "Closed candles stored by ticks",
            ["exchange", "symbol"], registry=r)
        self.candles_rejected = Counter(
            "tickcast_candles_rejected", "Candles the exchange sent that failed validation, "
            "by reason (numbers in a reason read N)", ["exchange", "symbol", "reason"], registry=r)
        self.exchange_errors = Counter(
            "tickcast_exchange_errors", "Fetches of a symbol that ended in an exchange error, "
            "by kind", ["exchange", "kind"], registry=r)
        self.forecasts_stored = Counter(
            "tickcast_forecasts_stored", "Forecast rows stored", ["model"], registry=r)
        self.forecasts_scored = Counter(
            "tickcast_forecasts_scored", "Forecast rows completed with their actual",
            ["model"], registry=r)
        self.training_runs = Counter(
            "tickcast_training_runs", "Retrains of a model, by outcome", ["status"], registry=r)
        self.training_seconds = Histogram(
            "tickcast_training_duration_seconds", "Wall time of each retrain of a model",
            buckets=TRAIN_BUCKETS, registry=r)
        self.rejected_in_a_row = Gauge(
            "tickcast_training_rejected_in_a_row", "Retrains since the model's last accepted "
            "one (rejected or failed); 0 right after an accepted one", ["model"], registry=r)
        # Every series a dashboard expects exists from the start, at 0.
        for sym in series.symbols:
            self.candles_stored.labels(ex, sym)
        for kind in ERROR_KINDS:
            self.exchange_errors.labels(ex, kind)
        for m in models:
            self.forecasts_stored.labels(m.name)
            self.forecasts_scored.labels(m.name)
        for status in TRAIN_STATUSES:
            self.training_runs.labels(status)
        for name, n in rejected_in_a_row.items():
            self.rejected_in_a_row.labels(name).set(n)
        r.register(_Live(self))

    # -- fed by the daemon ------------------------------------------------------------------
    def tick_done(self, rep: TickReport, duration_s: float) -> None:
        """A completed tick (on the tick's thread: counters only, no I/O)."""
        ex = self.series.exchange
        self.tick_seconds.observe(duration_s)
        for sym, st in rep.ingested.items():
            self._ingested(ex, sym, st)
        for sym in rep.fetch_errors:
            self.exchange_errors.labels(ex, rep.fetch_error_kinds.get(sym, "unavailable")).inc()
        for model, n in rep.stored_by_model.items():
            self.forecasts_stored.labels(model).inc(n)
        for model, n in rep.scored_by_model.items():
            self.forecasts_scored.labels(model).inc(n)
        if rep.newest:
            self.state.newest = {**self.state.newest, **rep.newest}
        self.state.errors = dict(rep.fetch_error_kinds)
        if rep.training:  # replay-style inline training (the daemon trains on its thread)
            self.training_done(rep.training)
        self.state.last_tick_mono = monotonic()

    def _ingested(self, ex: str, sym: str, st: IngestStats) -> None:
        if st.stored:
            self.candles_stored.labels(ex, sym).inc(st.stored)
        for reason, n in st.rejected_reasons.items():
            self.candles_rejected.labels(ex, sym, reason[:120]).inc(n)

    def training_done(self, outcomes: list[TrainOutcome]) -> None:
        """A retrain's outcomes (on the training thread)."""
        for o in outcomes:
            self.training_runs.labels(o.status).inc()
            self.training_seconds.observe(o.wall_seconds)
            if o.stats.device:
                self.state.devices[o.model] = o.stats.device
            g = self.rejected_in_a_row.labels(o.model)
            if o.status == "accepted":
                g.set(0)
            else:
                g.inc()

    def refresh(self, snapshot: StoreSnapshot) -> None:
        """The exporter's thread read the store (at most once a minute)."""
        self.snapshot = snapshot

    # -- read by scrapes and /healthz ------------------------------------------------------
    def tick_age_s(self) -> float | None:
        """Daemon seconds since the last completed tick; None before the first."""
        t = self.state.last_tick_mono
        return None if t is None else (monotonic() - t) * self.speed

    def lags_s(self, now_ms: int) -> dict[str, float | None]:
        """Per symbol: now minus the close of its newest stored candle (None: no candle)."""
        step = self.series.step_ms
        newest = self.state.newest
        return {sym: None if newest.get(sym) is None
                else max(0, now_ms - (newest[sym] + step)) / 1000  # type: ignore[operator]
                for sym in self.series.symbols}

    def health(self) -> tuple[bool, dict[str, Any]]:
        """(healthy, the JSON body of /healthz)."""
        now = self.clock.now_ms()
        age, lags = self.tick_age_s(), self.lags_s(now)
        problems = []
        if age is None:
            problems.append("no tick has completed yet")
        elif age > self.limit_s:
            problems.append(f"no tick has completed for {age:.0f} s")
        for sym, lag in lags.items():
            if lag is None:
                problems.append(f"{sym}: no candle stored")
            elif lag > self.limit_s:
                problems.append(f"{sym}: newest candle closed {lag:.0f} s ago")
        newest = self.state.newest
        body = {
            "status": "ok" if not problems else "unhealthy",
            "problems": problems,
            "now": iso(now),
            "limit_s": round(self.limit_s, 3),
            "last_tick_age_s": None if age is None else round(age, 3),
            "ticks": self.ticker.ticks,
            "tick_errors": self.ticker.tick_errors,
            "exchange": self.series.exchange,
            "timeframe": self.series.timeframe,
            "symbols": {sym: {"newest": iso(newest.get(sym)), "newest_ts": newest.get(sym),
                              "lag_s": None if lag is None else round(lag, 3),
                              "exchange_error": self.state.errors.get(sym)}
                        for sym, lag in lags.items()},
            "model_version": self.models.headline_version,
            "models": self.models.versions(),
            "training": self.models.training,
        }
        return not problems, body

    def device_of(self, model: Any) -> str:
        known = self.state.devices.get(model.name)
        if known:
            return known
        dev = getattr(model, "device", None)
        if dev is None:
            return "cpu"
        from forecaster.device import describe  # as training runs record it

        self.state.devices[model.name] = name = describe(dev)
        return name


class _Live(Collector):
    """Values read at scrape time: tick counts, ages and lags, model info, and the
    snapshot of the store (accuracy, size)."""

    def __init__(self, m: DaemonMetrics) -> None:
        self.m = m

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        m, ex = self.m, self.m.series.exchange
        yield CounterMetricFamily("tickcast_ticks", "Ticks completed", value=m.ticker.ticks)
        yield CounterMetricFamily("tickcast_tick_errors", "Ticks that failed (store locked "
                                  "or failing, a bug); the next tick resumes",
                                  value=m.ticker.tick_errors)
        age = m.tick_age_s()
        yield GaugeMetricFamily("tickcast_last_tick_age_seconds", "Daemon seconds since the "
                                "last completed tick (since start before the first)",
                                value=age if age is not None
                                else (monotonic() - m.started_mono) * m.speed)
        yield GaugeMetricFamily("tickcast_health_limit_seconds", "Longest tick age and "
                                "symbol lag /healthz accepts: two candle periods plus "
                                "daemon.poll_delay_s", value=m.limit_s)
        healthy, _ = m.health()
        yield GaugeMetricFamily("tickcast_healthy", "1 while /healthz answers 200",
                                value=1 if healthy else 0)
        last = GaugeMetricFamily("tickcast_last_candle_timestamp_seconds", "Open time of "
                                 "the newest stored candle", labels=["exchange", "symbol"])
        lag = GaugeMetricFamily("tickcast_symbol_lag_seconds", "Now minus the close of the "
                                "newest stored candle", labels=["exchange", "symbol"])
        newest = m.state.newest
        for sym, v in m.lags_s(m.clock.now_ms()).items():
            if v is not None:
                last.add_metric([ex, sym], newest[sym] / 1000)  # type: ignore[operator]
                lag.add_metric([ex, sym], v)
        yield last
        yield lag
        yield GaugeMetricFamily("tickcast_training_running", "1 while a retrain runs",
                                value=1 if m.models.training else 0)
        info = GaugeMetricFamily("tickcast_model_info", "The version each model forecasts "
                                 "with, and its device (value 1)",
                                 labels=["model", "version", "device"])
        for model in m.models:
            info.add_metric([model.name, model.version, m.device_of(model)], 1)
        yield info
        yield from _accuracy(m.snapshot)
        if m.snapshot.size_bytes is not None:
            yield GaugeMetricFamily("tickcast_store_size_bytes", "Bytes the store takes "
                                    "(SQLite file and WAL; PostgreSQL database)",
                                    value=m.snapshot.size_bytes)


def _accuracy(snap: StoreSnapshot) -> Iterator[Metric]:
    labels = ["model", "symbol", "horizon"]
    w = f"over forecasts issued in the last {snap.window_hours} h"
    fams = {
        "n": GaugeMetricFamily("tickcast_forecast_scored_in_window",
                               f"Scored forecasts {w}", labels=labels),
        "mae": GaugeMetricFamily("tickcast_forecast_mae", f"Mean absolute error {w}",
                                 labels=labels),
        "mase": GaugeMetricFamily("tickcast_forecast_mase", f"MAE / MAE of naive on the same "
                                  f"issue times {w} (below 1 beats the last close)",
                                  labels=labels),
        "interval_skill": GaugeMetricFamily(
            "tickcast_forecast_interval_skill", f"80% interval score / naive's on the same "
            f"issue times {w} (below 1 is a better band)", labels=labels),
        "coverage": GaugeMetricFamily("tickcast_forecast_interval_coverage",
                                      f"Share of actuals inside the 80% interval {w}",
                                      labels=labels),
    }
    for row in snap.accuracy:
        key = [str(row["model"]), str(row["symbol"]), str(row["horizon"])]
        for col, fam in fams.items():
            v = row.get(col)
            if v is not None:
                fam.add_metric(key, float(v))
    yield from fams.values()

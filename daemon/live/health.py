"""What the live daemon tells systemd and the journal about its health: the watchdog ping,
the hourly heartbeat line, and the one-line status after each tick."""

from __future__ import annotations

import logging

from daemon.core.series import Series
from daemon.live.notify import Notifier
from daemon.live.ticker import TickLoop
from daemon.pipeline.modelset import ModelSet
from daemon.pipeline.tick import TickReport
from storage import Store, forecasts

log = logging.getLogger("tickcast.live")


class Health:
    def __init__(self, ticker: TickLoop, notifier: Notifier, store: Store, models: ModelSet,
                 series: Series, *, hang_limit_s: float) -> None:
        self.ticker = ticker
        self.notifier = notifier
        self.store = store
        self.models = models
        self.series = series
        # No completed tick for this long means the working loop is stuck.
        self.hang_limit_s = hang_limit_s

    def watchdog(self) -> None:
        """Ping only while the working loop makes progress: a hung tick goes silent, and
        systemd restarts the daemon."""
        quiet = self.ticker.seconds_since_progress()
        if quiet < self.hang_limit_s:
            self.notifier.watchdog()
        else:
            log.error("no tick has completed for %.0fs: not pinging the watchdog", quiet)

    def heartbeat(self) -> None:
        rep = self.ticker.last_report
        with self.store.read() as conn:
            pending = forecasts.pending_count(conn)
        log.info("heartbeat: %d ticks (%d failed), model %s%s, %d forecasts waiting; %s",
                 self.ticker.ticks, self.ticker.tick_errors, self.models.headline_version,
                 " (training)" if self.models.training else "", pending,
                 self.status_line(rep) if rep else "no tick yet")

    def tick_done(self, rep: TickReport) -> None:
        self.notifier.status(self.status_line(rep))

    def status_line(self, rep: TickReport | None) -> str:
        if rep is None:
            return "starting"
        parts = []
        for sym in self.series.symbols:
            st = rep.ingested.get(sym)
            if sym in rep.fetch_errors:
                parts.append(f"{sym} exchange error")
            elif st is not None and st.stored > 50:
                parts.append(f"{sym} caught up {st.stored} candles")
        newest, step = rep.newest_common, self.series.step_ms
        lag = None if newest is None else max(0, rep.now_ms - (newest + step)) // 1000
        train = "; training" if self.models.training else ""
        lag_text = "" if lag is None else f"lag {lag}s; "
        return (f"{lag_text}{'; '.join(parts) + '; ' if parts else ''}"
                f"model {self.models.headline_version}{train}; {rep.forecasts} forecasts, "
                f"{rep.scored} scored")

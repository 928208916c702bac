"""Progress for long work: a bar on a terminal, plain log lines otherwise."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

from daemon.core.clock import monotonic

log = logging.getLogger("tickcast.core")


class Progress:
    """Call `update(done)`; `close()` at the end. Throttled so it never slows the work."""

    def __init__(self, label: str, total: int, *, stream: TextIO | None = None,
                 unit: str = "", log_every_s: float = 10.0) -> None:
        self.label = label
        self.total = max(int(total), 0)
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.log_every_s = log_every_s
        self.done = 0
        self._t0 = monotonic()
        self._last = -1e9
        self.extra = ""
        self._emitted = -1

    def update(self, done: int, extra: str = "") -> None:
        # Totals are often estimates (overlap candles, holes): never show over 100 %.
        self.done = min(done, self.total) if self.total else done
        self.extra = extra
        now = monotonic()
        if now - self._last < (0.2 if self.tty else self.log_every_s):
            return
        self._last = now
        self._emit(final=False)
        self._emitted = done

    def _emit(self, final: bool) -> None:
        pct = 100.0 * self.done / self.total if self.total else 100.0
        elapsed = monotonic() - self._t0
        rate = self.done / elapsed if elapsed > 0 else 0.0
        extra = f" {self.extra}" if self.extra else ""
        if self.tty:
            width = 30
            filled = int(width * min(pct, 100.0) / 100)
            bar = "#" * filled + "-" * (width - filled)
            end = "\n" if final else ""
            self.stream.write(f"\r{self.label} [{bar}] {pct:5.1f}% {self.done}/{self.total}"
                              f"{self.unit} {rate:,.0f}/s{extra}\x1b[K{end}")
            self.stream.flush()
        else:
            log.info("%s: %d/%d%s (%.1f%%, %.0f/s)%s", self.label, self.done, self.total,
                     self.unit, pct, rate, extra)

    def close(self) -> None:
        if self.tty or self._emitted != self.done:
            self._emit(final=True)

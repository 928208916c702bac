"""Logging: one line per record with its level, journald-friendly.

Secrets never reach the log: ccxt credentials are not configured by tickcast,
and anything that looks like an API key or secret in a message is masked.
"""

from __future__ import annotations

import logging
import re
import sys
import time

_SECRET = re.compile(r"(?i)(api[_-]?key|secret|password|passphrase|token)(['\"]?\s*[:=]\s*['\"]?)"
                     r"([^\s'\",}]+)")


class _Formatter(logging.Formatter):
    converter = time.gmtime

    def format(self, record: logging.LogRecord) -> str:
        msg = super().format(record)
        msg = _SECRET.sub(lambda m: f"{m.group(1)}{m.group(2)}***", msg)
        # journald treats each line as a record: keep tracebacks on one line.
        return msg.replace("\n", " | ")


def setup(level: str = "info", verbose: int = 0) -> None:
    lvl = logging.DEBUG if verbose else getattr(logging, level.upper(), logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter("%(asctime)sZ %(levelname)s %(name)s: %(message)s",
                                    "%Y-%m-%dT%H:%M:%S"))
    root = logging.getLogger()
    # Replace only our own handler: others (pytest's capture, an embedding app) stay.
    for h in list(root.handlers):
        if getattr(h, "_tickcast", False):
            root.removeHandler(h)
    handler._tickcast = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(lvl)
    # Third-party chatter only when asked twice.
    for noisy in ("ccxt", "urllib3", "apscheduler", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose > 1 else logging.WARNING)

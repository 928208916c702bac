"""Named crash points for the reliability tests ("failpoints").

`TICKCAST_CRASH_AT=name` (or `name:N` for the N-th time the point is passed)
makes the process die on the spot with `os._exit`, as abruptly as kill -9: no
cleanup, no rollback by Python, open transactions left to SQLite's recovery.
Unset, every point is a no-op. The points sit where a crash is most
interesting: between two commits, inside a transaction, between a checkpoint's
write and its rename, inside a migration.

Both sides are checked against `POINTS`: code naming a point that is not listed fails at
once, and so does a TICKCAST_CRASH_AT naming none (a typo there would otherwise never
crash, and the test using it would prove nothing).
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Callable

ENV = "TICKCAST_CRASH_AT"
EXIT_CODE = 137  # what a shell reports for kill -9
EXIT_BAD_SPEC = 2
POINTS = ("after-candles-commit", "before-forecasts-commit", "before-training-commit",
          "mid-migration", "after-training-record", "after-copy-batch")

_passed: Counter[str] = Counter()


def _die(message: str, code: int) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()
    os._exit(code)


def hit(name: str) -> None:
    if name not in POINTS:
        raise ValueError(f"{name!r} is not a crash point; add it to crashpoints.POINTS")
    spec = os.environ.get(ENV)
    if not spec:
        return
    target, _, nth = spec.partition(":")
    if target not in POINTS or not (nth == "" or nth.isdigit()):
        _die(f"{ENV}={spec!r} names no crash point (known: {', '.join(POINTS)}; "
             "optionally :N)", EXIT_BAD_SPEC)
    if target != name:
        return
    _passed[name] += 1
    if _passed[name] >= (int(nth) if nth else 1):
        _die(f"crash point {name} reached: exiting abruptly", EXIT_CODE)


def hook(name: str) -> Callable[..., None]:
    """A callback for code outside `daemon` (storage, forecaster) to call at the point."""
    if name not in POINTS:
        raise ValueError(f"{name!r} is not a crash point; add it to crashpoints.POINTS")
    return lambda *_: hit(name)

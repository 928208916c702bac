"""ccxt timeframe strings ('1m', '1h', '1d') to milliseconds and back."""

from __future__ import annotations

import re

import numpy as np

_UNIT_MS = {"m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_RE = re.compile(r"^([1-9][0-9]*)([mhdw])$")


def to_ms(timeframe: str) -> int:
    """Milliseconds of a ccxt timeframe.

    >>> to_ms('1m'), to_ms('4h')
    (60000, 14400000)
    """
    m = _RE.match(timeframe) if isinstance(timeframe, str) else None
    if not m:
        raise ValueError(f"not a timeframe like '1m' or '1h': {timeframe!r}")
    return int(m.group(1)) * _UNIT_MS[m.group(2)]


def from_ms(ms: int) -> str:
    """The ccxt timeframe of a candle length.

    >>> from_ms(3_600_000), from_ms(300_000)
    ('1h', '5m')
    """
    for unit in ("w", "d", "h", "m"):
        size = _UNIT_MS[unit]
        if ms % size == 0:
            return f"{ms // size}{unit}"
    raise ValueError(f"no timeframe is {ms} ms long (must be whole minutes)")


def infer(ts_ms: np.ndarray) -> str | None:
    """The timeframe of a series from the most common spacing of its timestamps.

    >>> infer(np.array([0, 60_000, 120_000, 300_000]))
    '1m'
    """
    if len(ts_ms) < 2:
        return None
    d = np.diff(np.sort(np.asarray(ts_ms, dtype=np.int64)))
    d = d[d > 0]
    if len(d) == 0:
        return None
    values, counts = np.unique(d, return_counts=True)
    try:
        return from_ms(int(values[np.argmax(counts)]))
    except ValueError:
        return None

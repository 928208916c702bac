"""ccxt timeframe strings ('1m', '1h', '1d') and candle lengths in milliseconds.

Why not `ccxt.Exchange.parse_timeframe`: it is the same four-entry table, but importing ccxt
costs about a second, and the CLI and the settings (which validate `exchange.timeframe`)
must start fast without it; ccxt also accepts '0m' or '-1m', which are not timeframes. A test
checks that `to_ms` agrees with ccxt on every timeframe accepted here. What ccxt does not
give at all is the way back (`from_ms`). Reading a timeframe off a file's timestamps lives
with the file reader (`datafiles`).
"""

from __future__ import annotations

import re

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

"""Candle loading helpers for emulator-backed tests."""
from __future__ import annotations

import csv
import gzip
from pathlib import Path

from .server import Candle

_HEADER = ["ts_ms", "open", "high", "low", "close", "volume"]


def load_csv(path: str | Path) -> list[Candle]:
    """Read a (gzipped) CSV with header ts_ms,open,high,low,close,volume into sorted candles."""
    p = Path(path)
    opener = gzip.open if p.suffix == ".gz" else open
    with opener(p, "rt", newline="") as stream:
        reader = csv.reader(stream)
        header = next(reader)
        if header != _HEADER:
            raise ValueError(f"{p}: unexpected header {header}")
        rows: list[Candle] = [(int(r[0]), float(r[1]), float(r[2]), float(r[3]), float(r[4]), float(r[5]))
                              for r in reader if r]
    rows.sort(key=lambda c: c[0])
    return rows


def hourly_onto_minutes(candles: list[Candle], start_ms: int, step_ms: int = 60_000) -> list[Candle]:
    """Re-time real candles onto a gap-free grid starting at start_ms; prices and volumes are untouched.

    Hourly bars have realistic minute-to-minute ranges only loosely, but the sequence is real market
    data, which is what forecasting and validation tests need more than exact minute statistics.
    """
    if start_ms % step_ms:
        raise ValueError("start_ms must lie on the grid")
    return [(start_ms + i * step_ms, *c[1:]) for i, c in enumerate(candles)]  # type: ignore[misc]

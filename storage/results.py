"""Small result types shared by the candle module and the dialect's bulk paths."""

from __future__ import annotations

from dataclasses import dataclass, field

# A candle row: (ts, open, high, low, close, volume).
Row = tuple[int, float, float, float, float, float]


@dataclass
class InsertResult:
    inserted: int = 0
    unchanged: int = 0
    # (stored, incoming) for rows that arrived again with different values: the
    # stored one is kept (README: Commands), the caller logs the conflict.
    conflicts: list[tuple[Row, Row]] = field(default_factory=list)


def as_row(r: tuple[object, ...] | list[object]) -> Row:
    return (int(r[0]), float(r[1]), float(r[2]), float(r[3]), float(r[4]),  # type: ignore[arg-type]
            float(r[5]))  # type: ignore[arg-type]

"""One candle data file into the store, for `tickcast import` (`commands/import_files.py`)
and, its first two steps, for the files a replay reads (`replay_data.py`).

Three steps, so that a command can refuse its arguments before it creates a store:
`check_file` (the file exists, and its exchange, symbol and timeframe are known and valid),
`read_file` (parse and validate every line; a file refused as a whole raises DataError), and
`store_file` (insert in chunks).
"""

from __future__ import annotations

import io
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from daemon.config.values import SYMBOL_RE
from daemon.core import timeframes
from daemon.core.errors import DataError, UsageError
from daemon.core.progress import Progress
from daemon.files import datafiles
from storage import Store, candles

log = logging.getLogger("tickcast.files")

CHUNK = 100_000  # rows per write transaction: keeps a running daemon's waits short
MAX_REPORTED = 1000  # bad lines reported one by one per file; the rest are counted


@dataclass(frozen=True)
class DataFile:
    """A data file whose identity is known: what its rows will be stored as."""

    path: Path
    exchange: str
    symbol: str
    timeframe: str | None  # None: read off the spacing of its timestamps


@dataclass
class FileResult:
    path: Path
    exchange: str = ""
    symbol: str = ""
    timeframe: str = ""
    lines: int = 0
    stored: int = 0
    unchanged: int = 0
    conflicts: int = 0
    rejected: int = 0
    error: str | None = None  # set when the file as a whole was refused (exit 65)
    reasons: dict[str, int] = field(default_factory=dict)


def resolve_identity(path: Path, symbol: str | None, exchange: str | None,
                     timeframe: str | None, default_exchange: str) -> tuple[str, str, str | None]:
    """Exchange, symbol and timeframe of a file: flags override what the name says."""
    info = datafiles.parse_name(path)
    sym = symbol or info.symbol
    if sym is None:
        raise UsageError(f"{path}: the file name does not say the symbol; give --symbol "
                         "(or name it like bitstamp_BTC-USD_1m_2021.csv.gz)")
    if not SYMBOL_RE.fullmatch(sym):
        raise UsageError(f"--symbol: {sym!r} is not a unified symbol like BTC/USD")
    tf = timeframe or info.timeframe
    if tf is not None:
        try:
            timeframes.to_ms(tf)
        except ValueError as e:
            raise UsageError(f"--timeframe: {e}") from None
    return exchange or info.exchange or default_exchange, sym, tf


def check_file(path: Path, *, symbol: str | None, exchange: str | None,
               timeframe: str | None, default_exchange: str) -> DataFile:
    """A file argument, checked without reading its rows: DataError when it does not
    exist (said first: it is the real problem), UsageError when its identity is unknown."""
    if not path.is_file():
        raise DataError(f"{path}: no such file" if not path.exists()
                        else f"{path}: not a file")
    ex, sym, tf = resolve_identity(path, symbol, exchange, timeframe, default_exchange)
    return DataFile(path, ex, sym, tf)


def read_file(f: DataFile, *, fallback_timeframe: str | None = None,
              stream: io.BufferedReader | None = None, show_progress: bool = False,
              ) -> tuple[datafiles.ParsedFile, str]:
    """Parse and validate every line; returns the rows with the timeframe used.
    `stream`: the file opened ahead (`readahead.open_ahead`); `show_progress`: a bar (or
    log lines) while parsing, in bytes of the file."""
    bar = Progress(f"read {f.path.name}", f.path.stat().st_size, unit=" bytes") \
        if show_progress else None
    try:
        out = datafiles.read(
            f.path, timeframes.to_ms(f.timeframe) if f.timeframe else None,
            fallback_timeframe=fallback_timeframe, stream=stream,
            progress=None if bar is None else lambda nbytes, _lines: bar.update(nbytes))
        if bar is not None:
            bar.update(bar.total)
        return out
    finally:
        if bar is not None:
            bar.close()


def store_file(store: Store, f: DataFile, parsed: datafiles.ParsedFile,
               timeframe: str) -> FileResult:
    """Store a read file's valid rows in chunks, reporting its bad lines."""
    path = f.path
    res = FileResult(path, f.exchange, f.symbol, timeframe, parsed.lines,
                     rejected=len(parsed.bad))
    for i, b in enumerate(parsed.bad):
        key = re.sub(r"\d+", "N", b.reason)
        res.reasons[key] = res.reasons.get(key, 0) + 1
        if i < MAX_REPORTED:
            log.warning("%s: line %d: %s", path, b.line, b.reason)
    if len(parsed.bad) > MAX_REPORTED:
        log.warning("%s: %d more bad lines not listed", path, len(parsed.bad) - MAX_REPORTED)
    ts, ohlcv = parsed.checked.ts, parsed.checked.ohlcv
    bar = Progress(f"import {path.name}", len(ts), unit=" candles")
    for k in range(0, len(ts), CHUNK):
        cols = [ts[k:k + CHUNK]] + [ohlcv[k:k + CHUNK, j] for j in range(5)]
        with store.write(f"import {path.name}") as conn:
            r = candles.insert_columns(conn, f.exchange, f.symbol, timeframe, cols)
        res.stored += r.inserted
        res.unchanged += r.unchanged
        res.conflicts += len(r.conflicts)
        for stored, _incoming in r.conflicts[:20]:
            log.warning("%s: candle at ts_ms %d is already stored with different values; "
                        "keeping the stored one", path, stored[0])
        bar.update(k + len(cols[0]))
    bar.close()
    return res


def import_file(store: Store, path: Path, *, symbol: str | None, exchange: str | None,
                timeframe: str | None, default_exchange: str,
                default_timeframe: str = "1m") -> FileResult:
    """Import one file. A refused file stores nothing and comes back with `error` set."""
    try:
        f = check_file(path, symbol=symbol, exchange=exchange, timeframe=timeframe,
                       default_exchange=default_exchange)
        parsed, tf_used = read_file(f, fallback_timeframe=default_timeframe)
    except DataError as e:
        return FileResult(path, error=str(e))
    return store_file(store, f, parsed, tf_used)

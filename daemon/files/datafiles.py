"""Candle CSV files: the naming convention and a fast, precise reader.

Files are CSV or CSV.gz with the header ``ts_ms,open,high,low,close,volume``.
A name like ``bitstamp_BTC-USD_1h_2017-11_2020-12.csv.gz`` says exchange,
symbol and timeframe. Reading is vectorised (pandas' C parser, the file inflated ahead
on a thread) for the common clean file; any structural oddity falls back to a
line-by-line reader so every bad line can still be named.
"""

from __future__ import annotations

import csv
import gzip
import io
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from daemon.core import timeframes
from daemon.core.errors import DataError
from daemon.core.validate import SECONDS_THRESHOLD, Checked, check
from daemon.files.readahead import open_ahead

HEADER = ["ts_ms", "open", "high", "low", "close", "volume"]
PARSE_CHUNK = 250_000  # lines parsed between two progress reports
_NAME = re.compile(
    r"^(?P<exchange>[a-z0-9]+)_(?P<base>[A-Z0-9]{2,12})-(?P<quote>[A-Z0-9]{2,12})"
    r"_(?P<tf>[1-9][0-9]*[mhdw])(?:_[^/]*)?\.csv(?:\.gz)?$"
)


@dataclass(frozen=True)
class NameInfo:
    exchange: str | None
    symbol: str | None
    timeframe: str | None


def parse_name(path: str | Path) -> NameInfo:
    """What a data file's name says about its contents.

    >>> parse_name('data/bitstamp_BTC-USD_1h_2017-11_2020-12.csv.gz')
    NameInfo(exchange='bitstamp', symbol='BTC/USD', timeframe='1h')
    >>> parse_name('prices.csv')
    NameInfo(exchange=None, symbol=None, timeframe=None)
    """
    m = _NAME.match(Path(path).name)
    if not m:
        return NameInfo(None, None, None)
    return NameInfo(m["exchange"], f"{m['base']}/{m['quote']}", m["tf"])


@dataclass
class BadLine:
    line: int
    reason: str


@dataclass
class ParsedFile:
    path: Path
    lines: int  # data lines read (header excluded)
    checked: Checked
    bad: list[BadLine] = field(default_factory=list)  # every rejected line, in file order


def _open_text(path: Path) -> io.TextIOBase:
    raw = gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")  # noqa: SIM115
    return io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")


def _read_header(path: Path) -> None:
    try:
        with _open_text(path) as f:
            first = f.readline()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(f"{path}: cannot read: {e}") from e
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text: {e}") from e
    _check_header(path, first)


def _check_header(path: Path, first: str) -> None:
    got = [c.strip().lower() for c in first.strip().split(",")]
    if got != HEADER:
        shown = first.strip()[:80] or "(empty file)"
        raise DataError(
            f"{path}: line 1: header is {shown!r}, expected {','.join(HEADER)!r}; nothing stored"
        )


def _fast_frame(path: Path) -> pd.DataFrame | None:
    """pandas' C parser; None when the file has lines it cannot split cleanly."""
    try:
        return pd.read_csv(
            path, skiprows=1, header=None, names=HEADER, skip_blank_lines=False,
            encoding="utf-8-sig", compression="gzip" if path.name.endswith(".gz") else None,
            on_bad_lines="error", low_memory=False,
        )
    except pd.errors.ParserError:
        return None
    except pd.errors.EmptyDataError:
        return pd.DataFrame({c: [] for c in HEADER})


def _streamed(path: Path, bad: dict[int, str], stream: io.BufferedReader | None,
              progress: Callable[[int, int], None] | None) -> np.ndarray | None:
    """The common case, fast: the file read ahead on a thread (gzip inflated on another core)
    and parsed by pandas' C parser in chunks, reporting progress as it goes.

    Returns the six columns as floats, or None when the file needs the line-by-line
    reader (a line pandas cannot split, a lone carriage return in the header line).
    Raises DataError for a wrong header.
    """
    f = stream or open_ahead(path)
    try:
        line = f.readline()
        if b"\r" in line.rstrip(b"\r\n"):
            return None  # old Mac line ends: the classic reader knows them
        _check_header(path, line.decode("utf-8-sig"))
        parts: list[np.ndarray] = []
        done = 0
        try:
            for df in pd.read_csv(f, header=None, names=HEADER, skip_blank_lines=False,
                                  encoding="utf-8", on_bad_lines="error",
                                  chunksize=PARSE_CHUNK):
                parts.append(_numeric(df, bad, done))
                done += len(df)
                if progress is not None:
                    progress(f.raw.consumed, done)  # type: ignore[attr-defined]
        except pd.errors.ParserError:
            bad.clear()
            return None
        except pd.errors.EmptyDataError:
            pass
        return np.concatenate(parts) if parts else np.empty((0, len(HEADER)))
    finally:
        f.close()


def _slow_frame(path: Path, bad: dict[int, str]) -> pd.DataFrame:
    """Line-by-line reading that can name each malformed line."""
    rows: list[list[str]] = []
    with _open_text(path) as f:
        reader = csv.reader(f)
        next(reader, None)
        for i, fields in enumerate(reader):
            if len(fields) != len(HEADER) and fields:
                bad[i] = f"expected {len(HEADER)} fields, found {len(fields)}"
                fields = [""] * len(HEADER)
            rows.append(fields or [""] * len(HEADER))
    return pd.DataFrame(rows, columns=HEADER)


def _numeric(df: pd.DataFrame, bad: dict[int, str], offset: int = 0) -> np.ndarray:
    """All six columns as float64; text that is not a number is named per line (`offset`:
    the line index of the frame's first row)."""
    out = np.empty((len(df), len(HEADER)), dtype=np.float64)
    for j, col in enumerate(HEADER):
        s = df[col]
        if s.dtype.kind in "if":
            out[:, j] = s.to_numpy(dtype=np.float64, na_value=np.nan)
            continue
        num = pd.to_numeric(s, errors="coerce")
        out[:, j] = num.to_numpy(dtype=np.float64, na_value=np.nan)
        text = s.astype("string").str.strip()
        wrong = num.isna() & text.notna() & (text != "")
        for i in np.flatnonzero(wrong.to_numpy()):
            bad.setdefault(int(i) + offset, f"{col} is not a number: {str(s.iloc[i])[:40]!r}")
    return out


def infer_timeframe(ts_ms: np.ndarray) -> str | None:
    """The timeframe of a series from the most common spacing of its timestamps.

    >>> infer_timeframe(np.array([0, 60_000, 120_000, 300_000]))
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
        return timeframes.from_ms(int(values[np.argmax(counts)]))
    except ValueError:
        return None


def read(path: str | Path, step_ms: int | None, fallback_timeframe: str | None = None, *,
         stream: io.BufferedReader | None = None,
         progress: Callable[[int, int], None] | None = None) -> tuple[ParsedFile, str]:
    """Read and validate a candle file; returns it with the timeframe used.

    `step_ms` None means: infer the timeframe from the spacing of the timestamps
    (a single-row file takes `fallback_timeframe`). `stream`: the file already opened
    with `readahead.open_ahead` (the CLI starts it early); `progress(bytes, lines)` is
    called as parsing goes (bytes of the file on disk, lines parsed).
    Raises DataError (exit 65) when the header is wrong, when the timestamps are
    evidently seconds, or when no row is valid.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such file")
    bad: dict[int, str] = {}
    try:
        arr = _streamed(p, bad, stream, progress)
    except (OSError, EOFError) as e:
        raise DataError(f"{p}: cannot read: {e}") from e
    except UnicodeDecodeError as e:
        raise DataError(f"{p}: not UTF-8 text: {e}") from e
    if arr is None:
        _read_header(p)
        try:
            df = _fast_frame(p)
            if df is None:
                df = _slow_frame(p, bad)
        except (OSError, EOFError, gzip.BadGzipFile, UnicodeDecodeError) as e:
            raise DataError(f"{p}: cannot read: {e}") from e
        arr = _numeric(df, bad)
    blank = np.all(np.isnan(arr), axis=1)
    for i in np.flatnonzero(blank):
        bad.setdefault(int(i), "empty line")
    ts = arr[:, 0]
    finite_ts = ts[np.isfinite(ts)]
    if len(finite_ts) and np.median(finite_ts) < SECONDS_THRESHOLD:
        example = int(finite_ts[0])
        raise DataError(
            f"{p}: timestamps look like seconds since the epoch, not milliseconds "
            f"(e.g. {example}); multiply by 1000 and import again; nothing stored"
        )
    tf: str | None = timeframes.from_ms(step_ms) if step_ms else infer_timeframe(finite_ts)
    tf = tf or fallback_timeframe
    if tf is None:
        raise DataError(f"{p}: cannot tell the timeframe from fewer than two timestamps; "
                        "give --timeframe")
    step = timeframes.to_ms(tf)
    # Lines already known to be malformed are kept out of validation.
    if bad:
        arr[list(bad), :] = np.nan
    checked = check(arr[:, 0], arr[:, 1:], step)
    rejected_lines = [BadLine(r.index + 2, bad.get(r.index, r.reason)) for r in checked.rejected]
    parsed = ParsedFile(p, len(arr), checked, rejected_lines)
    if len(checked.ts) == 0:
        first = "; ".join(f"line {b.line}: {b.reason}" for b in rejected_lines[:3])
        raise DataError(f"{p}: no valid row ({len(arr)} lines; {first or 'file is empty'}); "
                        "nothing stored")
    return parsed, tf

"""What a replay reads: candles from data files, the bundled sample or a store, checked
before anything is created. The source that reveals them only once they have closed is
`daemon.sources.replay.ReplaySource`."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from daemon.config.settings import Settings
from daemon.core import timeframes
from daemon.core.errors import DataError, UsageError
from daemon.core.series import Series
from daemon.files import datafiles
from daemon.files.importer import DataFile, check_file, read_file
from storage import Store, candles, dialect

log = logging.getLogger("tickcast.files")

SAMPLE_START = "2020-11-01"  # default first forecast of the bundled sample: two months of 2020

Arrays = tuple[np.ndarray, np.ndarray]  # ts int64 (n,), ohlcv float64 (n, 5)


@dataclass
class ReplayInput:
    series: Series
    data: dict[str, Arrays]  # symbol -> candles, in `series.symbols` order
    origin: str
    sample: bool = False

    def first_ts(self) -> int:
        return min(int(ts[0]) for ts, _ in self.data.values())

    def last_ts(self) -> int:
        return max(int(ts[-1]) for ts, _ in self.data.values())

    def fingerprint(self) -> str:
        h = hashlib.sha256(f"{self.series.exchange}|{self.series.timeframe}".encode())
        for sym, (ts, ohlcv) in self.data.items():
            h.update(sym.encode())
            h.update(np.ascontiguousarray(ts, dtype=np.int64).tobytes())
            h.update(np.ascontiguousarray(ohlcv, dtype=np.float64).tobytes())
        return h.hexdigest()


def replay_input(exchange: str, timeframe: str, data: dict[str, Arrays], origin: str,
                 sample: bool = False) -> ReplayInput:
    return ReplayInput(Series(exchange, tuple(data), timeframe), data, origin, sample)


def bundled_files() -> list[Path]:
    base = resources.files("daemon") / "sample"
    return sorted(Path(str(p)) for p in base.iterdir() if p.name.endswith(".csv.gz"))


def check_files(paths: list[Path], *, symbol: str | None, exchange: str | None,
                default_exchange: str) -> list[DataFile]:
    """--data arguments, checked before anything is read or created."""
    out = []
    for p in paths:
        if symbol and len(paths) > 1 and datafiles.parse_name(p).symbol is None:
            raise UsageError(f"{p}: --symbol applies to one file only; name the files like "
                             "bitstamp_BTC-USD_1h_x.csv.gz")
        f = check_file(p, symbol=symbol, exchange=exchange, timeframe=None,
                       default_exchange=default_exchange)
        if any(o.symbol == f.symbol for o in out):
            raise UsageError(f"{p}: a second file for {f.symbol}; give one file per symbol")
        out.append(f)
    if len({f.exchange for f in out}) > 1 or len({f.timeframe for f in out} - {None}) > 1:
        raise UsageError(f"--data files mix exchanges {sorted({f.exchange for f in out})} or "
                         f"timeframes {sorted({f.timeframe or '?' for f in out})}; replay one "
                         "exchange and timeframe at a time")
    return out


def load_files(files: list[DataFile], *, sample: bool = False) -> ReplayInput:
    data: dict[str, Arrays] = {}
    tfs = set()
    for f in files:
        parsed, tf_used = read_file(f)
        for b in parsed.bad[:20]:
            log.warning("%s: line %d: %s (skipped)", f.path, b.line, b.reason)
        data[f.symbol] = (parsed.checked.ts, parsed.checked.ohlcv)
        tfs.add(tf_used)
    if len(tfs) > 1:
        raise UsageError(f"--data files mix exchanges {sorted({f.exchange for f in files})} or "
                         f"timeframes {sorted(tfs)}; replay one exchange and timeframe at a time")
    origin = ", ".join(f.path.name for f in files)
    return replay_input(files[0].exchange, tfs.pop(), data, origin, sample)


def load_db(store: Store, cfg: Settings, end: int | None) -> ReplayInput:
    """Candles already in a store: the configured exchange and symbols, one timeframe."""
    with store.read() as conn:
        found = candles.series(conn)
    ex, symbols = cfg.exchange.id, cfg.exchange.symbols
    tfs = {tf for e, s, tf in found if e == ex and s in symbols}
    usable = [tf for tf in tfs if all((ex, s, tf) in found for s in symbols)]
    if not usable:
        raise DataError(f"the store holds no {ex} candles for all of {', '.join(symbols)}")
    tf = (cfg.exchange.timeframe if cfg.exchange.timeframe in usable
          else sorted(usable, key=timeframes.to_ms)[0])
    data = {}
    with store.read() as conn:
        for s in symbols:
            rows = candles.range_rows(conn, ex, s, tf, 0, end if end is not None else 2**62)
            arr = np.asarray(rows, dtype=np.float64).reshape(-1, 6)
            data[s] = (arr[:, 0].astype(np.int64), arr[:, 1:].copy())
    return replay_input(ex, tf, data, f"store {store.url}")


def default_out(inp: ReplayInput, data_paths: list[Path] | None, db_url: str | None) -> str:
    if inp.sample or not (data_paths or db_url):
        return str(Path.cwd() / "tickcast-replay.db")
    if data_paths:
        first = data_paths[0]
        name = first.name.removesuffix(".gz").removesuffix(".csv")
        return str(first.with_name(f"{name}.replay.db"))
    path = dialect.sqlite_path(db_url or "")
    return str(path.with_name(path.name.removesuffix(".db") + ".replay.db")) if path else \
        str(Path.cwd() / "tickcast-replay.db")

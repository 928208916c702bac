"""`tickcast replay`: the live pipeline driven by a simulated clock over historical candles.

The source reveals only candles that have closed by the simulated now, so a
forecast issued at T can only have seen data up to T (the prefix property).
Every step of a tick is idempotent and training is deterministic, so a replay
into an `--out` store that already holds a replay of the same inputs simply
resumes at the last tick it finished, and ends with the same rows as an
uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from storage import Store, candles, dialect, forecasts, runs

from . import datafiles, timeframes
from .clock import iso, monotonic
from .commands import open_store
from .errors import DataError, UsageError
from .importer import resolve_identity
from .models import ModelSet
from .pipeline import Pipeline, TickReport
from .progress import Progress
from .settings import Settings
from .source import FetchResult, empty_between

log = logging.getLogger(__name__)

SAMPLE_START = "2020-11-01"  # default first forecast of the bundled sample: two months of 2020


@dataclass
class ReplayInput:
    exchange: str
    timeframe: str
    step_ms: int
    series: dict[str, tuple[np.ndarray, np.ndarray]]  # symbol -> (ts int64, ohlcv (n, 5))
    origin: str
    sample: bool = False

    @property
    def symbols(self) -> list[str]:
        return list(self.series)

    def first_ts(self) -> int:
        return min(int(ts[0]) for ts, _ in self.series.values())

    def last_ts(self) -> int:
        return max(int(ts[-1]) for ts, _ in self.series.values())

    def fingerprint(self) -> str:
        h = hashlib.sha256(f"{self.exchange}|{self.timeframe}".encode())
        for sym, (ts, ohlcv) in self.series.items():
            h.update(sym.encode())
            h.update(np.ascontiguousarray(ts, dtype=np.int64).tobytes())
            h.update(np.ascontiguousarray(ohlcv, dtype=np.float64).tobytes())
        return h.hexdigest()


class ReplaySource:
    """A candle source over in-memory data that never reveals a candle before it closes."""

    def __init__(self, inp: ReplayInput) -> None:
        self.exchange = inp.exchange
        self.inp = inp

    def fetch_closed(self, symbol: str, timeframe: str, step_ms: int, since_ms: int,
                     until_ms: int | None, now_ms: int,
                     on_page: Callable[[FetchResult], None] | None = None, *,
                     since_is_stored: bool = True) -> FetchResult:
        ts, ohlcv = self.inp.series[symbol]
        open_ts = now_ms - now_ms % step_ms
        end = open_ts if until_ms is None else min(until_ms, open_ts)
        lo = int(np.searchsorted(ts, since_ms, side="left"))
        hi = int(np.searchsorted(ts, end, side="left"))
        rows = [(t, *x) for t, x in zip(ts[lo:hi].tolist(), ohlcv[lo:hi].tolist(), strict=True)]
        part = FetchResult(rows=rows, pages=1)  # type: ignore[arg-type]
        # Minutes missing between revealed candles are no-trade minutes of this "exchange".
        part.empty_ts = empty_between(part.rows, [], None, step_ms)
        if on_page is not None:
            on_page(part)
        return part


def bundled_files() -> list[Path]:
    base = resources.files("daemon") / "sample"
    return sorted(Path(str(p)) for p in base.iterdir() if p.name.endswith(".csv.gz"))


def load_files(paths: list[Path], *, symbol: str | None, exchange: str | None,
               default_exchange: str, sample: bool = False) -> ReplayInput:
    series: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    exchanges, tfs = set(), set()
    for p in paths:
        if symbol and len(paths) > 1 and datafiles.parse_name(p).symbol is None:
            raise UsageError(f"{p}: --symbol applies to one file only; name the files like "
                             "bitstamp_BTC-USD_1h_x.csv.gz")
        ex, sym, tf = resolve_identity(p, symbol, exchange, None, default_exchange)
        parsed, tf_used = datafiles.read(p, timeframes.to_ms(tf) if tf else None)
        for b in parsed.bad[:20]:
            log.warning("%s: line %d: %s (skipped)", p, b.line, b.reason)
        if sym in series:
            raise UsageError(f"{p}: a second file for {sym}; give one file per symbol")
        series[sym] = (parsed.checked.ts, parsed.checked.ohlcv)
        exchanges.add(ex)
        tfs.add(tf_used)
    if len(exchanges) > 1 or len(tfs) > 1:
        raise UsageError(f"--data files mix exchanges {sorted(exchanges)} or timeframes "
                         f"{sorted(tfs)}; replay one exchange and timeframe at a time")
    tf = tfs.pop()
    origin = ", ".join(p.name for p in paths)
    return ReplayInput(exchanges.pop(), tf, timeframes.to_ms(tf), series, origin, sample)


def load_db(store: Store, cfg: Settings, start: int | None, end: int | None) -> ReplayInput:
    """Candles already in a store: the configured exchange and symbols, one timeframe."""
    with store.read() as conn:
        found = candles.series(conn)
    ex = cfg.exchange
    tfs = {tf for e, s, tf in found if e == ex and s in cfg.symbols}
    usable = [tf for tf in tfs
              if all((ex, s, tf) in found for s in cfg.symbols)]
    if not usable:
        raise DataError(f"the store holds no {ex} candles for all of {', '.join(cfg.symbols)}")
    tf = cfg.timeframe if cfg.timeframe in usable else sorted(usable, key=timeframes.to_ms)[0]
    series = {}
    with store.read() as conn:
        for s in cfg.symbols:
            rows = candles.range_rows(conn, ex, s, tf, 0, end if end is not None else 2**62)
            arr = np.asarray(rows, dtype=np.float64).reshape(-1, 6)
            series[s] = (arr[:, 0].astype(np.int64), arr[:, 1:].copy())
    return ReplayInput(ex, tf, timeframes.to_ms(tf), series, f"store {store.url}")


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


@dataclass
class ReplayResult:
    out: str
    ticks: int = 0
    resumed_from: int | None = None
    retrains: int = 0
    accepted: int = 0
    forecasts: int = 0
    wall_s: float = 0.0
    sim_ms: int = 0
    reports: list[TickReport] = field(default_factory=list)


def run(cfg: Settings, inp: ReplayInput, *, start: int | None, end: int | None, out: str,
        live_url: str | None = None, show_progress: bool = True,
        stop: threading.Event | None = None,
        on_tick: Callable[[TickReport], None] | None = None,
        ckpt_dir: Path | None = None) -> ReplayResult:
    step = inp.step_ms
    first_possible = inp.first_ts()
    start = first_possible if start is None else start
    start = start + (-start) % step  # first issue time on the grid
    stop_at = inp.last_ts() + step if end is None else end
    if stop_at <= start:
        raise UsageError(f"nothing to replay: --start {iso(start)} is not before the end "
                         f"{iso(stop_at)} of the data")
    out_path = dialect.sqlite_path(dialect.normalise_url(out))
    if live_url is not None and out_path is not None and out_path == dialect.sqlite_path(live_url):
        raise UsageError("--out is the live store; replay writes to its own store")
    store = open_store(out, start, durable=False, cfg=cfg)
    # --end is not part of the key: by the prefix property, a longer replay of the same
    # inputs only adds ticks, so extending one is a resume too.
    key = json.dumps({"inputs": inp.fingerprint(), "start": start,
                      "model": {k: v for k, v in cfg.values.items() if k.startswith("model.")
                                and k not in ("model.device", "model.threads",
                                              "model.checkpoint_dir")}},
                     sort_keys=True)
    key_hash = hashlib.sha256(key.encode()).hexdigest()
    with store.write("replay metadata") as conn:
        found = runs.get_meta(conn, "replay_key")
        if found is None:
            runs.set_meta(conn, "replay_key", key_hash)
            runs.set_meta(conn, "replay_inputs", key)
        elif found != key_hash:
            raise UsageError(f"--out {out} holds a replay of other inputs or settings; "
                             "choose another --out or remove it")
    with store.read() as conn:
        done = forecasts.max_issued(conn)
    resume = max(start, done) if done is not None else start
    res = ReplayResult(out=out, resumed_from=done)
    if done is not None:
        log.info("resuming the replay in %s at %s", out, iso(resume))
    # Never the live model's folder: a backtest must not touch the daemon's checkpoints.
    ckpt = ckpt_dir or (out_path.with_name(out_path.name + ".checkpoints") if out_path
                        else Path(out + ".checkpoints"))
    models = ModelSet(cfg, exchange=inp.exchange, symbols=inp.symbols, timeframe=inp.timeframe,
                      step_ms=step, ckpt_dir=ckpt)
    models.load_current(store)
    pipe = Pipeline(cfg, store, ReplaySource(inp), models, timeframe=inp.timeframe, step_ms=step)
    total = (stop_at - resume) // step
    bar = Progress("replay", total, unit=" ticks") if show_progress else None
    t0 = monotonic()
    for k, t in enumerate(range(resume, stop_at, step)):
        if stop is not None and stop.is_set():
            break
        rep = pipe.tick(t + step)
        res.ticks += 1
        res.forecasts += rep.forecasts
        if rep.training is not None:
            res.retrains += 1
            res.accepted += rep.training.status == "accepted"
        if on_tick is not None:
            on_tick(rep)
        if bar is not None:
            bar.update(k + 1, f"{iso(t)} model {models.seq2seq.version}")
    if bar is not None:
        bar.close()
    res.wall_s = monotonic() - t0
    res.sim_ms = res.ticks * step
    store.close()
    return res

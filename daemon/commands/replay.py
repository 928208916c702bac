"""`tickcast replay`: the live pipeline driven by a simulated clock over historical candles.

The source reveals only candles that have closed by the simulated now, so a
forecast issued at T can only have seen data up to T (the prefix property).
Every step of a tick is idempotent and training is deterministic, so a replay
into an `--out` store that already holds a replay of the same inputs simply
resumes at the last tick it finished, and ends with the same rows as an
uninterrupted run.

`replay_command` checks the arguments and reads the inputs (`files.replay_data`: data files,
the bundled sample, or `--from-db`) before `run` opens the `--out` store; the table at the
end is `report.accuracy` of that store.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from daemon import wiring
from daemon.commands.report import accuracy, describe_range, table
from daemon.config.settings import Settings
from daemon.core import errors
from daemon.core.clock import from_spec, iso, monotonic, parse_time
from daemon.core.errors import UsageError
from daemon.core.progress import Progress
from daemon.files import replay_data
from daemon.files.replay_data import ReplayInput
from daemon.pipeline.tick import Pipeline, TickReport
from daemon.sources.replay import ReplaySource
from storage import Store, dialect, forecasts, runs

log = logging.getLogger("tickcast.commands")

# Keys that do not change a replay's results, so a resume may differ in them.
_NOT_IN_KEY = ("model.device", "model.threads", "model.checkpoint_dir")


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


@dataclass(frozen=True)
class Plan:
    """The ticks of a replay: issue times start, start + step, ... before stop_at."""

    start: int
    stop_at: int


def plan(inp: ReplayInput, start: int | None, end: int | None) -> Plan:
    """The first issue time on the grid and the end; UsageError when nothing is left."""
    step = inp.series.step_ms
    start = inp.first_ts() if start is None else start
    start = start + (-start) % step
    stop_at = inp.last_ts() + step if end is None else end
    if stop_at <= start:
        raise UsageError(f"nothing to replay: --start {iso(start)} is not before the end "
                         f"{iso(stop_at)} of the data")
    return Plan(start, stop_at)


def check_out(out: str, live_url: str | None) -> Path | None:
    """The --out store's file; UsageError when it is the live store."""
    out_path = dialect.sqlite_path(dialect.normalise_url(out))
    live_path = dialect.sqlite_path(live_url) if live_url is not None else None
    # Resolved: the default storage.url is relative to the working directory.
    same_file = out_path is not None and live_path is not None and \
        out_path.resolve() == live_path.resolve()
    # A server store is the same store when its normalised URL is the same.
    same_server = out_path is None and live_url is not None and \
        dialect.normalise_url(out) == dialect.normalise_url(live_url)
    if same_file or same_server:
        raise UsageError("--out is the live store; replay writes to its own store")
    return out_path


def _claim(store: Store, out: str, cfg: Settings, inp: ReplayInput, start: int) -> None:
    """Mark the store as this replay's, or refuse one that holds a replay of other inputs.

    --end is not part of the key: by the prefix property, a longer replay of the same inputs
    only adds ticks, so extending one is a resume too.
    """
    model = {k: v for k, v in cfg.dotted("model").items() if k not in _NOT_IN_KEY}
    key = json.dumps({"inputs": inp.fingerprint(), "start": start, "model": model},
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


def run(cfg: Settings, inp: ReplayInput, *, start: int | None, end: int | None, out: str,
        live_url: str | None = None, show_progress: bool = True,
        stop: threading.Event | None = None,
        on_tick: Callable[[TickReport], None] | None = None) -> ReplayResult:
    series = inp.series
    step = series.step_ms
    p = plan(inp, start, end)
    check_out(out, live_url)
    # Built before the store so that a device that is not there refuses the replay first.
    # Checkpoints live in the --out store: a backtest never touches the daemon's models.
    models = wiring.make_models(cfg, series)
    store = wiring.open_store(out, p.start, durable=False,
                              busy_timeout_ms=cfg.storage.busy_timeout_ms)
    _claim(store, out, cfg, inp, p.start)
    with store.read() as conn:
        done = forecasts.max_issued(conn)
    resume = max(p.start, done) if done is not None else p.start
    res = ReplayResult(out=out, resumed_from=done)
    if done is not None:
        log.info("resuming the replay in %s at %s", out, iso(resume))
    models.load_current(store)
    pipe = Pipeline(cfg, store, ReplaySource(series.exchange, inp.data), models, series)
    total = (p.stop_at - resume) // step
    bar = Progress("replay", total, unit=" ticks") if show_progress else None
    t0 = monotonic()
    for k, t in enumerate(range(resume, p.stop_at, step)):
        if stop is not None and stop.is_set():
            break
        rep = pipe.tick(t + step)
        res.ticks += 1
        res.forecasts += rep.forecasts
        if rep.training:
            res.retrains += 1
            res.accepted += any(o.status == "accepted" for o in rep.training)
        if on_tick is not None:
            on_tick(rep)
        if bar is not None:
            bar.update(k + 1, f"{iso(t)} model {models.headline_version}")
    if bar is not None:
        bar.close()
    res.wall_s = monotonic() - t0
    res.sim_ms = res.ticks * step
    store.close()
    return res


def replay_command(cfg: Settings, args: argparse.Namespace) -> int:
    data = [Path(p) for p in (args.data or [])]
    if data and args.from_db:
        raise errors.UsageError("give --data or --from-db, not both")
    if args.start is not None and args.end is not None and args.end <= args.start:
        raise errors.UsageError("--end must be after --start")
    start = args.start
    db_url = None
    if args.from_db:
        db_url = cfg.storage.url
        live = wiring.open_configured_store(cfg, from_spec(cfg.daemon.clock).now_ms(),
                                            read_only=True)
        try:
            inp = replay_data.load_db(live, cfg, args.end)
        finally:
            live.close()
    else:
        # The bundled sample's names say everything: --symbol and --exchange are for --data.
        files = replay_data.check_files(
            data or replay_data.bundled_files(), symbol=args.symbol if data else None,
            exchange=args.exchange if data else None, default_exchange=cfg.exchange.id)
        inp = replay_data.load_files(files, sample=not data)
        if not data and start is None:
            start = parse_time(replay_data.SAMPLE_START)
        if not data:
            print(f"replaying the bundled real sample ({inp.origin}) from {iso(start)}; "
                  "earlier candles are history", file=sys.stderr)
    out = args.out or replay_data.default_out(inp, data or None, db_url)
    res = run(cfg, inp, start=start, end=args.end, out=out, live_url=cfg.storage.url)
    store = wiring.open_store(out, 0, busy_timeout_ms=cfg.storage.busy_timeout_ms)
    try:
        rows = accuracy(store, start)
    finally:
        store.close()
    print(table(rows))
    print(f"\nreplay: {res.ticks} ticks of {inp.series.timeframe} ({inp.series.exchange} "
          f"{', '.join(inp.series.symbols)}) in {res.wall_s:.1f}s, {res.retrains} retrains "
          f"({res.accepted} accepted), {describe_range(rows)}; store {out}")
    return errors.EXIT_OK

"""Command bodies behind the CLI: wiring settings, store, source and output."""

from __future__ import annotations

import json
import logging
import sys
import threading
from pathlib import Path
from typing import Any

from storage import StorageError, Store, candles, dialect

from . import crashpoints, errors
from .clock import WallClock, from_spec, iso
from .settings import Settings
from .source import CcxtSource, RetryLater

log = logging.getLogger("tickcast")


def open_store(url: str, now_ms: int, *, must_exist: bool = False, durable: bool = True,
               cfg: Settings | None = None) -> Store:
    """Open (check, migrate) a store with the configured busy timeout."""
    path = dialect.sqlite_path(url)
    if must_exist and path is not None and not path.exists():
        raise StorageError(f"store {path} does not exist (give --db or set storage.url)")
    busy = int(cfg["storage.busy_timeout_ms"]) if cfg is not None else None
    store = Store(url, durable=durable, busy_timeout_ms=busy)
    store.open(now_ms, on_migration_step=crashpoints.hook("mid-migration"))
    return store


def make_source(cfg: Settings, stop: threading.Event | None = None) -> CcxtSource:
    return CcxtSource(
        cfg.exchange,
        api_url=cfg["exchange.api_url"],
        timeout_ms=cfg["exchange.timeout_ms"],
        rate_limit=cfg["exchange.rate_limit"],
        max_retries=cfg["exchange.max_retries"],
        backoff_max_s=cfg["exchange.backoff_max_s"],
        stop=stop,
    )


def history_candles(cfg: Settings) -> int:
    """How far back a first fetch reaches: enough to train on."""
    return int(cfg["model.train_window"])


def backfill_command(cfg: Settings, since: int | None, until: int | None) -> int:
    from .backfill import backfill

    clock = from_spec(cfg["daemon.clock"])
    now = clock.now_ms()
    if since is not None and until is not None and until <= since:
        raise errors.UsageError("--until must be after --since")
    store = open_store(cfg.storage_url, now, cfg=cfg)
    source = make_source(cfg)
    try:
        source.load_markets(cfg.symbols)
        summaries = backfill(store, source, cfg.symbols, cfg.timeframe, cfg.timeframe_ms, since,
                             until, now, history_candles(cfg))
    except RetryLater as e:
        log.error("backfill stopped: %s (what was fetched is stored; run again to resume)", e)
        return errors.EXIT_TEMPFAIL
    stored = sum(s.stats.stored for s in summaries)
    rejected = sum(s.stats.rejected for s in summaries)
    conflicts = sum(s.stats.conflicts for s in summaries)
    gaps_left = sum(s.gaps_left for s in summaries)
    missing = sum(s.missing_left for s in summaries)
    for s in summaries:
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(s.stats.rejected_reasons.items()))
        log.info("%s: stored %d, already stored %d, rejected %d%s, conflicts %d, no-trade "
                 "candles confirmed %d, holes found %d, holes left %d", s.symbol, s.stats.stored,
                 s.stats.unchanged, s.stats.rejected, f" ({reasons})" if reasons else "",
                 s.stats.conflicts, s.stats.empty_marked, s.gaps_found, s.gaps_left)
    print(f"backfill: {stored} candles stored, {rejected} rejected, {conflicts} conflicts, "
          f"{gaps_left} gaps left ({missing} candles)")
    return errors.EXIT_OK


def import_command(cfg: Settings, files: list[str], symbol: str | None, exchange: str | None,
                   timeframe: str | None) -> int:
    from .importer import import_file

    now = WallClock().now_ms()
    store = open_store(cfg.storage_url, now, cfg=cfg)
    code = errors.EXIT_OK
    for f in files:
        res = import_file(store, Path(f), symbol=symbol, exchange=exchange, timeframe=timeframe,
                          default_exchange=cfg.exchange, default_timeframe=cfg.timeframe)
        if res.error:
            code = errors.EXIT_DATAERR
            log.error("refused: %s", res.error)
            continue
        print(f"{f}: {res.exchange} {res.symbol} {res.timeframe}: {res.lines} lines, "
              f"{res.stored} stored, {res.unchanged} already stored, {res.conflicts} conflicts, "
              f"{res.rejected} rejected")
    return code


def status_data(cfg: Settings, now: int) -> dict[str, Any]:
    from storage import forecasts, runs

    store = open_store(cfg.storage_url, now, must_exist=True, cfg=cfg)
    out: dict[str, Any] = {"store": cfg.storage_url, "now": iso(now), "series": [],
                           "daemon_running": dialect.lock_is_held(cfg.storage_url)}
    with store.read() as conn:
        for ex, sym, tf in candles.series(conn):
            from .timeframes import to_ms

            newest = candles.newest_ts(conn, ex, sym, tf)
            step = to_ms(tf)
            lag = None if newest is None else max(0, now - (newest + step))
            out["series"].append({
                "exchange": ex, "symbol": sym, "timeframe": tf,
                "candles": candles.count(conn, ex, sym, tf),
                "newest_ts": newest, "newest": iso(newest),
                "lag_s": None if lag is None else lag // 1000,
            })
        out["pending_forecasts"] = forecasts.pending_count(conn)
        acc = runs.latest(conn, "seq2seq", status="accepted")
        last = runs.latest(conn, "seq2seq")
        out["model"] = None if acc is None else {
            "version": acc["model_version"], "trained_at": iso(acc["finished_at"]),
            "data_end": iso(acc["data_end_ts"]), "device": acc["device"],
            "val_loss": acc["val_loss"],
        }
        out["last_training"] = None if last is None else {
            "status": last["status"], "reason": last["reason"],
            "finished_at": iso(last["finished_at"]),
            "model_version": last["model_version"], "train_loss": last["train_loss"],
            "val_loss": last["val_loss"],
        }
        out["mae_24h"] = forecasts.recent_mae(conn, now - 86_400_000)
    store.close()
    return out


def status_command(cfg: Settings, as_json: bool) -> int:
    now = from_spec(cfg["daemon.clock"]).now_ms()
    data = status_data(cfg, now)
    if as_json:
        print(json.dumps(data, indent=2))
        return errors.EXIT_OK
    running = "running" if data["daemon_running"] else "not running"
    print(f"store {data['store']}  (daemon {running})")
    if not data["series"]:
        print("no candles stored yet")
    for s in data["series"]:
        lag = "-" if s["lag_s"] is None else f"{s['lag_s']}s"
        print(f"  {s['exchange']:<10} {s['symbol']:<9} {s['timeframe']:<4} {s['candles']:>9} "
              f"candles, newest {s['newest']}, lag {lag}")
    m = data["model"]
    print(f"model: {'none yet (baselines only)' if m is None else m['version']}"
          + ("" if m is None else f", trained {m['trained_at']} on data to {m['data_end']} "
                                  f"({m['device']})"))
    t = data["last_training"]
    if t is not None:
        print(f"last training: {t['status']} at {t['finished_at']}"
              + (f" ({t['reason']})" if t["reason"] else ""))
    print(f"forecasts waiting for their actual: {data['pending_forecasts']}")
    if data["mae_24h"]:
        print("MAE over the last 24 h (model, symbol, horizon, n, MAE):")
        for r in data["mae_24h"]:
            print(f"  {r['model']:<8} {r['symbol']:<9} h={r['horizon']:<4} n={r['n']:<6} "
                  f"{r['mae']:.4f}")
    return errors.EXIT_OK


def replay_command(cfg: Settings, args: Any) -> int:
    from . import replay
    from .report import accuracy, describe_range, table

    data = [Path(p) for p in (args.data or [])]
    if data and args.from_db:
        raise errors.UsageError("give --data or --from-db, not both")
    if args.start is not None and args.end is not None and args.end <= args.start:
        raise errors.UsageError("--end must be after --start")
    start = args.start
    db_url = None
    if args.from_db:
        db_url = cfg.storage_url
        live = open_store(db_url, from_spec(cfg["daemon.clock"]).now_ms(), must_exist=True,
                          cfg=cfg)
        inp = replay.load_db(live, cfg, args.start, args.end)
        live.close()
    elif data:
        inp = replay.load_files(data, symbol=args.symbol, exchange=args.exchange,
                                default_exchange=cfg.exchange)
    else:
        inp = replay.load_files(replay.bundled_files(), symbol=None, exchange=None,
                                default_exchange=cfg.exchange, sample=True)
        if start is None:
            from .clock import parse_time

            start = parse_time(replay.SAMPLE_START)
        print(f"replaying the bundled real sample ({inp.origin}) from {iso(start)}; "
              "earlier candles are history", file=sys.stderr)
    out = args.out or replay.default_out(inp, data or None, db_url)
    res = replay.run(cfg, inp, start=start, end=args.end, out=out, live_url=cfg.storage_url)
    store = open_store(out, 0, cfg=cfg)
    rows = accuracy(store, start)
    print(table(rows))
    print(f"\nreplay: {res.ticks} ticks of {inp.timeframe} ({inp.exchange} "
          f"{', '.join(inp.symbols)}) in {res.wall_s:.1f}s, {res.retrains} retrains "
          f"({res.accepted} accepted), {describe_range(rows)}; store {out}")
    return errors.EXIT_OK


def report_command(cfg: Settings, since: int | None, plot: str | None, as_json: bool) -> int:
    from .report import accuracy, describe_range, table
    from .report import plot as draw

    store = open_store(cfg.storage_url, 0, must_exist=True, cfg=cfg)
    rows = accuracy(store, since)
    if plot:
        try:
            draw(store, Path(plot), since, rows)
        except RuntimeError as e:
            raise errors.UsageError(str(e)) from e
    if as_json:
        print(json.dumps({"since": iso(since) if since is not None else None, "rows": rows},
                         indent=2))
    else:
        print(table(rows))
        if rows:
            print(describe_range(rows))
        if plot:
            print(f"plot written to {plot}")
    return errors.EXIT_OK

"""Command bodies behind the CLI: backfill, import, replay, report (`status` and `run` have
their own modules).

Each one checks its arguments and inputs first, and only then opens (creates, migrates)
a store: a command refused for a bad argument leaves the folder as it found it. The modules
that read data files (pandas, numpy) are imported by the commands that read them, so
`tickcast report` does not pay for them.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import sys
from pathlib import Path

from daemon import wiring
from daemon.config.settings import Settings
from daemon.core import errors
from daemon.core.clock import WallClock, from_spec, iso, parse_time

log = logging.getLogger("tickcast")


def backfill_command(cfg: Settings, since: int | None, until: int | None) -> int:
    from daemon.commands.backfill import Span, backfill
    from daemon.pipeline.source import RetryLater

    now = from_spec(cfg.daemon.clock).now_ms()
    if since is not None and until is not None and until <= since:
        raise errors.UsageError("--until must be after --since")
    series = cfg.series
    source = wiring.make_source(cfg)  # an unknown exchange id is refused here
    try:
        # The exchange must list the symbols before a store is created for them.
        source.load_markets(series.symbols)
        store = wiring.open_configured_store(cfg, now)
        try:
            summaries = backfill(store, source, series,
                                 Span(since, until, now, wiring.history_candles(cfg)))
        finally:
            store.close()
    except RetryLater as e:
        raise RetryLater(f"backfill stopped: {e} (what was fetched is stored; run again to "
                         "resume)") from e
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
                   timeframe: str | None, first: io.BufferedReader | None = None) -> int:
    """`first`: the first file, already being read ahead (see cli._cmd_import)."""
    try:
        return _import(cfg, files, symbol, exchange, timeframe, first)
    finally:
        if first is not None:
            first.close()


def _import(cfg: Settings, files: list[str], symbol: str | None, exchange: str | None,
            timeframe: str | None, first: io.BufferedReader | None) -> int:
    from daemon.files import importer  # pandas: only the commands that read files pay for it

    # Every argument first: a missing file or an unknown symbol refuses the whole command.
    jobs = [importer.check_file(Path(f), symbol=symbol, exchange=exchange, timeframe=timeframe,
                                default_exchange=cfg.exchange.id) for f in files]
    store = None
    refused: list[errors.DataError] = []  # files refused whole; the others are still stored
    for i, job in enumerate(jobs):
        try:
            parsed, tf_used = importer.read_file(job, fallback_timeframe=cfg.exchange.timeframe,
                                                 stream=first if i == 0 else None,
                                                 show_progress=True)
        except errors.DataError as e:
            refused.append(e)
            log.error("refused: %s", e)
            continue
        # Opened at the first file with rows to store: refused files alone create nothing.
        store = store or wiring.open_configured_store(cfg, WallClock().now_ms())
        try:
            res = importer.store_file(store, job, parsed, tf_used)
        except BaseException:
            store.close()
            raise
        print(f"{job.path}: {res.exchange} {res.symbol} {res.timeframe}: {res.lines} lines, "
              f"{res.stored} stored, {res.unchanged} already stored, {res.conflicts} conflicts, "
              f"{res.rejected} rejected")
    if store is not None:
        store.close()
    return refused[0].exit_code if refused else errors.EXIT_OK  # 65: bad input data


def replay_command(cfg: Settings, args: argparse.Namespace) -> int:
    from daemon.commands import replay
    from daemon.commands.report import accuracy, describe_range, table
    from daemon.files import replay_data

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
    res = replay.run(cfg, inp, start=start, end=args.end, out=out, live_url=cfg.storage.url)
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


def report_command(cfg: Settings, since: int | None, plot: str | None, as_json: bool) -> int:
    from daemon.commands import report

    if plot:
        from daemon.commands.report_plot import pyplot

        pyplot()  # matplotlib is optional: say so before opening anything
    store = wiring.open_configured_store(cfg, 0, read_only=True)
    try:
        rows = report.accuracy(store, since)
        kept = report.rows_kept(store)
        if plot:
            report.plot(store, Path(plot), since, rows)
    finally:
        store.close()
    if as_json:
        print(json.dumps({"since": iso(since) if since is not None else None, "rows": rows,
                          **kept}, indent=2))
    else:
        print(report.table(rows))
        if rows:
            print(report.describe_range(rows))
        if report.describe_kept(kept):
            print(report.describe_kept(kept))
        if plot:
            print(f"plot written to {plot}")
    return errors.EXIT_OK

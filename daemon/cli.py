"""The `tickcast` command line (README: Commands).

Global options are accepted before or after the subcommand. Exit codes:
0 ok, 2 usage, 65 bad input data, 74 storage error, 75 temporary failure,
78 configuration error; `errors.exit_code_for` decides which.

Kept light: the command handlers import their machinery (SQLAlchemy, torch, ccxt) only
when they run, so `tickcast --help` starts fast.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from daemon.config import settings
from daemon.core import errors, logs

log = logging.getLogger("tickcast.cli")

Handler = Callable[[argparse.Namespace, settings.Settings], int]

COMMANDS: dict[str, tuple[str, str]] = {
    "run": (
        "the live daemon: poll, store, score, retrain, forecast, forever",
        "example:\n  tickcast run --config /etc/tickcast/config.toml",
    ),
    "backfill": (
        "fetch closed candles through ccxt, resume from the store, repair internal gaps",
        "examples:\n  tickcast backfill --since 2024-01-01\n"
        "  tickcast backfill --since 2024-01-01T00:00Z --until 2024-01-02",
    ),
    "import": (
        "load candle CSV or CSV.gz files (header ts_ms,open,high,low,close,volume)",
        "examples:\n  tickcast import bitstamp_BTC-USD_1m_2021.csv.gz\n"
        "  tickcast import prices.csv --symbol BTC/EUR --exchange kraken --timeframe 1m",
    ),
    "replay": (
        "backtest through the live pipeline with a simulated clock",
        "examples:\n  tickcast replay                     # the bundled real hourly sample\n"
        "  tickcast replay --data bitstamp_BTC-USD_1h_x.csv.gz bitstamp_BTC-EUR_1h_x.csv.gz "
        "--start 2020-01-01 --out backtest.db\n"
        "  tickcast replay --from-db --db tickcast.db --start 2024-03-01 --out bt.db",
    ),
    "report": (
        "accuracy per model, symbol and horizon; optional plot",
        "examples:\n  tickcast report --db backtest.db\n"
        "  tickcast report --since 2024-03-01 --plot accuracy.png\n  tickcast report --json",
    ),
    "status": (
        "last candle and lag per symbol, model version, last training, recent error",
        "examples:\n  tickcast status\n  tickcast status --json\n"
        "  tickcast status --check            # plus the store's integrity check",
    ),
    "copy-store": (
        "copy the configured store into another (SQLite <-> PostgreSQL), resumable, counts "
        "checked",
        "examples:\n  tickcast copy-store --db tickcast.db --to postgresql://tickcast@db/tickcast"
        "\n  tickcast copy-store --db postgresql://tickcast@db/tickcast --to backup.db",
    ),
}


def _add_globals(p: argparse.ArgumentParser, *, sub: bool) -> None:
    # In subparsers the defaults are suppressed so an option given before the
    # subcommand is not overwritten by the subparser's default.
    d: Any = argparse.SUPPRESS if sub else None
    g = p.add_argument_group("global options")
    g.add_argument("--config", metavar="FILE", default=d,
                   help="TOML config file (env TICKCAST_CONFIG)")
    g.add_argument("--db", metavar="URL-or-path", default=d,
                   help="store: SQLAlchemy URL or SQLite file path (env TICKCAST_DB)")
    g.add_argument("--exchange-url", metavar="URL", default=d,
                   help="replace the exchange's REST host, e.g. http://127.0.0.1:8080")
    g.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS if sub else 0,
                   help="more log output (twice: library debug too)")


def _time_arg(text: str) -> int:
    from daemon.core.clock import parse_time

    try:
        return parse_time(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tickcast",
        description="Streaming online forecasts of BTC/USD and BTC/EUR with honest scoring.",
        epilog="example:\n  tickcast replay        # backtest on the bundled real sample\n\n"
               "exit codes: 0 ok, 2 usage, 65 bad input data, 74 storage error,\n"
               "            75 temporary failure, 78 configuration error",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_globals(parser, sub=False)
    subs = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def sub(name: str) -> argparse.ArgumentParser:
        summary, example = COMMANDS[name]
        p = subs.add_parser(name, help=summary, description=summary, epilog=example,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        _add_globals(p, sub=True)
        return p

    p = sub("run")
    p.set_defaults(func=_cmd_run)

    p = sub("backfill")
    p.add_argument("--since", type=_time_arg, metavar="DATE",
                   help="first candle time, inclusive (default: oldest stored, else "
                        "model.train_window candles back)")
    p.add_argument("--until", type=_time_arg, metavar="DATE",
                   help="end, exclusive (default: now)")
    p.set_defaults(func=_cmd_backfill)

    p = sub("import")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--symbol", help="unified symbol, e.g. BTC/USD (default: from the file name)")
    p.add_argument("--exchange", help="exchange id (default: from the file name, else config)")
    p.add_argument("--timeframe", help="e.g. 1m (default: from the file name, else the spacing)")
    p.set_defaults(func=_cmd_import)

    p = sub("replay")
    p.add_argument("--data", nargs="+", action="extend", metavar="FILE",
                   help="candle files (repeatable); default: the bundled sample")
    p.add_argument("--from-db", action="store_true", help="replay candles already in --db")
    p.add_argument("--start", type=_time_arg, metavar="DATE",
                   help="first forecast time, inclusive; earlier data is history")
    p.add_argument("--end", type=_time_arg, metavar="DATE", help="end, exclusive")
    p.add_argument("--out", metavar="DB", help="output store (never the live one)")
    p.add_argument("--symbol", help="symbol for --data files whose name does not say it")
    p.add_argument("--exchange", help="exchange for --data files whose name does not say it")
    p.set_defaults(func=_cmd_replay)

    p = sub("report")
    p.add_argument("--since", type=_time_arg, metavar="DATE", help="forecasts issued since")
    p.add_argument("--plot", metavar="FILE.png", help="draw forecasts vs actuals and errors")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_report)

    p = sub("status")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--check", action="store_true",
                   help="also run the store's integrity check (SQLite PRAGMA quick_check: it "
                        "reads every page, seconds on a big store); exit 74 if it fails")
    p.set_defaults(func=_cmd_status)

    p = sub("copy-store")
    p.add_argument("--to", required=True, metavar="URL",
                   help="target store: a SQLite path or URL, or postgresql://user@host/db "
                        "(created or migrated; the copy resumes where an interrupted one "
                        "stopped)")
    p.set_defaults(func=_cmd_copy_store)
    return parser


def load_settings(args: argparse.Namespace, env: dict[str, str] | None = None) -> settings.Settings:
    env = dict(os.environ) if env is None else env
    return settings.load_for_command(args.config, args.db, args.exchange_url, env)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) and usage errors (2), as return codes
        return int(e.code or 0)
    logs.setup("info", args.verbose)
    try:
        cfg = load_settings(args)
        logs.setup(cfg.daemon.log_level, args.verbose)
        func: Handler = args.func
        return func(args, cfg)
    except (Exception, KeyboardInterrupt) as e:
        code = errors.exit_code_for(e)
        if code is None:
            raise  # a bug: the traceback is the report
        log.error("%s", errors.describe(e))
        return code


# -- command handlers (each imports its machinery lazily: `--help` stays fast) --

def _stop_during_start_up(signum: int, frame: object) -> None:
    # Until the daemon installs its own handlers (after torch is imported and the
    # store opened), SIGTERM just ends the start-up: nothing has been committed yet
    # that a transaction would not protect.
    raise SystemExit(errors.EXIT_OK)


def _cmd_run(args: argparse.Namespace, cfg: settings.Settings) -> int:
    import signal

    signal.signal(signal.SIGTERM, _stop_during_start_up)
    from daemon.live.service import run

    return run(cfg)


def _cmd_backfill(args: argparse.Namespace, cfg: settings.Settings) -> int:
    from daemon.commands.backfill import backfill_command

    return backfill_command(cfg, args.since, args.until)


def _cmd_import(args: argparse.Namespace, cfg: settings.Settings) -> int:
    from daemon.files.readahead import prefetch

    # The first file starts inflating on another core while pandas and SQLAlchemy import.
    first = prefetch(args.files[0])
    from daemon.commands.import_files import import_command

    return import_command(cfg, args.files, args.symbol, args.exchange, args.timeframe, first)


def _cmd_replay(args: argparse.Namespace, cfg: settings.Settings) -> int:
    from daemon.commands.replay import replay_command

    return replay_command(cfg, args)


def _cmd_report(args: argparse.Namespace, cfg: settings.Settings) -> int:
    from daemon.commands.report import report_command

    return report_command(cfg, args.since, args.plot, args.json)


def _cmd_status(args: argparse.Namespace, cfg: settings.Settings) -> int:
    from daemon.commands.status import status_command

    return status_command(cfg, args.json, check=args.check)


def _cmd_copy_store(args: argparse.Namespace, cfg: settings.Settings) -> int:
    from daemon.commands.copy_store import copy_store_command

    return copy_store_command(cfg, args.to)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

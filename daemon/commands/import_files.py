"""`tickcast import FILE...`: load candle CSV or CSV.gz files into the store.

Every argument is checked first (a missing file or an unknown symbol refuses the whole
command); then each file is read, checked and stored (`files.importer`). A file refused
whole (wrong header, no valid row, seconds for milliseconds) stores nothing and makes the
exit code 65; the other files are still stored. The store is opened at the first file with
rows to store, so refused files alone create nothing.

Neither torch nor ccxt is imported on this path; pandas only once a file is read.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

from daemon import wiring
from daemon.config.settings import Settings
from daemon.core import errors
from daemon.core.clock import WallClock

log = logging.getLogger("tickcast.commands")


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

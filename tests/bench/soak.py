"""Soak benchmark: the full hourly history (2017-11 .. 2020-12, 3+ years) replayed in one
process (issue 6): peak RSS, RSS growth over the second half, store size per million
forecasts, and the size and time of an online backup taken while the store is open.

    python tests/bench/soak.py [--start 2018-01-01] [--set model.retrain_every=120]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import emit, peak_rss_mb

from daemon.commands import replay
from daemon.config import settings
from daemon.core.clock import parse_time
from daemon.files import replay_data
from daemon.pipeline.tick import TickReport
from storage import Store, dialect

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / 2**20


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--start", default=None, help="first forecast (default: as soon as a "
                    "first model can be trained)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    overrides: dict[str, Any] = {}
    for kv in args.set:
        k, v = kv.split("=", 1)
        overrides[k] = settings.parse_override(k, v)
    cfg = settings.load(None, env={}, overrides=overrides)
    inp = replay_data.load_files(replay_data.check_files(
        replay_data.bundled_files(), symbol=None, exchange=None, default_exchange="bitstamp"))
    # The first forecasts need lookback + horizon + enough windows: start a little in.
    start = parse_time(args.start) if args.start else inp.first_ts() + 600 * inp.series.step_ms
    samples: list[tuple[int, float]] = []
    # Wall time between consecutive ticks that did not train: shows whether a tick's cost
    # grows with the store (it must not: scoring and windows follow indexes).
    tick_ms: list[float] = []
    last = [time.perf_counter()]

    def on_tick(rep: TickReport) -> None:
        n = len(samples) + 1
        samples.append((n, rss_mb()) if n % 100 == 0 else (n, -1.0))
        t = time.perf_counter()
        if rep.training is None:
            tick_ms.append((t - last[0]) * 1000)
        last[0] = t

    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "soak.db"
        t0 = time.perf_counter()
        res = replay.run(cfg, inp, start=start, end=None, out=str(out), on_tick=on_tick)
        wall = time.perf_counter() - t0
        rss = [(n, m) for n, m in samples if m > 0]
        k = len(tick_ms) // 4
        quarters = [tick_ms[i * k:(i + 1) * k] for i in range(4)]
        half = rss[len(rss) // 2][1]
        end = rss[-1][1]
        store = Store(str(out))
        with store.read() as conn:
            n_fc = conn.exec_driver_sql("select count(*) from forecasts").scalar() or 0
            n_c = conn.exec_driver_sql("select count(*) from candles").scalar() or 0
        store.checkpoint_wal()
        size = out.stat().st_size
        t = time.perf_counter()
        dialect.backup(store.engine, Path(d) / "backup.db")
        backup_s = time.perf_counter() - t
        backup_size = (Path(d) / "backup.db").stat().st_size
        store.close()
    emit({
        "benchmark": "soak",
        "ticks": res.ticks,
        "wall_s": round(wall, 1),
        "retrains": res.retrains,
        "accepted": res.accepted,
        "forecasts": n_fc,
        "candles": n_c,
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "rss_at_half_mb": round(half, 1),
        "rss_at_end_mb": round(end, 1),
        "rss_growth_second_half_pct": round(100 * (end - half) / half, 2),
        "store_mb": round(size / 2**20, 2),
        "store_mb_per_million_forecasts": round(size / 2**20 / max(n_fc, 1) * 1e6, 1),
        "backup_mb": round(backup_size / 2**20, 2),
        "backup_s": round(backup_s, 3),
        "tick_ms_median_by_quarter": [round(statistics.median(q), 2) for q in quarters],
    })


if __name__ == "__main__":
    main()

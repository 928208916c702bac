"""Tick benchmark: one live tick without network and without training, two symbols
(README: Benchmarks, issue 4): ingest the newly closed candle of each symbol, score, forecast with
seq2seq, linear, naive and drift (the default model set), persist. Target p50 <= 50 ms. With TICKCAST_TEST_PG_URL set (a
server the script may create a database on), the same on PostgreSQL beside SQLite:

    python tests/bench/tick.py [--ticks 500]
    python tests/pg_server.py run -- python tests/bench/tick.py
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import emit, peak_rss_mb

from daemon.config import settings
from daemon.core.clock import parse_time
from daemon.files import replay_data
from daemon.pipeline.modelset import ModelSet
from daemon.pipeline.tick import Pipeline
from daemon.sources.replay import ReplaySource
from storage import Store


def measure(url: str, cfg: settings.Settings, inp: replay_data.ReplayInput, ticks: int,
            durable: bool) -> dict[str, float]:
    """p50/p90/p99 of `ticks` ticks on one store (its first tick trains, not measured)."""
    step = inp.series.step_ms
    start = parse_time("2020-06-01")
    store = Store(url, durable=durable)
    try:
        store.open(start)
        models = ModelSet(cfg, inp.series)
        pipe = Pipeline(cfg, store, ReplaySource(inp.series.exchange, inp.data), models, inp.series)
        t = time.perf_counter()
        first = pipe.tick(start)  # loads history, trains the first model (not measured)
        setup_s = time.perf_counter() - t
        assert first.training and any(o.status == "accepted" for o in first.training)
        times = []
        issued = 0
        for k in range(1, ticks + 1):
            t = time.perf_counter()
            rep = pipe.tick(start + k * step)
            times.append((time.perf_counter() - t) * 1000)
            assert rep.training is None
            issued += len(rep.issued)
        n_models = len(cfg.model.models)
        assert issued == n_models * ticks, f"every tick must forecast with all {n_models} models"
    finally:
        store.close()
    a = np.asarray(times)
    return {"p50_ms": round(float(np.percentile(a, 50)), 2),
            "p90_ms": round(float(np.percentile(a, 90)), 2),
            "p99_ms": round(float(np.percentile(a, 99)), 2),
            "max_ms": round(float(a.max()), 2), "setup_s": round(setup_s, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ticks", type=int, default=500)
    ap.add_argument("--no-fsync", action="store_true",
                    help="skip the fsync of each commit (the live daemon fsyncs)")
    args = ap.parse_args()
    durable = not args.no_fsync
    logging.basicConfig(level=logging.WARNING)
    # Default config, except no retraining inside the measured ticks.
    cfg = settings.load(None, env={}, overrides={"model.retrain_every": 10**9})
    inp = replay_data.load_files(replay_data.check_files(
        replay_data.bundled_files(), symbol=None, exchange=None, default_exchange="bitstamp"))
    with tempfile.TemporaryDirectory() as d:
        lite = measure(str(Path(d) / "tick.db"), cfg, inp, args.ticks, durable)
    pg = None
    admin = os.environ.get("TICKCAST_TEST_PG_URL")
    if admin:  # e.g. python tests/pg_server.py run -- python tests/bench/tick.py
        from tests.pg_server import create_database, drop_database

        url = create_database(admin, prefix="tickcast_bench_")
        try:
            pg = measure(url, cfg, inp, args.ticks, durable)
            s = Store(url)
            with s.read() as conn:
                pg["server"] = conn.exec_driver_sql("SHOW server_version").scalar()
                pg["fsync"] = conn.exec_driver_sql("SHOW fsync").scalar()
                pg["synchronous_commit"] = conn.exec_driver_sql(
                    "SHOW synchronous_commit").scalar()
            s.close()
        finally:
            drop_database(admin, url)
    emit({
        "benchmark": "tick",
        "ticks": args.ticks,
        "symbols": list(inp.series.symbols),
        "timeframe": inp.series.timeframe,
        "durable_commits": durable,
        **lite,
        "sqlite": lite,
        "postgresql": pg,
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "target_p50_ms": 50,
    })


if __name__ == "__main__":
    main()

"""Tick benchmark: one live tick without network and without training, two symbols
(SPEC §10, issue 4): ingest the newly closed candle of each symbol, score, forecast with
seq2seq, naive and drift, persist. Target p50 <= 50 ms.

    python tests/bench/tick.py [--ticks 500]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import emit, peak_rss_mb

from daemon import replay_data, settings
from daemon.clock import parse_time
from daemon.models import ModelSet
from daemon.pipeline import Pipeline
from storage import Store


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
    step = inp.series.step_ms
    start = parse_time("2020-06-01")
    with tempfile.TemporaryDirectory() as d:
        store = Store(str(Path(d) / "tick.db"), durable=durable)
        store.open(start)
        models = ModelSet(cfg, inp.series, ckpt_dir=Path(d) / "ck")
        pipe = Pipeline(cfg, store, replay_data.ReplaySource(inp), models, inp.series)
        t = time.perf_counter()
        first = pipe.tick(start)  # loads history, trains the first model (not measured)
        setup_s = time.perf_counter() - t
        assert first.training is not None and first.training.status == "accepted"
        times = []
        issued = 0
        for k in range(1, args.ticks + 1):
            now = start + k * step
            t = time.perf_counter()
            rep = pipe.tick(now)
            times.append((time.perf_counter() - t) * 1000)
            assert rep.training is None
            issued += len(rep.issued)
        assert issued == 3 * args.ticks, "every tick must forecast with all three models"
    a = np.asarray(times)
    emit({
        "benchmark": "tick",
        "ticks": args.ticks,
        "symbols": list(inp.series.symbols),
        "timeframe": inp.series.timeframe,
        "durable_commits": durable,
        "p50_ms": round(float(np.percentile(a, 50)), 2),
        "p90_ms": round(float(np.percentile(a, 90)), 2),
        "p99_ms": round(float(np.percentile(a, 99)), 2),
        "max_ms": round(float(a.max()), 2),
        "setup_s": round(setup_s, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "target_p50_ms": 50,
    })


if __name__ == "__main__":
    main()

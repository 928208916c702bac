"""Replay benchmark: a year of the real hourly BTC/USD + BTC/EUR pair through the live
pipeline with a simulated clock (SPEC §10, issue 4).

    python tests/bench/replay.py                     # 2020, model trained on the years before
    python tests/bench/replay.py --days 30           # a shorter smoke run

Prints wall time, ticks/s, times real time, peak RSS, retrains, and per horizon the MAE,
MASE (MAE / naive MAE on the same issue times) and 80 % interval coverage of seq2seq, naive
and drift. Targets on a 2-core CPU: the year in under 10 minutes, peak RSS under 1.5 GB.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

from _common import emit, peak_rss_mb

from daemon import replay, replay_data, settings
from daemon.clock import parse_time
from daemon.report import accuracy, table
from storage import Store


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per model and horizon, pooled over symbols: MAE in % of price is not comparable across
    USD and EUR, so MASE and coverage are averaged and MAE is reported per symbol."""
    out: dict[str, Any] = defaultdict(dict)
    for r in rows:
        key = f"h{r['horizon']}"
        d = out[r["model"]].setdefault(key, {"mae": {}, "mase": [], "coverage": [], "n": 0})
        d["mae"][r["symbol"]] = round(r["mae"], 3)
        d["mase"].append(r["mase"])
        if r["coverage"] is not None:
            d["coverage"].append(r["coverage"])
        d["n"] += r["n"]
    for model in out.values():
        for d in model.values():
            d["mase"] = round(sum(d["mase"]) / len(d["mase"]), 4) if d["mase"] else None
            d["coverage"] = round(sum(d["coverage"]) / len(d["coverage"]), 3) \
                if d["coverage"] else None
    return dict(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--start", default="2020-01-01")
    ap.add_argument("--days", type=float, default=366)
    ap.add_argument("--data", nargs="*", type=Path, help="default: the bundled hourly pair")
    ap.add_argument("--out", type=Path, help="keep the replay store here")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config key, e.g. model.retrain_steps=20")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    overrides: dict[str, Any] = {}
    for kv in args.set:
        k, v = kv.split("=", 1)
        overrides[k] = settings.parse_override(k, v)
    cfg = settings.load(None, env={}, overrides=overrides)
    files = args.data or replay_data.bundled_files()
    inp = replay_data.load_files(replay_data.check_files(
        list(files), symbol=None, exchange=None, default_exchange="bitstamp"))
    start = parse_time(args.start)
    end = min(start + int(args.days * 86_400_000), inp.last_ts() + inp.series.step_ms)
    with tempfile.TemporaryDirectory() as d:
        out = args.out or Path(d) / "bench-replay.db"
        res = replay.run(cfg, inp, start=start, end=end, out=str(out), show_progress=True)
        rows = accuracy(Store(str(out)), start)
        print(table(rows))
    sim_s = res.sim_ms / 1000
    emit({
        "benchmark": "replay",
        "data": inp.origin,
        "start": args.start,
        "days": round((end - start) / 86_400_000, 2),
        "ticks": res.ticks,
        "wall_s": round(res.wall_s, 1),
        "ticks_per_s": round(res.ticks / res.wall_s, 2),
        "x_real_time": round(sim_s / res.wall_s),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "retrains": res.retrains,
        "accepted": res.accepted,
        "config": {k: v for k, v in cfg.values.items() if k.startswith("model.")},
        "accuracy": summarise(rows),
        "targets": {"wall_s_for_a_year": 600, "peak_rss_mb": 1536},
    })


if __name__ == "__main__":
    main()

"""Replay benchmarks: the real hourly BTC/USD + BTC/EUR pair through the live pipeline with a
simulated clock (README: Benchmarks, issues 4 and 11).

    python tests/bench/replay.py --protocol     # 2,160 hours of 2020, the issue-11 protocol
    python tests/bench/replay.py                # 2020, model trained on the years before
    python tests/bench/replay.py --days 30      # a shorter smoke run of the year

--protocol: lookback 48, train_window 1500, retrain_every 48, horizons 1/6/24, from
2020-01-01 for 2,160 hours. First the whole `tickcast replay` command as a subprocess (what a
user waits for: start-up, reading the files, the replay, the table), then the same replay
in-process with every part timed: training steps, validation forecasts, calibration, the
volatility prior, window building, forecasting, history reads, ingest, scoring and storing.

The year: wall time, ticks/s, times real time, peak RSS, retrains, and per horizon MASE,
interval skill and coverage. Targets on a 2-core CPU: the protocol in 30 s; the year in
under 10 minutes, peak RSS under 1.5 GB.
"""

from __future__ import annotations

import argparse
import functools
import logging
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import ROOT, emit, peak_rss_mb

from daemon.commands import replay
from daemon.commands.report import accuracy, table
from daemon.config import settings
from daemon.core.clock import parse_time
from daemon.files import replay_data
from storage import Store

PROTOCOL = {"model.lookback": 48, "model.train_window": 1500, "model.retrain_every": 48,
            "model.horizons": [1, 6, 24]}
PROTOCOL_HOURS = 2160


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per model and horizon, pooled over symbols: MASE, interval skill and coverage averaged
    over the symbols (ratios travel across USD and EUR; MAE is reported per symbol)."""
    out: dict[str, Any] = defaultdict(dict)
    for r in rows:
        d = out[r["model"]].setdefault(f"h{r['horizon']}", {"mae": {}, "mase": [], "skill": [],
                                                              "coverage": [], "n": 0})
        d["mae"][r["symbol"]] = round(r["mae"], 3)
        for k, v in (("mase", r["mase"]), ("skill", r["interval_skill"]),
                     ("coverage", r["coverage"])):
            if v is not None:
                d[k].append(v)
        d["n"] += r["n"]
    for model in out.values():
        for d in model.values():
            for k in ("mase", "skill", "coverage"):
                d[k] = round(sum(d[k]) / len(d[k]), 4) if d[k] else None
    return dict(out)


class Timers:
    """Wall seconds spent inside wrapped functions (outermost call only, per name)."""

    def __init__(self) -> None:
        self.total: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._depth: dict[str, int] = defaultdict(int)

    def wrap(self, owner: Any, attr: str, name: str) -> None:
        fn: Callable[..., Any] = getattr(owner, attr)

        @functools.wraps(fn)
        def timed(*a: Any, **k: Any) -> Any:
            self._depth[name] += 1
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self._depth[name] -= 1
                if self._depth[name] == 0:
                    self.total[name] += time.perf_counter() - t0
                    self.calls[name] += 1

        setattr(owner, attr, timed)


def instrument() -> Timers:
    from daemon.pipeline import history
    from daemon.pipeline import modelset as models
    from daemon.pipeline import tick as pipeline
    from forecaster import baselines, calibration, evidence, linear, scaling, seq2seq, training
    from storage import forecasts

    t = Timers()
    s2s = seq2seq.Seq2SeqForecaster
    t.wrap(models.ModelSet, "train", "retrain, all of it")
    t.wrap(training, "fit", "  training steps")
    t.wrap(training, "predict", "  validation and record forecasts (every candidate)")
    t.wrap(scaling.Normaliser, "fit", "  volatility prior and scales fit")
    t.wrap(training, "build", "  window building")
    t.wrap(evidence, "extend", "  prequential record")
    for f in ("median_gate", "band_weight", "widen"):
        t.wrap(calibration, f, "  gates and calibration")
    t.wrap(linear.Linear, "learn", "  linear: ridge refit")
    t.wrap(s2s, "forecast", "forecasting: seq2seq")
    t.wrap(linear.Linear, "forecast", "forecasting: linear")
    t.wrap(baselines._Baseline, "forecast", "forecasting: naive and drift")
    t.wrap(history.CandleWindow, "refresh", "history reads (window refresh)")
    t.wrap(pipeline.Pipeline, "ingest", "ingest: reveal, validate, store candles")
    t.wrap(pipeline.Pipeline, "newest", "newest candle queries")
    t.wrap(forecasts, "score_by_model", "scoring (UPDATE)")
    t.wrap(forecasts, "insert_by_model", "storing forecasts")
    t.wrap(pipeline.Pipeline, "tick", "tick, all of it")
    return t


def protocol(args: argparse.Namespace) -> dict[str, Any]:
    files = [str(p) for p in (args.data or replay_data.bundled_files())]
    start = "2020-01-01"
    end_ms = parse_time(start) + PROTOCOL_HOURS * 3_600_000
    end = time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime(end_ms / 1000))
    with tempfile.TemporaryDirectory() as d:
        cfg_path = Path(d) / "protocol.toml"
        cfg_path.write_text("[model]\nlookback = 48\ntrain_window = 1500\nretrain_every = 48\n"
                            "horizons = [1, 6, 24]\n")
        out = Path(d) / "cli.db"
        t0 = time.perf_counter()
        p = subprocess.run([sys.executable, "-m", "daemon", "--config", str(cfg_path), "replay",
                            "--data", *files, "--start", start, "--end", end, "--out", str(out)],
                           cwd=ROOT, capture_output=True, text=True)
        command_s = time.perf_counter() - t0
        if p.returncode != 0:
            raise SystemExit(f"tickcast replay failed: {p.stderr[-2000:]}")
        print(p.stdout)
        cli_rows = accuracy(Store(str(out)), parse_time(start))
        timers = instrument()
        cfg = settings.load(None, env={}, overrides=PROTOCOL)
        inp = replay_data.load_files(replay_data.check_files(
            [Path(f) for f in files], symbol=None, exchange=None, default_exchange="bitstamp"))
        out2 = Path(d) / "inproc.db"
        res = replay.run(cfg, inp, start=parse_time(start), end=end_ms, out=str(out2),
                         show_progress=False)
        same = _rows(out) == _rows(out2)
    parts = {k: round(v, 2) for k, v in sorted(timers.total.items())}
    print(f"tickcast replay (subprocess, start-up to exit): {command_s:.1f} s")
    print(f"in-process replay: {res.wall_s:.1f} s, {res.ticks} ticks, {res.retrains} retrains "
          f"({res.accepted} accepted)")
    for k, v in parts.items():
        print(f"  {k:<55} {v:8.2f} s  ({timers.calls[k]} calls)")
    return {
        "benchmark": "replay-protocol",
        "protocol": {**PROTOCOL, "hours": PROTOCOL_HOURS, "start": start},
        "command_s": round(command_s, 1),
        "in_process_s": round(res.wall_s, 1),
        "ticks": res.ticks, "retrains": res.retrains, "accepted": res.accepted,
        "breakdown_s": parts,
        "rows_identical_subprocess_vs_in_process": same,
        "accuracy": summarise(cli_rows),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "targets": {"command_s": 30, "before": 91},
    }


def _rows(db: Path) -> list[tuple[Any, ...]]:
    import sqlite3

    con = sqlite3.connect(db)
    try:
        return con.execute("select model, model_version, symbol, issued_ts, horizon, yhat, "
                           "lower, upper from forecasts order by 1, 3, 4, 5").fetchall()
    finally:
        con.close()


def year(args: argparse.Namespace) -> dict[str, Any]:
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
    return {
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
        "config": cfg.dotted("model"),
        "accuracy": summarise(rows),
        "targets": {"wall_s_for_a_year": 600, "peak_rss_mb": 1536, "before_s": 383},
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--protocol", action="store_true", help="the issue-11 protocol (2,160 h)")
    ap.add_argument("--start", default="2020-01-01")
    ap.add_argument("--days", type=float, default=366)
    ap.add_argument("--data", nargs="*", type=Path, help="default: the bundled hourly pair")
    ap.add_argument("--out", type=Path, help="keep the replay store here")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config key, e.g. model.retrain_steps=20")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    emit(protocol(args) if args.protocol else year(args))


if __name__ == "__main__":
    main()

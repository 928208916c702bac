"""Cold starts: does the first training on a fresh store give a model (README: Benchmarks)?

    python tests/bench/coldstart.py                  # 20 first trainings, in process
    python tests/bench/coldstart.py --trials 3       # a smoke run
    python tests/bench/coldstart.py --daemon 3       # plus 3 real `tickcast run` cold starts

Part A: 20 windows of 1,440 real hourly candles of the bundled BTC/USD + BTC/EUR pair, at
start points spread evenly over 2017-12 .. 2020-12 (a fixed list, so reruns see the same
windows). On each, a new Seq2SeqForecaster with the project's defaults except lookback 60
and horizon 15 runs `learn` once, as a daemon does on a fresh store. Reported: how many were
accepted, the rejection codes and reasons, and seconds per training. Target: at least 19 of
20 accepted; a first model that fails more often leaves new users with baselines only.

Part B (`--daemon N`): N real `tickcast run` child processes against the exchange emulator
on an accelerated clock (the test suite's harness), each on a fresh store over a different
slice of the real pair laid onto minutes, timing how many simulated candles pass until the
first seq2seq forecast is in the store.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from _common import ROOT, emit

HOUR_MS = 3_600_000
MINUTE_MS = 60_000
SYMBOLS = ("BTC/USD", "BTC/EUR")
FILES = {
    "BTC/USD": ROOT / "daemon/sample/bitstamp_BTC-USD_1h_2017-11_2020-12.csv.gz",
    "BTC/EUR": ROOT / "daemon/sample/bitstamp_BTC-EUR_1h_2017-11_2020-12.csv.gz",
}
WINDOW = 1440
LOOKBACK = 60
HORIZON = 15
FIRST_START = "2017-12-01"
TARGET_SHARE = 19 / 20


def iso(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%MZ")


def load_pair() -> pd.DataFrame:
    """Both symbols on the timestamps they share, columns (field, symbol)."""
    frames = {s: pd.read_csv(p).set_index("ts_ms") for s, p in FILES.items()}
    df = pd.concat(frames, axis=1, join="inner").sort_index()
    return df.swaplevel(axis=1)


def window_starts(df: pd.DataFrame, trials: int) -> list[int]:
    """Row indices of `trials` windows spread evenly from FIRST_START to the end of the data."""
    ts = df.index.to_numpy(np.int64)
    first = int(np.searchsorted(ts, int(pd.Timestamp(FIRST_START, tz="UTC").value // 1_000_000)))
    last = len(ts) - WINDOW
    return [int(round(x)) for x in np.linspace(first, last, trials)]


# -- part A ------------------------------------------------------------------------------

def history_of(df: pd.DataFrame, start: int) -> Any:
    from forecaster.base import History

    part = df.iloc[start:start + WINDOW]
    ts = part.index.to_numpy(np.int64)
    if np.any(np.diff(ts) != HOUR_MS):
        raise SystemExit(f"window at {iso(int(ts[0]))} has a hole; pick other start points")

    def cols(name: str) -> np.ndarray:
        return part[name][list(SYMBOLS)].to_numpy(np.float64)

    return History(ts, cols("close"), cols("volume"), SYMBOLS, HOUR_MS,
                   cols("open"), cols("high"), cols("low"))


def part_a(df: pd.DataFrame, trials: int) -> dict[str, Any]:
    from forecaster.base import Accepted, Rejected, Stopped
    from forecaster.seq2seq import Seq2SeqConfig, Seq2SeqForecaster

    results: list[dict[str, Any]] = []
    for k, start in enumerate(window_starts(df, trials)):
        history = history_of(df, start)
        f = Seq2SeqForecaster(Seq2SeqConfig(symbols=SYMBOLS, step_ms=HOUR_MS,
                                             lookback=LOOKBACK, horizon=HORIZON, device="cpu"))
        t0 = time.perf_counter()
        out = f.learn(history)
        secs = time.perf_counter() - t0
        r: dict[str, Any] = {"start": iso(int(history.ts[0])), "train_s": round(secs, 2)}
        if isinstance(out, Accepted):
            # The reason ends with what validation kept: the trained network, or the
            # volatility prior's band when training did not beat it.
            r.update(outcome="accepted", reason=out.reason)
        elif isinstance(out, Rejected):
            r.update(outcome="rejected", code=str(out.code), reason=out.reason)
        elif isinstance(out, Stopped):
            r.update(outcome="stopped", code="stopped", reason=out.reason)
        else:
            r.update(outcome=type(out).__name__, code=type(out).__name__, reason=repr(out))
        stats = getattr(out, "stats", None)
        if stats is not None:
            r.update(n_windows=stats.n_windows, steps=stats.steps, val_loss=stats.val_loss,
                     prev_val_loss=stats.prev_val_loss)
        results.append(r)
        print(f"{k + 1:>3} {r['start']}  {r['outcome']:<9} {r['train_s']:>6.1f} s  {r['reason']}")
    times = [r["train_s"] for r in results]
    accepted = [r for r in results if r["outcome"] == "accepted"]
    return {
        "trials": len(results),
        "accepted": len(accepted),
        "reasons": dict(Counter(r["code"] for r in results if r["outcome"] != "accepted")),
        "accepted_as": dict(Counter(r["reason"].rsplit("; ", 1)[-1] for r in accepted)),
        "rejections": [r for r in results if r["outcome"] != "accepted"],
        "train_s": {"mean": round(statistics.fmean(times), 2) if times else None,
                    "max": round(max(times), 2) if times else None},
        "per_trial": results,
    }


# -- part B ------------------------------------------------------------------------------

def _harness() -> Any:
    """The suite's daemon harness."""
    from tests.helpers.daemon import DaemonHarness

    return DaemonHarness


def daemon_model() -> dict[str, Any]:
    """The shipped [model] defaults, then Part A's sizes. Every key is written because the
    harness's own overrides are the test suite's toy sizes, not what a user runs."""
    from daemon.config import settings

    model = {k.name: k.default for k in settings.KEYS if k.section == "model"
             and k.name not in ("checkpoint_dir", "device")}
    model.update(lookback=LOOKBACK, horizons=[1, 5, HORIZON], train_window=WINDOW, threads=2)
    return model


def cold_start(h: Any, start_ms: int, timeout_s: float) -> dict[str, Any]:
    """One `tickcast run` on a fresh store until its first seq2seq forecast row."""
    wall0 = time.monotonic()

    def trainings() -> list[str]:
        return [s for (s,) in h.query("select status from training_runs order by id")]

    try:
        h.start()
        h.wait_for(lambda: bool(h.query(
            "select 1 from forecasts where model = 'seq2seq' limit 1")),
            "the first seq2seq forecast", timeout_s)
        now = int(h.clock.now_ms())
        first_s2s = h.query("select min(issued_ts) from forecasts where model = 'seq2seq'")[0][0]
        first_any = h.query("select min(issued_ts) from forecasts")[0][0]
        return {
            "ok": True,
            "wall_s": round(time.monotonic() - wall0, 1),
            # Simulated candles from the daemon's start until the row was seen.
            "candles_from_start": round((now - start_ms) / MINUTE_MS, 1),
            # Candles forecast by the baselines alone before seq2seq joined in.
            "candles_after_first_forecast": (first_s2s - first_any) // MINUTE_MS,
            "trainings": trainings(),
        }
    except AssertionError as e:  # the harness's way of saying timeout or early exit
        return {"ok": False, "wall_s": round(time.monotonic() - wall0, 1),
                "error": str(e)[-1500:], "trainings": trainings()}
    finally:
        for p in h.procs:
            if p.poll() is None:
                h.stop(p)
        h.close()


def part_b(df: pd.DataFrame, n: int, minutes_after: int, timeout_s: float,
           speed: float | None) -> dict[str, Any]:
    from tests.emulator import hourly_onto_minutes

    harness_cls = _harness()
    harness_mod = __import__(harness_cls.__module__, fromlist=["START"])
    start_ms = int(harness_mod.START)
    t0_ms = int(harness_mod.T0)
    before = (start_ms - t0_ms) // MINUTE_MS  # history the emulator already holds at start
    model = daemon_model()
    starts = window_starts(df, max(n, 2))[:n]
    results: list[dict[str, Any]] = []
    for k, start in enumerate(starts):
        part = df.iloc[start:start + before + minutes_after]
        minutes = {s: hourly_onto_minutes(
            list(zip(part.index.tolist(), *(part[f][s].tolist() for f in
                                            ("open", "high", "low", "close", "volume")),
                     strict=True)), t0_ms) for s in SYMBOLS}
        r: dict[str, Any] = {"data_start": iso(int(df.index[start]))}
        with tempfile.TemporaryDirectory(prefix="tickcast-coldstart-") as tmp:
            kwargs: dict[str, Any] = {"model": model}
            if speed is not None:
                kwargs["speed"] = speed
            r.update(cold_start(harness_cls(Path(tmp), minutes, **kwargs), start_ms, timeout_s))
        results.append(r)
        print(f"daemon {k + 1}: {r}")
    ok = [r for r in results if r["ok"]]
    cand = [r["candles_from_start"] for r in ok]
    return {
        "runs": n,
        "first_forecast": len(ok),
        "candles_from_start": {"mean": round(statistics.fmean(cand), 1) if cand else None,
                               "max": max(cand) if cand else None},
        "model": model,
        "per_run": results,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=20, help="part A: first trainings")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch CPU threads for part A (0: all cores but one, as the daemon)")
    ap.add_argument("--daemon", type=int, default=0, metavar="N",
                    help="part B: real daemon cold starts (default 0: skipped)")
    ap.add_argument("--daemon-minutes", type=int, default=1500,
                    help="minutes of data after the daemon's start")
    ap.add_argument("--daemon-timeout", type=float, default=600,
                    help="wall seconds to wait for a first seq2seq forecast")
    ap.add_argument("--daemon-speed", type=float,
                    help="simulated seconds per wall second (default: the harness's)")
    args = ap.parse_args()

    df = load_pair()
    a: dict[str, Any] | None = None
    if args.trials > 0:
        import torch

        torch.set_num_threads(args.threads or max(1, (os.cpu_count() or 2) - 1))
        a = part_a(df, args.trials)
    b = part_b(df, args.daemon, args.daemon_minutes, args.daemon_timeout, args.daemon_speed) \
        if args.daemon > 0 else None
    need = math.ceil(TARGET_SHARE * args.trials)
    emit({
        "benchmark": "coldstart",
        "trials": a["trials"] if a else 0,
        "accepted": a["accepted"] if a else None,
        "reasons": a["reasons"] if a else {},
        "accepted_as": a["accepted_as"] if a else {},
        "rejections": a["rejections"] if a else [],
        "train_s": a["train_s"] if a else None,
        "window": {"candles": WINDOW, "lookback": LOOKBACK, "horizon": HORIZON,
                   "starts": [r["start"] for r in a["per_trial"]] if a else []},
        "daemon": b,
        "targets": {"accepted": ">= 19 of 20"},
        "pass": {"accepted": a["accepted"] >= need if a else None},
    })


if __name__ == "__main__":
    main()

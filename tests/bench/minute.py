"""Forecast skill at the daemon's own timeframe: a real 1-minute BTC/USD + BTC/EUR pair.

    python tests/bench/minute.py                      # ~10 days of Coinbase minutes, shipped defaults
    python tests/bench/minute.py --reuse /tmp/minute  # keep the store; a rerun only re-reads it
    python tests/bench/minute.py --start 2023-03-09   # a shorter smoke run
    python tests/bench/minute.py --swap               # the labels swapped (see below)

Replays `tests/bench/data/coinbase_BTC-*_1m_2023-03-01_2023-03-10.csv.gz` (see the
PROVENANCE.md beside them) through the product as a user would (`python -m daemon replay`
with no config file: the shipped defaults), the days before `--start` as history. Then, on
the rows every model forecast and had scored at the same (symbol, horizon, issued_ts):

* MASE per symbol × horizon of seq2seq, linear, naive and drift (MAE ÷ naive's);
* the seq2seq band's interval score against the best of four RiskMetrics EWMA bands
  (λ ∈ {0.94, 0.97, 0.99, 0.995}, chosen per symbol and horizon with hindsight), computed
  here from the data exactly as `naive` computes its own band (the λ = 0.94 one is checked
  against naive's stored band), and its coverage;
* the retrains: accepted, and accepted with the median moved (per cell);
* the replay's wall time, whole command.

`--swap` replays the same candles with the labels exchanged: the USD market's file as
BTC/EUR, the EUR market's as BTC/USD (copies renamed in the work folder). On these days the
lead runs from the EUR market to the USD one (PROVENANCE.md), so the follower then sits in
the BTC/EUR column, as it does where the lead runs from USD to EUR: the check that the
network finds a lead in either column, on real candles (prices keep their own levels).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from _common import ROOT, emit
from skill import iso, run_replay, to_ms

DATA = ROOT / "tests" / "bench" / "data"
FILES = [DATA / "coinbase_BTC-USD_1m_2023-03-01_2023-03-10.csv.gz",
         DATA / "coinbase_BTC-EUR_1m_2023-03-01_2023-03-10.csv.gz"]
MINUTE = 60_000
LAMBDAS = (0.94, 0.97, 0.99, 0.995)
MODELS = ("seq2seq", "linear", "naive", "drift")
Z80 = 1.2815515655446004
MAX_FILL = 5  # model.max_fill: confirmed no-trade runs the product fills flat
CONTEXT = 20160  # model.train_window: candles the baselines' EWMA reads


def grid_closes(path: Path, t0: int, n: int) -> np.ndarray:
    """Closes on the minute grid, holes of at most MAX_FILL minutes filled flat as the
    product fills confirmed no-trade minutes in a replay; longer holes NaN."""
    df = pd.read_csv(path, usecols=["ts_ms", "close"])
    c = np.full(n, np.nan)
    c[(df["ts_ms"].to_numpy(np.int64) - t0) // MINUTE] = df["close"].to_numpy()
    out = c.copy()
    missing = np.isnan(c)
    edges = np.diff(np.concatenate([[0], missing.astype(np.int8), [0]]))
    for a, b in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True):
        if a > 0 and b < n and b - a <= MAX_FILL:  # a run closed by a later candle
            out[a:b] = c[a - 1]
    return out


def ewma_sigma(close: np.ndarray, lam: float, seed_n: int = 30) -> np.ndarray:
    """RiskMetrics σ after each row, as `forecaster.volatility.riskmetrics_sigma` computes
    it over the whole history so far (the replay is shorter than the baselines' context):
    the EWMA of squared log returns seeded with the mean of the first 30, NaN skipped."""
    r2 = np.full(len(close), np.nan)
    r2[1:] = np.log(close[1:] / close[:-1]) ** 2
    out = np.full(len(close), np.nan)
    state, seen, acc = 0.0, 0, 0.0
    for i, x in enumerate(r2):
        if np.isfinite(x):
            seen += 1
            if seen <= seed_n:
                acc += x
                state = acc / seen
            else:
                state = lam * state + (1 - lam) * x
        if seen:
            out[i] = np.sqrt(state)
    return out


def read_rows(db: Path, start: int) -> dict[tuple[str, int, int], dict[str, tuple]]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        out: dict[tuple[str, int, int], dict[str, tuple]] = defaultdict(dict)
        for m, s, h, t, yhat, lo, hi, y in con.execute(
                "SELECT model, symbol, horizon, issued_ts, yhat, lower, upper, actual "
                "FROM forecasts WHERE actual IS NOT NULL AND issued_ts >= ?", (start,)):
            out[(s, int(h), int(t))][m] = (yhat, lo, hi, y)
        return out
    finally:
        con.close()


def score(lo: np.ndarray, hi: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (hi - lo) + 10 * np.maximum(lo - y, 0) + 10 * np.maximum(y - hi, 0)


def swapped(folder: Path) -> list[Path]:
    """Copies of FILES with the two quote currencies' labels exchanged in their names, in
    FILES' label order (BTC/USD first): a replay's columns follow the order of its --data
    files, so the follower's candles sit in the other column, not just under another name."""
    for f in FILES:
        quote = f.name.split("_")[1].split("-")[1]
        other = {"USD": "EUR", "EUR": "USD"}[quote]
        shutil.copyfile(f, folder / f.name.replace(f"BTC-{quote}", f"BTC-{other}"))
    return [folder / f.name for f in FILES]


def evaluate(db: Path, start: int, files: list[Path] = FILES) -> dict[str, Any]:
    t0 = min(int(pd.read_csv(f, usecols=["ts_ms"])["ts_ms"].min()) for f in files)
    t1 = max(int(pd.read_csv(f, usecols=["ts_ms"])["ts_ms"].max()) for f in files)
    n = (t1 - t0) // MINUTE + 1
    closes = {f"BTC/{f.name.split('_')[1].split('-')[1]}": grid_closes(f, t0, n) for f in files}
    sigmas = {s: {lam: ewma_sigma(c, lam) for lam in LAMBDAS} for s, c in closes.items()}
    rows = read_rows(db, start)
    cells: dict[str, Any] = {}
    naive_check = []
    for (sym, h) in sorted({(s, h) for s, h, _ in rows}, key=lambda k: (k[0], k[1])):
        keys = [k for k in rows if k[0] == sym and k[1] == h and set(MODELS) <= set(rows[k])]
        if not keys:
            continue
        y = np.array([rows[k]["naive"][3] for k in keys])
        err = {m: np.array([abs(rows[k][m][0] - rows[k][m][3]) for k in keys]) for m in MODELS}
        s2s_lo = np.array([rows[k]["seq2seq"][1] for k in keys])
        s2s_hi = np.array([rows[k]["seq2seq"][2] for k in keys])
        idx = np.array([(k[2] - t0) // MINUTE for k in keys])
        last = closes[sym][idx]
        ewma = {}
        for lam in LAMBDAS:
            half = Z80 * sigmas[sym][lam][idx] * np.sqrt(h)
            lo, hi = last * np.exp(-half), last * np.exp(half)
            ewma[lam] = float(np.mean(score(lo, hi, y)))
            if lam == 0.94:
                nl = np.array([rows[k]["naive"][1] for k in keys])
                naive_check.append(float(np.max(np.abs(lo / nl - 1))))
        best = min(ewma, key=ewma.get)  # type: ignore[arg-type]
        ours = float(np.mean(score(s2s_lo, s2s_hi, y)))
        cells[f"{sym} h{h}"] = {
            "n": len(keys),
            "mase": {m: round(float(err[m].mean() / err["naive"].mean()), 4) for m in MODELS},
            "interval_skill_vs_best_ewma": round(ours / ewma[best], 4),
            "best_lambda": best,
            "coverage": round(float(np.mean((s2s_lo <= y) & (y <= s2s_hi))), 4),
            "naive_coverage": round(float(np.mean(
                [rows[k]["naive"][1] <= rows[k]["naive"][3] <= rows[k]["naive"][2]
                 for k in keys])), 4),
        }
    return {"cells": cells, "naive_band_recomputed_max_rel_diff": max(naive_check or [0.0])}


def retrains(db: Path) -> dict[str, Any]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        runs = con.execute("SELECT status, evidence, wall_seconds FROM training_runs "
                           "WHERE model = 'seq2seq' ORDER BY id").fetchall()
    finally:
        con.close()
    moved_cells: dict[str, int] = defaultdict(int)
    moved = 0
    for status, ev, _ in runs:
        if status != "accepted" or not ev:
            continue
        cells = [c for c in json.loads(ev).get("cells", []) if c["moved"]]
        moved += bool(cells)
        for c in cells:
            moved_cells[f"{c['symbol']} h{c['horizon']}"] += 1
    walls = [w for *_, w in runs if w is not None]
    return {"retrains": len(runs), "accepted": sum(r[0] == "accepted" for r in runs),
            "accepted_with_median_moved": moved, "moved_by_cell": dict(moved_cells),
            "train_seconds_mean": round(float(np.mean(walls)), 2) if walls else None,
            "train_seconds_max": round(float(np.max(walls)), 2) if walls else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--start", default="2023-03-04", help="first forecast (UTC); before: history")
    ap.add_argument("--reuse", type=Path, help="keep the store in this folder")
    ap.add_argument("--swap", action="store_true",
                    help="exchange the two markets' labels (the follower becomes BTC/EUR)")
    args = ap.parse_args()
    start = to_ms(args.start)
    work = args.reuse or Path(tempfile.mkdtemp(prefix="tickcast-minute-"))
    work.mkdir(parents=True, exist_ok=True)
    db = work / "minute.db"
    files = swapped(work) if args.swap else FILES
    wall = None
    if not db.exists():
        cfg = work / "defaults.toml"
        cfg.write_text("# the shipped defaults\n")
        rc, wall = run_replay(sys.executable, ROOT, files, start, to_ms("2023-03-11"), db, cfg,
                              work / "replay.log")
        if rc != 0:
            raise SystemExit(f"replay failed ({rc}); see {work / 'replay.log'}")
    res = evaluate(db, start, files)
    res.update(retrains(db))
    res["replay_wall_s"] = None if wall is None else round(wall, 1)
    res["start"] = iso(start)
    res["swapped"] = args.swap
    print(f"{'cell':<14}{'n':>7} " + " ".join(f"{m:>8}" for m in MODELS) +
          f"{'IS/best':>9}{'λ':>7}{'cov80':>7}")
    for k, c in res["cells"].items():
        print(f"{k:<14}{c['n']:>7} " + " ".join(f"{c['mase'][m]:>8.4f}" for m in MODELS) +
              f"{c['interval_skill_vs_best_ewma']:>9.4f}{c['best_lambda']:>7}"
              f"{c['coverage']:>7.3f}")
    print(f"retrains {res['retrains']}, accepted {res['accepted']}, median moved in "
          f"{res['accepted_with_median_moved']} ({res['moved_by_cell']}); replay "
          f"{res['replay_wall_s']} s")
    emit({"bench": "minute", **res})


if __name__ == "__main__":
    main()

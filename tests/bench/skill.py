"""Forecast skill on the public hourly pair, beside strong baselines (README: Benchmarks).

    python tests/bench/skill.py                              # both configs, 2019 and 2020
    python tests/bench/skill.py --config-set protocol --period 2020 --days 20   # smoke run
    python tests/bench/skill.py --reuse /tmp/skill           # keep the stores; reruns resume

Runs the product as a user would (`python -m daemon replay` in a child process) once per
config and period, then reads the store's `forecasts` table. Per model and horizon, pooled
over both symbols, on the rows every model scored with a band at the same
(symbol, horizon, issued_ts): MASE, the 80 % interval score, interval skill (÷ naive's) and
coverage. Beside them two checks computed here from the data files, not by the product:

* a GARCH(1,1) band with Student-t innovations (the `arch` package, benchmark-only), refit
  on the same rolling window and schedule as the model, centred on the last close: the
  classical volatility model a learned band ought to match;
* the RiskMetrics band of `naive` recomputed in plain Python on 200 sampled rows, which
  verifies that the bar everything is measured against is what it claims to be.

Configs: `protocol` is the setting under which published models (statsforecast AutoETS, a
Darts GRU) were compared on these pairs (rolling 1,500-candle window, retrained every 48
candles, horizons 1, 6, 24); `default` is the shipped config.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from _common import ROOT, emit

HOUR_MS = 3_600_000
COVERAGE = 0.8
Z80 = 1.2815515655446004  # standard normal 90 % quantile
PENALTY = 2 / (1 - COVERAGE)  # 10: the interval score's weight on a miss, for an 80 % band
EWMA_LAMBDA = 0.94
EWMA_SEED_N = 30
EWMA_SAMPLE = 200
SAMPLE_FILES = ("bitstamp_BTC-USD_1h_2017-11_2020-12.csv.gz",
                "bitstamp_BTC-EUR_1h_2017-11_2020-12.csv.gz")

CONFIGS: dict[str, dict[str, Any]] = {
    "protocol": {"lookback": 48, "train_window": 1500, "retrain_every": 48,
                 "horizons": [1, 6, 24]},
    # The shipped defaults, spelled out because the GARCH band follows the same schedule.
    "default": {},
}
DEFAULT_MODEL = {"lookback": 240, "train_window": 20160, "retrain_every": 60,
                 "horizons": [1, 5, 15, 30, 60]}
PERIODS = {"2019": ("2019-01-01", "2020-01-01"), "2020": ("2020-01-01", "2021-01-01")}
TARGETS = {"interval_skill_vs_garch_t": "<= garch_t", "interval_skill": "<= 1.00",
           "mase": "<= 1.000", "coverage": [0.77, 0.83]}
UNDER_TEST = "seq2seq"


# -- data --------------------------------------------------------------------------------

def symbol_of(path: Path) -> str:
    """`bitstamp_BTC-USD_1h_x.csv.gz` -> `BTC/USD`, the way the product names its symbols."""
    m = re.match(r"^[^_]+_([A-Z0-9]+)-([A-Z0-9]+)_", path.name)
    if not m:
        raise SystemExit(f"{path}: name the file like bitstamp_BTC-USD_1h_x.csv.gz")
    return f"{m.group(1)}/{m.group(2)}"


@dataclass
class Series:
    """Closes of one symbol on a regular grid; a missing candle is NaN, never filled."""

    t0: int
    step: int
    close: np.ndarray

    def index(self, ts: int) -> int:
        return (ts - self.t0) // self.step

    def log_returns(self) -> np.ndarray:
        r = np.full(len(self.close), np.nan)
        r[1:] = np.log(self.close[1:] / self.close[:-1])
        return r


def load_series(path: Path, step: int = HOUR_MS) -> Series:
    df = pd.read_csv(path, usecols=["ts_ms", "close"])
    ts = df["ts_ms"].to_numpy(np.int64)
    t0 = int(ts.min())
    close = np.full((int(ts.max()) - t0) // step + 1, np.nan)
    close[(ts - t0) // step] = df["close"].to_numpy(np.float64)
    return Series(t0, step, close)


# -- the replay --------------------------------------------------------------------------

def config_toml(name: str, threads: int) -> str:
    lines = ["[model]", f"threads = {threads}"]
    for k, v in CONFIGS[name].items():
        lines.append(f"{k} = {v!r}" if not isinstance(v, list)
                     else f"{k} = [{', '.join(str(x) for x in v)}]")
    return "\n".join(lines) + "\n"


def model_settings(name: str) -> dict[str, Any]:
    return {**DEFAULT_MODEL, **CONFIGS[name]}


def iso(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%MZ")


def to_ms(day: str) -> int:
    return int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp() * 1000)


def run_replay(python: str, repo: Path, data: list[Path], start: int, end: int, out: Path,
               cfg_path: Path, log_path: Path) -> tuple[int, float]:
    """The replay as a user runs it; the child's stdout (its own table) goes to a log,
    its progress lines to our stderr so a long run is visibly alive."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("TICKCAST_") and k != "STATE_DIRECTORY"}
    cmd = [python, "-m", "daemon", "replay", "--data", *map(str, data), "--start", iso(start),
           "--end", iso(end), "--out", str(out), "--config", str(cfg_path)]
    print("$ " + " ".join(cmd), file=sys.stderr)
    t0 = time.monotonic()
    with open(log_path, "w") as log:
        rc = subprocess.run(cmd, cwd=repo, env=env, stdout=log, stderr=None).returncode
    return rc, time.monotonic() - t0


@dataclass(frozen=True)
class Row:
    yhat: float
    lower: float | None
    upper: float | None
    actual: float


def read_forecasts(db: Path, start: int, end: int) -> dict[tuple[str, int, int], dict[str, Row]]:
    """Scored rows by (symbol, horizon, issued_ts) -> model; a reused store may hold a
    longer replay than asked for, so the issue times are cut to [start, end)."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        cur = con.execute(
            "SELECT model, symbol, horizon, issued_ts, yhat, lower, upper, actual FROM forecasts"
            " WHERE actual IS NOT NULL AND issued_ts >= ? AND issued_ts < ?", (start, end))
        out: dict[tuple[str, int, int], dict[str, Row]] = defaultdict(dict)
        for model, sym, h, issued, yhat, lo, hi, actual in cur:
            out[(sym, int(h), int(issued))][model] = Row(yhat, lo, hi, actual)
        return out
    finally:
        con.close()


# -- scores ------------------------------------------------------------------------------

def interval_score(lo: float, hi: float, y: float) -> float:
    return (hi - lo) + PENALTY * max(lo - y, 0.0) + PENALTY * max(y - hi, 0.0)


@dataclass
class Tally:
    abs_err: float = 0.0
    iscore: float = 0.0
    covered: int = 0
    n: int = 0
    banded: bool = True

    def add(self, centre: float, lo: float | None, hi: float | None, y: float) -> None:
        self.abs_err += abs(y - centre)
        self.n += 1
        if lo is None or hi is None:  # a point forecast (linear): no band to score
            self.banded = False
            return
        self.iscore += interval_score(lo, hi, y)
        self.covered += lo <= y <= hi


def summary(t: Tally, naive: Tally, *, with_mase: bool = True) -> dict[str, Any]:
    if t.n == 0 or not t.banded:
        mase = round(t.abs_err / naive.abs_err, 4) if t.n and naive.abs_err else None
        return {"mase": mase if with_mase else None, "interval_score": None,
                "interval_skill": None, "coverage": None, "n": t.n}
    out: dict[str, Any] = {
        "interval_score": round(t.iscore / t.n, 3),
        "interval_skill": round(t.iscore / naive.iscore, 4) if naive.iscore else None,
        "coverage": round(t.covered / t.n, 4),
        "n": t.n,
    }
    if with_mase:
        out["mase"] = round(t.abs_err / naive.abs_err, 4) if naive.abs_err else None
    return out


# -- GARCH(1,1)-t ------------------------------------------------------------------------

@dataclass
class GarchPath:
    """Per issue candle of one symbol: the next step's conditional variance (in %²) and
    the parameters in force, so any horizon's variance follows without refitting."""

    first: int  # series index of the first issue candle
    s_next: np.ndarray
    omega: np.ndarray
    persistence: np.ndarray
    q: np.ndarray  # standardised Student-t 90 % quantile
    fits: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)


def _fit(x: np.ndarray, start: np.ndarray | None) -> tuple[Any | None, str | None]:
    from arch import arch_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence and scale warnings: counted instead
        try:
            res = arch_model(x, mean="Zero", vol="GARCH", p=1, q=1, dist="t").fit(
                disp="off", starting_values=start)
        except Exception as e:  # noqa: BLE001 - any failure of the optimiser is a failed fit
            return None, f"{type(e).__name__}: {e}"
    if res.convergence_flag != 0 or not np.all(np.isfinite(res.params.to_numpy())):
        return res, f"convergence flag {res.convergence_flag}"
    return res, None


def garch_path(series: Series, first: int, last: int, window: int, every: int) -> GarchPath:
    """Refit every `every` issue candles on the `window` returns ending at the refit candle;
    between refits the variance is filtered forward with the fitted parameters. A fit that
    fails keeps the previous parameters (a first one that did not converge is used as it
    came out when its parameters are finite)."""
    from scipy.stats import t as student_t

    r = series.log_returns() * 100  # percent: the scale arch's optimiser is tuned for
    n = last - first + 1
    path = GarchPath(first, np.empty(n), np.empty(n), np.empty(n), np.empty(n))
    params: np.ndarray | None = None
    s_next = math.nan
    for k in range(n):
        i = first + k
        if k % every == 0:
            x = r[max(1, i - window + 1): i + 1]
            x = x[np.isfinite(x)]
            res, why = _fit(x, params)
            path.fits += 1
            if why is not None:
                path.failed += 1
                if len(path.failures) < 5:
                    path.failures.append(f"{i}: {why}")
            usable = res is not None and np.all(np.isfinite(res.params.to_numpy()))
            if usable and (why is None or params is None):
                params = res.params.to_numpy()
                omega, alpha, beta, _ = params
                sigma2 = float(res.conditional_volatility[-1]) ** 2
                last_r = x[-1] if len(x) else 0.0
                s_next = omega + alpha * last_r ** 2 + beta * sigma2
            # Otherwise the old parameters carry on; s_next is already filtered up to here.
        if params is None:
            raise RuntimeError("the first GARCH fit failed outright")
        omega, alpha, beta, nu = params
        path.s_next[k] = s_next
        path.omega[k] = omega
        path.persistence[k] = alpha + beta
        path.q[k] = student_t.ppf(0.9, nu) * math.sqrt((nu - 2) / nu)
        ri = r[i + 1] if i + 1 < len(r) else math.nan
        # A missing return leaves the expected variance, not a made-up shock.
        shock = ri * ri if math.isfinite(ri) else s_next
        s_next = omega + alpha * shock + beta * s_next
    return path


def garch_variance(path: GarchPath, hmax: int) -> np.ndarray:
    """(n, hmax) sums over steps 1..h of the forecast variance (in log-return units²):
    E[s_{t+k+1}] = omega + (alpha + beta) E[s_{t+k}], which reverts to
    omega / (1 - alpha - beta) when the process is stationary."""
    out = np.empty((len(path.s_next), hmax))
    e = path.s_next.copy()
    acc = np.zeros_like(e)
    for k in range(hmax):
        acc = acc + e
        out[:, k] = acc
        e = path.omega + path.persistence * e
    return out / 1e4


# -- the RiskMetrics check ---------------------------------------------------------------

def riskmetrics_band(close: list[float], h: int) -> tuple[float, float]:
    """80 % band of the last close from an EWMA of squared log returns, in plain Python:
    the mean of the first 30 squared returns, then the recursion over each later one."""
    sq = [math.log(b / a) ** 2 for a, b in zip(close, close[1:], strict=False)
          if math.isfinite(a) and math.isfinite(b)]
    v = sum(sq[:EWMA_SEED_N]) / len(sq[:EWMA_SEED_N])
    for x in sq[EWMA_SEED_N:]:
        v = EWMA_LAMBDA * v + (1 - EWMA_LAMBDA) * x
    half = Z80 * math.sqrt(v) * math.sqrt(h)
    return close[-1] * math.exp(-half), close[-1] * math.exp(half)


# -- one run -----------------------------------------------------------------------------

def analyse(db: Path, series: dict[str, Series], start: int, end: int,
            model: dict[str, Any]) -> dict[str, Any]:
    rows = read_forecasts(db, start, end)
    models = sorted({m for by in rows.values() for m in by})
    if "naive" not in models:
        return {"error": "no scored naive rows", "models": models}
    # Models with a band must have it on every compared row; a point model (linear) is
    # compared by its MASE alone.
    banded = [m for m in models if any(m in by and by[m].lower is not None
                                       for by in rows.values())]
    common = {k: by for k, by in rows.items()
              if all(m in by for m in models)
              and all(by[m].lower is not None and by[m].upper is not None for m in banded)}
    dropped_band = sum(1 for k, by in rows.items() if all(m in by for m in models)) - len(common)
    if not common:
        return {"error": "no row was scored with a band by every model", "models": models}
    horizons = sorted({h for _, h, _ in common})
    missing = sorted({s for s, _, _ in common} - set(series))
    if missing:
        return {"error": f"no data file for {missing}", "models": models}

    paths: dict[str, GarchPath] = {}
    for sym, s in series.items():
        issued = [i for (sy, _, i) in common if sy == sym]
        if not issued:
            continue
        # The refit schedule is anchored at the period start, as the replay's first tick is.
        first = max(s.index(start), 1)
        last = s.index(max(issued))
        paths[sym] = garch_path(s, first, last, model["train_window"], model["retrain_every"])
    variance = {sym: garch_variance(p, max(horizons)) for sym, p in paths.items()}

    tallies: dict[int, dict[str, Tally]] = defaultdict(lambda: defaultdict(Tally))
    centre_diff = 0.0
    for (sym, h, issued), by in common.items():
        for m, row in by.items():
            tallies[h][m].add(row.yhat, row.lower, row.upper, row.actual)
        s = series[sym]
        i = s.index(issued)
        last_close = float(s.close[i])
        centre_diff = max(centre_diff, abs(by["naive"].yhat - last_close) / last_close)
        p = paths[sym]
        k = i - p.first
        half = p.q[k] * math.sqrt(variance[sym][k, h - 1])
        tallies[h]["garch_t"].add(last_close, last_close * math.exp(-half),
                                  last_close * math.exp(half), by["naive"].actual)

    per_h: dict[str, Any] = {}
    for h in horizons:
        naive = tallies[h]["naive"]
        per_h[f"h{h}"] = {m: summary(tallies[h][m], naive) for m in models}
        per_h[f"h{h}"]["garch_t"] = summary(tallies[h]["garch_t"], naive, with_mase=False)

    # The sample is fixed by a seed, so a rerun checks the same rows.
    keys = sorted(common)
    rng = random.Random(0)
    sample = rng.sample(keys, min(EWMA_SAMPLE, len(keys)))
    worst = 0.0
    for sym, h, issued in sample:
        s = series[sym]
        i = s.index(issued)
        window = [float(x) for x in s.close[max(0, i - model["train_window"] + 1): i + 1]]
        lo, hi = riskmetrics_band(window, h)
        row = common[(sym, h, issued)]["naive"]
        worst = max(worst, abs(row.lower - lo) / lo, abs(row.upper - hi) / hi)

    return {
        "models": models,
        "rows": {"common": len(common), "scored_keys": len(rows), "dropped_no_band": dropped_band,
                 "first_issue": iso(min(i for _, _, i in common)) if common else None,
                 "last_issue": iso(max(i for _, _, i in common)) if common else None},
        "horizons": per_h,
        "garch_t_fits": {sym: {"fits": p.fits, "failed": p.failed, "examples": p.failures}
                         for sym, p in paths.items()},
        "ewma_check_max_rel_diff": float(f"{worst:.3g}"),
        "ewma_check_rows": len(sample),
        "naive_centre_max_rel_diff": float(f"{centre_diff:.3g}"),
    }


def verdict(per_h: dict[str, Any]) -> dict[str, dict[str, bool]]:
    lo, hi = TARGETS["coverage"]
    out = {}
    for h, by in per_h.items():
        m, g = by.get(UNDER_TEST), by["garch_t"]
        if m is None or m["n"] == 0:
            out[h] = {"mase": False, "interval_skill": False, "vs_garch_t": False,
                      "coverage": False, "all": False}
            continue
        c = {
            "mase": m["mase"] is not None and m["mase"] <= 1.0,
            "interval_skill": m["interval_skill"] is not None and m["interval_skill"] <= 1.0,
            "vs_garch_t": (m["interval_skill"] is not None and g["interval_skill"] is not None
                           and m["interval_skill"] <= g["interval_skill"]),
            "coverage": lo <= m["coverage"] <= hi,
        }
        c["all"] = all(c.values())
        out[h] = c
    return out


def print_table(title: str, per_h: dict[str, Any]) -> None:
    order = [UNDER_TEST, "linear", "naive", "drift"]
    print(f"\n{title}")
    print(f"{'h':>4} {'model':<9} {'MASE':>7} {'int.score':>10} {'skill':>7} {'cover':>6} {'n':>7}")
    for h, by in per_h.items():
        names = sorted(by, key=lambda m: (m == "garch_t", order.index(m) if m in order else 9, m))
        for m in names:
            d = by[m]
            mase = f"{d['mase']:.4f}" if d.get("mase") is not None else "-"
            skill = f"{d['interval_skill']:.4f}" if d["interval_skill"] is not None else "-"
            cover = f"{d['coverage']:.3f}" if d["coverage"] is not None else "-"
            score = f"{d['interval_score']:.2f}" if d["interval_score"] is not None else "-"
            print(f"{h:>4} {m:<9} {mase:>7} {score:>10} {skill:>7} {cover:>6} {d['n']:>7}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config-set", choices=["protocol", "default", "both"], default="both")
    ap.add_argument("--period", choices=["2019", "2020", "both"], default="both")
    ap.add_argument("--days", type=float, help="replay only this many days of each period")
    ap.add_argument("--data", nargs=2, type=Path, metavar="FILE",
                    help="the USD and EUR hourly files (default: the bundled sample)")
    ap.add_argument("--reuse", type=Path, metavar="DIR",
                    help="keep the replay stores here; a rerun resumes or reuses them")
    ap.add_argument("--repo", type=Path, default=ROOT,
                    help="checkout whose `python -m daemon` replays (default: this one)")
    ap.add_argument("--python", default=sys.executable,
                    help="interpreter for the replay (that checkout's venv)")
    ap.add_argument("--threads", type=int, default=2, help="[model] threads of the replay")
    args = ap.parse_args()

    repo = args.repo.resolve()
    data = [p.resolve() for p in (args.data or [repo / "daemon" / "sample" / f
                                                  for f in SAMPLE_FILES])]
    series = {symbol_of(p): load_series(p) for p in data}
    configs = ["protocol", "default"] if args.config_set == "both" else [args.config_set]
    periods = ["2019", "2020"] if args.period == "both" else [args.period]

    tmp = tempfile.TemporaryDirectory(prefix="tickcast-skill-")
    base = args.reuse.resolve() if args.reuse else Path(tmp.name)
    base.mkdir(parents=True, exist_ok=True)
    runs, passes = [], {}
    try:
        for cname in configs:
            model = model_settings(cname)
            for period in periods:
                start, end = (to_ms(d) for d in PERIODS[period])
                if args.days:
                    end = min(end, start + int(args.days * 86_400_000))
                # No length in the name: a longer run of the same store resumes the shorter.
                out = base / f"skill-{cname}-{period}.db"
                cfg = base / f"skill-{cname}.toml"
                cfg.write_text(config_toml(cname, args.threads))
                reused = out.exists()
                rc, wall = run_replay(args.python, repo, data, start, end, out, cfg,
                                      base / f"skill-{cname}-{period}.log")
                run: dict[str, Any] = {"config": cname, "period": period, "start": iso(start),
                                       "end": iso(end), "model": model, "reused": reused,
                                       "replay_rc": rc, "wall_s": round(wall, 1)}
                if rc != 0 or not out.exists():
                    log = (base / f"skill-{cname}-{period}.log").read_text()[-2000:]
                    run["error"] = f"replay exited {rc}"
                    print(f"\n{cname} {period}: replay exited {rc}\n{log}", file=sys.stderr)
                else:
                    t0 = time.monotonic()
                    run.update(analyse(out, series, start, end, model))
                    run["analysis_s"] = round(time.monotonic() - t0, 1)
                if "horizons" in run:
                    fits = run["garch_t_fits"].values()
                    print_table(f"{cname} {period} ({iso(start)} .. {iso(end)}), replay "
                                f"{run['wall_s']} s, {run['rows']['common']} common rows, "
                                f"EWMA check max rel diff {run['ewma_check_max_rel_diff']:.2e}, "
                                f"GARCH fits failed {sum(f['failed'] for f in fits)}"
                                f"/{sum(f['fits'] for f in fits)}", run["horizons"])
                    run["pass"] = verdict(run["horizons"])
                    for h, c in run["pass"].items():
                        passes[f"{cname}/{period}/{h}"] = c["all"]
                else:
                    passes[f"{cname}/{period}"] = False
                runs.append(run)
    finally:
        tmp.cleanup()
    emit({"benchmark": "skill", "repo": str(repo), "data": [p.name for p in data],
          "runs": runs, "targets": TARGETS, "pass": passes})


if __name__ == "__main__":
    main()

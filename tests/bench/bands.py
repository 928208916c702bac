"""The volatility prior's served 80 % band against the RiskMetrics EWMA bands, offline.

    python tests/bench/bands.py                 # the 1-minute Coinbase pair (tests/bench/data)
    python tests/bench/bands.py --hourly        # the hourly pair, default + protocol, 2019, 2020
    python tests/bench/bands.py --hourly --config protocol --period 2020   # one of them
    python tests/bench/bands.py --hindsight     # + the band widened or narrowed with hindsight

No network, no store, no torch model: the seq2seq's band whenever validation gives its network
no band weight (nearly always) is exactly the prior's, `last × exp(±base[h] × path_sd[h])`,
and this replays just that, deterministically, through the product's own code
(`Normaliser.fit`, `Normaliser.scales_last`, `windows.valid_ends`, `windows.window_ok`):

* the candles go onto one time grid; confirmed no-trade runs of at most `max_fill` (5) candles
  are filled flat exactly as `daemon/pipeline/history.py::fill_confirmed_empty` fills each slice
  the product reads (in replay every missing candle between two revealed ones is confirmed
  empty; a run cut by the slice's start stays missing, one at its end is filled when the part
  inside is short enough); a self-check compares against that function on sampled slices;
* issue times are the candle times a replay forecasts from: at every tick the newest time both
  symbols have reached, once each, where the lookback window is complete;
* the normaliser is refitted on the trailing `train_window` rows at the first tick and then
  whenever the common newest candle has moved `retrain_every` candles (as `learn` does, with
  its window ends; every retrain is taken as accepted), and each issue time uses the latest fit;
* a forecast reads the trailing `context` rows (min(train_window, 2000)), as the product does;
* a forecast is scored where the target candle was stored (the product scores nothing else).

Beside it, at the same issue times and per symbol, the baselines' RiskMetrics band
(`forecaster/volatility.py::riskmetrics_sigma` over the trailing `train_window` rows, checked
against that function on sampled rows) for λ ∈ {0.94, 0.97, 0.99, 0.995}. Printed per symbol
and pooled (both symbols' rows together), per horizon: the mean 80 % interval score in price
units, the coverage, and the prior's score over the best λ's (chosen with hindsight, per
horizon). `--hindsight` adds, pooled per horizon, the ratio and coverage of the prior's
band with every half-width multiplied by one factor from a grid, and the best factor: a
bound on what a width correction fixed per horizon could gain (one that changes the width
over time is not bound by it), and beside it two such corrections tried: adaptive conformal
widths for a grid of steps (causal: each step uses only the outcomes known by then), and the
prior's band combined with an EWMA band, sqrt(w prior² + (1 − w) EWMA²) × f, with λ, w and f
chosen with hindsight per horizon (a bound on what that combination could gain). The last
line is one JSON object, with the mean cost of a fit and of one `scales_last` (numpy's BLAS threads fight over a busy 2-core box: `OPENBLAS_NUM_THREADS=1`
gives steadier timings).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from _common import ROOT, emit

from daemon.pipeline.history import fill_confirmed_empty
from forecaster import windows
from forecaster.band import Z80
from forecaster.base import History
from forecaster.scaling import Normaliser
from forecaster.volatility import riskmetrics_sigma

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
LAMBDAS = (0.94, 0.97, 0.99, 0.995)
PENALTY = 10.0  # 2 / (1 - 0.8): the interval score's weight on a miss
MAX_FILL = 5
CONTEXT = 2000  # Seq2SeqConfig.context
WARMUP_ROWS = 100  # seq2seq.WARMUP_ROWS
MIN_WINDOWS = 64
TARGET = 0.97
HINDSIGHT = (0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4)
ACI_ETAS = (0.002, 0.005, 0.01, 0.02)
COMBINE_LAMBDAS = (0.94, 0.97, 0.99)
COMBINE_WEIGHTS = (0.25, 0.5, 0.75)
MINUTE_FILES = ("coinbase_BTC-USD_1m_2023-03-01_2023-03-10.csv.gz",
                "coinbase_BTC-EUR_1m_2023-03-01_2023-03-10.csv.gz")
HOURLY_FILES = ("bitstamp_BTC-USD_1h_2017-11_2020-12.csv.gz",
                "bitstamp_BTC-EUR_1h_2017-11_2020-12.csv.gz")
SYMBOLS = ("BTC/USD", "BTC/EUR")


@dataclass(frozen=True)
class Config:
    lookback: int = 240
    train_window: int = 20160
    retrain_every: int = 60
    horizons: tuple[int, ...] = (1, 5, 15, 30, 60)


CONFIGS = {"default": Config(), "protocol": Config(48, 1500, 48, (1, 6, 24))}
PERIODS = {"2019": ("2019-01-01", "2020-01-01"), "2020": ("2020-01-01", "2021-01-01")}


def to_ms(day: str) -> int:
    return int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp() * 1000)


# -- data on one grid -------------------------------------------------------------------

@dataclass
class Grid:
    """Both symbols on one grid, padded in front with `pad` missing rows so every slice the
    product reads (the grid rows before the data are NaN there too) is a plain slice."""

    ts: np.ndarray  # (n,)
    raw: np.ndarray  # (5, n, S) as stored: NaN where no candle
    filled: np.ndarray  # (5, n, S) confirmed runs <= MAX_FILL filled flat
    last_real: np.ndarray  # (n, S) index of the newest stored candle at or before each row
    step: int

    @classmethod
    def load(cls, paths: list[Path], step: int, pad: int) -> Grid:
        dfs = [pd.read_csv(p) for p in paths]
        t0 = min(int(d["ts_ms"].min()) for d in dfs) - pad * step
        t1 = max(int(d["ts_ms"].max()) for d in dfs)
        n = (t1 - t0) // step + 1
        raw = np.full((5, n, len(dfs)), np.nan)
        for j, d in enumerate(dfs):
            i = (d["ts_ms"].to_numpy(np.int64) - t0) // step
            raw[:, i, j] = d[["open", "high", "low", "close", "volume"]].to_numpy(np.float64).T
        real = np.isfinite(raw[3])
        idx = np.where(real, np.arange(n)[:, None], -1)
        last_real = np.maximum.accumulate(idx, axis=0)
        filled = raw.copy()
        # Every missing candle with a stored one after it is confirmed empty by the time any
        # slice containing it is read; runs at the very end are not (nothing revealed after).
        nxt = np.where(real, np.arange(n)[:, None], n)
        nxt = np.minimum.accumulate(nxt[::-1], axis=0)[::-1]
        fill_confirmed_empty(filled, ~real & (nxt < n), MAX_FILL)
        return cls(t0 + np.arange(n, dtype=np.int64) * step, raw, filled, last_real, step)

    def history(self, end: int, n: int) -> History:
        """Rows end-n+1 .. end as the product's `CandleWindow.history(end, n)` gives them."""
        a = end - n + 1
        x = self.filled[:, a:end + 1].copy()
        for j in range(x.shape[2]):
            # A run cut by the slice's start has no stored candle before it: left missing.
            if not np.isfinite(self.raw[3, a, j]):
                stop = a
                while stop <= end and not np.isfinite(self.raw[3, stop, j]):
                    stop += 1
                x[:, : stop - a, j] = np.nan
            # A run at the slice's end is confirmed (the other symbol's candle at `end` was
            # revealed after this one's next): filled when the part inside is short enough.
            lr = self.last_real[end, j]
            if lr < end and lr >= a and end - lr <= MAX_FILL:
                x[:4, lr + 1 - a:, j] = self.raw[3, lr, j]
                x[4, lr + 1 - a:, j] = 0.0
        o, h, lo, c, v = x
        return History(self.ts[a:end + 1], c, v, SYMBOLS, self.step, o, h, lo)

    def product_history(self, end: int, n: int) -> History:
        """The same slice filled by the product's own function (for the self-check)."""
        a = end - n + 1
        x = self.raw[:, a:end + 1].copy()
        fill_confirmed_empty(x, ~np.isfinite(x[3]), MAX_FILL)
        o, h, lo, c, v = x
        return History(self.ts[a:end + 1], c, v, SYMBOLS, self.step, o, h, lo)


def schedule(g: Grid, start: int, stop: int, every: int) -> tuple[np.ndarray, np.ndarray]:
    """(issue rows, retrain rows) of a replay ticking once a candle over rows start..stop-1."""
    common = g.last_real[start:stop].min(axis=1)
    common = common[common >= 0]
    issued = np.unique(common)
    retrains, last = [], None
    for c in common:
        if last is None or c - last >= every:
            retrains.append(c)
            last = c
    return issued, np.asarray(retrains, dtype=np.int64)


# -- the RiskMetrics bands --------------------------------------------------------------

def ewma_sigma(g: Grid, ends: np.ndarray, window: int, lam: float, seed_n: int = 30) -> np.ndarray:
    """`riskmetrics_sigma` of the `window` rows ending at each of `ends`, (m, S), in O(n + m).

    The EWMA is linear in the squared returns: with G_i = Σ_{q<i} lam^(i-1-q) v_q over the
    valid squared returns v, the sum over the valid returns j..b-1 is G_b − lam^(b−j) G_j.
    """
    c = g.filled[3]
    out = np.full((len(ends), c.shape[1]), np.nan)
    for s in range(c.shape[1]):
        r = np.full(len(c), np.nan)
        r[1:] = np.log(c[1:, s] / c[:-1, s])
        ok = np.isfinite(r)
        rows = np.flatnonzero(ok)
        v = r[ok] ** 2
        gsum = np.zeros(len(v) + 1)
        for i, x in enumerate(v):  # sequential, once per symbol and lambda
            gsum[i + 1] = lam * gsum[i] + x
        csum = np.concatenate([[0.0], np.cumsum(v)])
        for i, end in enumerate(ends):
            lr = g.last_real[end, s]
            # The slice's end run: filled flat (zero returns) when short, else skipped.
            tail = end - lr if (lr < end and end - lr <= MAX_FILL and not ok[lr + 1]) else 0
            upto = lr if (lr < end and not ok[min(lr + 1, len(ok) - 1)]) else end
            b = int(np.searchsorted(rows, upto, side="right"))
            a0 = int(np.searchsorted(rows, end - window + 2, side="left"))
            if b <= a0:
                continue
            k = min(seed_n, b - a0)
            seed = (csum[a0 + k] - csum[a0]) / k
            j = a0 + k
            var = lam ** (b - j) * seed + (1 - lam) * (gsum[b] - lam ** (b - j) * gsum[j])
            out[i, s] = math.sqrt(var * lam ** tail)
    return out


# -- the replay of the prior ------------------------------------------------------------

@dataclass
class Scored:
    """Per issue time, horizon and symbol: the bands and the outcome (NaN: not scored)."""

    last: np.ndarray  # (m, S)
    actual: np.ndarray  # (m, H, S)
    half: np.ndarray  # (m, H, S) the prior's half-width in log units
    sigma: dict[float, np.ndarray]  # lam -> (m, S)


def ewma_half(sigma: np.ndarray, kh: np.ndarray) -> np.ndarray:
    """The RiskMetrics band's half-width in log units, (m, H, S), from sigma (m, S)."""
    return Z80 * sigma[:, None, :] * np.sqrt(kh.astype(np.float64))[None, :, None]


def interval_score(lo: np.ndarray, hi: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (hi - lo) + PENALTY * np.maximum(lo - y, 0) + PENALTY * np.maximum(y - hi, 0)


def aci_scale(ends: np.ndarray, kh: np.ndarray, half: np.ndarray, last: np.ndarray,
              actual: np.ndarray, eta: float) -> np.ndarray:
    """Adaptive conformal widths, causally: half-widths × exp(u), u per symbol and horizon
    moved by eta × (miss − 0.2) once each earlier forecast's target candle is known (at or
    before the issue time), so the long-run coverage is 80 % whatever the prior does."""
    out = half.copy()
    m, _, ns = half.shape
    for i_h, h in enumerate(kh):
        for s in range(ns):
            u, j = 0.0, 0
            for i in range(m):
                while j < i and ends[j] + h <= ends[i]:
                    y = actual[j, i_h, s]
                    if np.isfinite(y):
                        hw = out[j, i_h, s]
                        miss = abs(math.log(y / last[j, s])) > hw
                        u += eta * (float(miss) - 0.2)
                    j += 1
                out[i, i_h, s] = half[i, i_h, s] * math.exp(u)
    return out


def replay(g: Grid, cfg: Config, start: int, stop: int, *, check: bool = True,
           hindsight: bool = False) -> dict[str, Any]:
    horizon = max(cfg.horizons)
    context = min(cfg.train_window, CONTEXT)
    issued, retrains = schedule(g, start, stop, cfg.retrain_every)
    t_fit, n_fit, norm = 0.0, 0, None
    fits: dict[int, Normaliser] = {}
    for end in retrains:
        h = g.history(int(end), cfg.train_window)
        ends = windows.valid_ends(h, cfg.lookback, horizon)
        ends = ends[ends >= min(WARMUP_ROWS, len(h) // 4)]
        n_val = min(512, max(8, int(len(ends) * 0.2)))
        if len(ends) < MIN_WINDOWS or np.sum(ends <= ends[-n_val] - horizon) < MIN_WINDOWS // 2:
            continue  # `learn` refuses: the model in use stays
        t = time.perf_counter()
        fits[int(end)] = Normaliser.fit(h, ends, horizon)
        t_fit += time.perf_counter() - t
        n_fit += 1
    fit_ends = np.asarray(sorted(fits))
    kh = np.asarray(cfg.horizons)
    rows, half, t_tick = [], [], 0.0
    for end in issued:
        k = int(np.searchsorted(fit_ends, end, side="right")) - 1
        if k < 0:
            continue
        norm = fits[int(fit_ends[k])]
        h = g.history(int(end), context)
        if not windows.window_ok(h, cfg.lookback):
            continue
        t = time.perf_counter()
        sc = norm.scales_last(h, horizon)
        t_tick += time.perf_counter() - t
        if not np.all(np.isfinite(sc.path_sd)) or np.any(sc.path_sd <= 0):
            continue
        rows.append(int(end))
        half.append((norm.base[None] * sc.path_sd)[0, kh - 1])
    ends = np.asarray(rows, dtype=np.int64)
    tgt = ends[:, None] + kh[None, :]
    inside = tgt < stop
    actual = g.raw[3][np.minimum(tgt, len(g.ts) - 1)]  # (m, H, S): stored candles only
    actual[~inside] = np.nan
    sig = {lam: ewma_sigma(g, ends, cfg.train_window, lam) for lam in LAMBDAS}
    if check:
        self_check(g, cfg, ends, sig)
    sc_ = Scored(g.filled[3][ends], actual, np.asarray(half), sig)
    out = {"table": tabulate(sc_, cfg), "issues": len(ends), "retrains": n_fit,
           "fit_s_mean": t_fit / max(n_fit, 1), "tick_ms_mean": 1e3 * t_tick / max(len(ends), 1)}
    if hindsight:
        def pooled(half: np.ndarray) -> dict[str, dict[str, float]]:
            return {hz: {"ratio": r["ratio"], "cov": r["prior"]["cov"]} for hz, r in
                    tabulate(Scored(sc_.last, actual, half, sig), cfg)["pooled"].items()}

        out["hindsight"] = {str(f): pooled(sc_.half * f) for f in HINDSIGHT}
        out["aci"] = {str(eta): pooled(aci_scale(ends, kh, sc_.half, sc_.last, actual, eta))
                      for eta in ACI_ETAS}
        combined: dict[str, dict[str, Any]] = {}
        for lam in COMBINE_LAMBDAS:
            hw = ewma_half(sig[lam], kh)
            for w in COMBINE_WEIGHTS:
                mixed = np.sqrt(w * sc_.half ** 2 + (1 - w) * hw ** 2)
                for f in HINDSIGHT:
                    for hz, r in pooled(mixed * f).items():
                        if hz not in combined or r["ratio"] < combined[hz]["ratio"]:
                            combined[hz] = {**r, "lambda": lam, "w": w, "f": f}
        out["combined"] = combined
    return out


def self_check(g: Grid, cfg: Config, ends: np.ndarray, sig: dict[float, np.ndarray]) -> None:
    """The slices and the EWMA bands are the product's, on a sample of issue times."""
    rng = np.random.default_rng(0)
    # Issue rows next to holes are the ones where filling could differ: check them all.
    holes = np.flatnonzero(np.any(~np.isfinite(g.raw[3][ends - 1]) |
                                  ~np.isfinite(g.raw[3][ends]), axis=1))
    pick = np.unique(np.concatenate([rng.choice(len(ends), min(40, len(ends)), replace=False),
                                     holes[:40]]))
    for i in pick:
        end = int(ends[i])
        for n in (min(cfg.train_window, CONTEXT), cfg.train_window):
            mine, theirs = g.history(end, n), g.product_history(end, n)
            for f in ("open", "high", "low", "close", "volume"):
                np.testing.assert_array_equal(getattr(mine, f), getattr(theirs, f), err_msg=f)
        full = g.product_history(end, cfg.train_window)
        for lam in LAMBDAS:
            np.testing.assert_allclose(sig[lam][i], riskmetrics_sigma(full.close, lam),
                                       rtol=1e-7)


# -- the tables ---------------------------------------------------------------------------

def tabulate(sc: Scored, cfg: Config) -> dict[str, Any]:
    """{symbol or 'pooled': {h: {...}}}: interval scores and coverages on the scored rows."""
    last = sc.last[:, None, :]
    y = sc.actual
    ok = np.isfinite(y)
    res: dict[str, Any] = {}
    kh = np.asarray(cfg.horizons, dtype=np.float64)
    bands = {"prior": (last * np.exp(-sc.half), last * np.exp(sc.half))}
    for lam, s in sc.sigma.items():
        hw = ewma_half(s, kh)
        bands[f"ewma{lam}"] = (last * np.exp(-hw), last * np.exp(hw))
    scores = {k: interval_score(lo, hi, np.where(ok, y, 0)) for k, (lo, hi) in bands.items()}
    inside = {k: (y >= lo) & (y <= hi) for k, (lo, hi) in bands.items()}
    for who, cols in [(s, [j]) for j, s in enumerate(SYMBOLS)] + [("pooled", [0, 1])]:
        per_h = {}
        for i, hz in enumerate(cfg.horizons):
            m = ok[:, i, cols]
            if not m.any():
                continue
            row: dict[str, Any] = {"n": int(m.sum())}
            for k in bands:
                row[k] = {"is": float(scores[k][:, i, cols][m].mean()),
                          "cov": float(inside[k][:, i, cols][m].mean())}
            best = min(LAMBDAS, key=lambda lam: row[f"ewma{lam}"]["is"])
            row["best_lambda"] = best
            row["ratio"] = row["prior"]["is"] / row[f"ewma{best}"]["is"]
            per_h[str(hz)] = row
        res[who] = per_h
    return res


def show(title: str, out: dict[str, Any]) -> None:
    print(f"\n{title}: {out['issues']} issue times, {out['retrains']} fits "
          f"({out['fit_s_mean']:.3f} s each), scales_last {out['tick_ms_mean']:.3f} ms")
    print(f"{'':8} {'h':>3} {'n':>6} {'prior IS':>10} {'cov':>6} {'best λ':>7} {'EWMA IS':>10} "
          f"{'cov':>6} {'ratio':>7}  " + " ".join(f"{lam:>7}" for lam in LAMBDAS))
    for who, per_h in out["table"].items():
        for hz, r in per_h.items():
            b = r[f"ewma{r['best_lambda']}"]
            others = " ".join(f"{r['prior']['is'] / r[f'ewma{lam}']['is']:7.4f}"
                              for lam in LAMBDAS)
            flag = "" if r["ratio"] <= TARGET and 0.78 <= r["prior"]["cov"] <= 0.82 else "  <-"
            print(f"{who:8} {hz:>3} {r['n']:6d} {r['prior']['is']:10.3f} "
                  f"{r['prior']['cov']:6.3f} {r['best_lambda']:>7} {b['is']:10.3f} "
                  f"{b['cov']:6.3f} {r['ratio']:7.4f}  {others}{flag}")
    if "hindsight" in out:
        hs = out["hindsight"]
        print("pooled, every half-width × f (ratio to the best EWMA / coverage):")
        for f, per_h in hs.items():
            print(f"  f = {f:<4} " + "  ".join(f"h{hz} {r['ratio']:.4f}/{r['cov']:.3f}"
                                             for hz, r in per_h.items()))
        for hz in next(iter(hs.values())):
            f = min(hs, key=lambda k: hs[k][hz]["ratio"])
            print(f"  h{hz}: best f = {f}, ratio {hs[f][hz]['ratio']:.4f}")
        print("pooled, adaptive conformal widths with step eta (causal, no hindsight):")
        for eta, per_h in out["aci"].items():
            print(f"  eta = {eta:<5} " + "  ".join(f"h{hz} {r['ratio']:.4f}/{r['cov']:.3f}"
                                                 for hz, r in per_h.items()))
        print("pooled, sqrt(w prior² + (1-w) EWMA²) × f, best lambda, w, f with hindsight:")
        for hz, r in out["combined"].items():
            print(f"  h{hz}: {r['ratio']:.4f}/{r['cov']:.3f} (lambda {r['lambda']}, "
                  f"w {r['w']}, f {r['f']})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hourly", action="store_true", help="the hourly pair instead")
    ap.add_argument("--config", choices=sorted(CONFIGS), action="append",
                    help="hourly: which configs (default both)")
    ap.add_argument("--period", choices=sorted(PERIODS), action="append",
                    help="hourly: which years (default both)")
    ap.add_argument("--history-days", type=float, default=3.0,
                    help="minute pair: days before the first issue time (default 3)")
    ap.add_argument("--no-check", action="store_true", help="skip the self-check")
    ap.add_argument("--hindsight", action="store_true",
                    help="also the band scaled by each factor in a grid (see above)")
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    results: dict[str, Any] = {}
    if args.hourly:
        g = Grid.load([ROOT / "daemon" / "sample" / f for f in HOURLY_FILES], HOUR_MS,
                      pad=max(c.train_window for c in CONFIGS.values()))
        for cname in args.config or ["default", "protocol"]:
            for per in args.period or ["2019", "2020"]:
                a, b = (int((to_ms(d) - g.ts[0]) // HOUR_MS) for d in PERIODS[per])
                out = replay(g, CONFIGS[cname], a, b, check=not args.no_check,
                             hindsight=args.hindsight)
                show(f"hourly {cname} {per}", out)
                results[f"{cname} {per}"] = out
    else:
        cfg = CONFIGS["default"]
        g = Grid.load([ROOT / "tests" / "bench" / "data" / f for f in MINUTE_FILES], MINUTE_MS,
                      pad=cfg.train_window)
        first = int(np.flatnonzero(np.isfinite(g.raw[3]).any(axis=1))[0])
        a = first + int(args.history_days * 1440)
        out = replay(g, cfg, a, len(g.ts), check=not args.no_check, hindsight=args.hindsight)
        show("1-minute Coinbase pair, 2023-03-04 .. 03-10", out)
        results["minute"] = out
        pooled = out["table"]["pooled"]
        per_sym = [out["table"][s] for s in SYMBOLS]
        results["meets_target"] = {
            "pooled": all(r["ratio"] <= TARGET and 0.78 <= r["prior"]["cov"] <= 0.82
                          for r in pooled.values()),
            "per_symbol": all(r["ratio"] <= TARGET and 0.78 <= r["prior"]["cov"] <= 0.82
                              for t in per_sym for r in t.values())}
        print(f"\ntarget (ratio <= {TARGET}, coverage 0.78-0.82 at every horizon): "
              f"{results['meets_target']}")
    results["wall_s"] = round(time.monotonic() - t0, 1)
    emit(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())

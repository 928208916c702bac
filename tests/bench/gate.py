"""The median gate's error rates with the real network: how often a retrain moves the median
on prices without skill, and how often it moves it where a lead exists.

    python tests/bench/gate.py                    # 20 series x 5 retrains of each kind
    python tests/bench/gate.py --series 4 --retrains 2   # a smoke run

Each series is 1-minute-like synthetic candles of two symbols sharing GARCH(1,1) volatility
(`tests/helpers/forecaster.garch_returns`): "random walk" as they are, "lead b" with B's
next return carrying b x A's last return. The seq2seq (lookback 60, horizon 15, stored
horizons 1/5/15, otherwise default sizes and budget) trains first on 3,000 candles, then
warm-starts every 60 new candles, as the daemon does; every decision of the gate is
counted. Reported: the share of retrains that moved the median anywhere (the false-positive
rate on the random walk; the design bound is 5 %), and per lead strength the share that
moved B at h1 with the out-of-sample MASE of B h1 over the last 600 candles.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import torch
from _common import emit

from forecaster.base import Accepted, History
from forecaster.seq2seq import Seq2SeqConfig, Seq2SeqForecaster
from tests.helpers.forecaster import STEP, SYMS, candles_from_returns, garch_returns

FIRST, EVERY = 3000, 60


def series(kind: float, n: int, seed: int) -> History:
    r = garch_returns(n, seed)
    if kind:
        r[1:, 1] += kind * r[:-1, 0]
    return candles_from_returns(r)


def run(kind: float, n_series: int, retrains: int) -> dict[str, Any]:
    moved_any = moved_b1 = decisions = 0
    mase: list[float] = []
    for seed in range(n_series):
        n = FIRST + EVERY * retrains + 600
        h = series(kind, n, 1000 + seed)
        f = Seq2SeqForecaster(Seq2SeqConfig(symbols=SYMS, step_ms=STEP, lookback=60, horizon=15,
                                            horizons=(1, 5, 15), device="cpu"))
        for k in range(retrains + 1):
            out = f.learn(h.rows(slice(0, FIRST + EVERY * k)))
            if not isinstance(out, Accepted):
                continue
            f.adopt(out.candidate)
            cells = out.stats.evidence["cells"] if out.stats.evidence else []
            decisions += 1
            moved_any += any(c["moved"] for c in cells)
            moved_b1 += any(c["moved"] and c["symbol"] == SYMS[1] and c["horizon"] == 1
                            for c in cells)
        end = FIRST + EVERY * retrains
        err = nv = 0.0
        for t in range(end, n - 1):
            o = f.forecast(h.rows(slice(max(0, t + 1 - f.context), t + 1)), [1])[1]
            y = h.close[t + 1, 1]
            err += abs(o.yhat - y)
            nv += abs(h.close[t, 1] - y)
        mase.append(err / nv)
    return {"decisions": decisions, "moved_any": moved_any, "moved_b_h1": moved_b1,
            "moved_any_rate": round(moved_any / max(decisions, 1), 4),
            "b_h1_mase_mean": round(float(np.mean(mase)), 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--series", type=int, default=20)
    ap.add_argument("--retrains", type=int, default=4)
    ap.add_argument("--leads", type=float, nargs="*", default=[0.1, 0.3])
    ap.add_argument("--threads", type=int, default=1, help="torch threads (small networks: 1)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    res: dict[str, Any] = {}
    for kind in [0.0, *args.leads]:
        t = time.monotonic()
        name = "random_walk" if kind == 0 else f"lead_{kind}"
        res[name] = run(kind, args.series, args.retrains)
        res[name]["seconds"] = round(time.monotonic() - t, 1)
        print(name, res[name], flush=True)
    emit({"bench": "gate", "series": args.series, "retrains_each": args.retrains, **res})


if __name__ == "__main__":
    main()

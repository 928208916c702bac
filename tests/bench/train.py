"""Training-step speed of the seq2seq forecaster in its default configuration, on real data.

    python tests/bench/train.py [--steps 50] [--device auto|cpu|cuda] [--threads N]
    python tests/bench/train.py --threads 1        # the retrain budget on one core

Data: the last 20160 hourly candles of the bundled Bitstamp BTC/USD and BTC/EUR samples, as
one History of 2 symbols (open, high, low, close, volume). Config: Seq2SeqConfig defaults
(lookback 240, horizon 60, batch 64, hidden 32, 2 GRU layers, patch 4). For CPU, and for
CUDA when torch sees a GPU (same code):

* learn(history) with the default budget: a first training (model.epochs = 4 passes over
  the training windows, at most model.initial_steps) and warm starts (model.retrain_epochs
  = 0.1 pass, at most model.retrain_steps) on the same history: what a background retrain of
  the daemon costs, everything learn does included (the prior, the tensors, the
  prequential record, validation of three candidates, the gates); issue 18's budget is
  60 s on one CPU core (`--threads 1`);
* the pure optimiser loop: the forecaster's own windows and training loop
  (`training.build`, `training.fit`), timed after warm-up steps: ms/step and windows/s =
  batch * steps / s;
* forecast latency (median of repeats): as served (the network is skipped when validation
  gave it no weight) and with the network always run.
"""

from __future__ import annotations

import argparse
import gzip
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from _common import ROOT, emit, peak_rss_mb

from forecaster import training, windows
from forecaster.base import Accepted, History
from forecaster.device import describe, resolve
from forecaster.scaling import Normaliser
from forecaster.seq2seq import Seq2SeqConfig, Seq2SeqForecaster

ROWS = 20160
HOUR = 3_600_000
SYMBOLS = ("BTC/USD", "BTC/EUR")
HORIZONS = [1, 5, 15, 30, 60]  # deploy/config.example.toml's horizons


def load(rows: int) -> History:
    cols = []
    for sym in SYMBOLS:
        path = ROOT / f"daemon/sample/bitstamp_{sym.replace('/', '-')}_1h_2017-11_2020-12.csv.gz"
        with gzip.open(path, "rt") as f:
            cols.append(np.loadtxt(f, delimiter=",", skiprows=1)[-rows:])
    if not np.array_equal(cols[0][:, 0], cols[1][:, 0]):
        raise ValueError("the USD and EUR samples do not share timestamps")
    ts = cols[0][:, 0].astype(np.int64)

    def col(j: int) -> np.ndarray:
        return np.stack([c[:, j] for c in cols], axis=1)

    return History(ts, col(4), col(5), SYMBOLS, HOUR, col(1), col(2), col(3))


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def timed(dev: torch.device, fn: Callable[[], Any]) -> tuple[float, Any]:
    sync(dev)
    t = time.perf_counter()
    out = fn()
    sync(dev)
    return time.perf_counter() - t, out


def bench_learn(cfg: Seq2SeqConfig, h: History, warm_starts: int) -> dict[str, Any]:
    f = Seq2SeqForecaster(cfg)
    dev = f.device
    runs = []
    for i in range(1 + warm_starts):
        dt, out = timed(dev, lambda: f.learn(h))
        if isinstance(out, Accepted):
            f.adopt(out.candidate)
        runs.append({"kind": "first" if i == 0 else "warm", "learn_s": round(dt, 3),
                     "steps": out.stats.steps,
                     "ms_per_step": round(1000 * dt / max(1, out.stats.steps), 2),
                     "outcome": type(out).__name__, "n_windows": out.stats.n_windows})
        print(f"  learn ({runs[-1]['kind']}): {dt:.2f} s for {out.stats.steps} steps = "
              f"{runs[-1]['ms_per_step']} ms/step; {out.reason}", flush=True)
    return {"runs": runs, "forecaster": f}


def bench_pure(cfg: Seq2SeqConfig, h: History, steps: int, warmup: int) -> dict[str, Any]:
    """The optimiser loop alone, on the windows learn builds, through its own loop."""
    f = Seq2SeqForecaster(cfg)
    dev = resolve(cfg.device)
    ends = windows.valid_ends(h, cfg.lookback, cfg.horizon)
    ends = ends[ends >= 100]
    norm = Normaliser.fit(h, ends, cfg.horizon)
    w = training.build(h, windows.row_features(h), ends, norm, cfg.horizon, dev)
    torch.manual_seed(cfg.seed)
    net = f._new_net().to(dev)  # noqa: SLF001 - a benchmark

    def fit(n: int, seed: int) -> training.Run:
        return training.fit(net, w, norm, lookback=cfg.lookback, steps=n, batch=cfg.batch_size,
                            lr=cfg.learning_rate, grad_clip=cfg.grad_clip,
                            rng=np.random.default_rng(seed))

    fit(warmup, cfg.seed)
    dt, out = timed(dev, lambda: fit(steps, cfg.seed + 1))
    ms = 1000 * dt / steps
    wps = cfg.batch_size * steps / dt
    print(f"  pure loop: {ms:.2f} ms/step, {wps:,.0f} windows/s (loss {out.loss:.4f})",
          flush=True)
    return {"steps": steps, "warmup_steps": warmup, "seconds": round(dt, 3),
            "ms_per_step": round(ms, 2), "windows_per_s": round(wps, 1)}


def bench_forecast(f: Seq2SeqForecaster, h: History, repeats: int) -> dict[str, Any]:
    dev = f.device
    window = h.tail(f.context)
    out: dict[str, Any] = {"horizons": HORIZONS, "served_uses_network": bool(
        f.fitted is not None and f.fitted.uses_network)}
    real = type(f.fitted).uses_network
    for name, force in (("served_ms", None), ("with_network_ms", True)):
        if force:
            type(f.fitted).uses_network = property(lambda self: True)  # type: ignore[assignment]
        try:
            f.forecast(window, HORIZONS)  # warm-up
            samples = [timed(dev, lambda: f.forecast(window, HORIZONS))[0] * 1000
                       for _ in range(repeats)]
        finally:
            type(f.fitted).uses_network = real  # type: ignore[method-assign]
        out[name] = round(statistics.median(samples), 3)
    print(f"  forecast: {out['served_ms']} ms as served, {out['with_network_ms']} ms with the "
          "network", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                    help="auto: CPU, and CUDA too when available")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default: all cores but one, as the product)")
    ap.add_argument("--warm-starts", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=20, help="forecast timing repeats")
    args = ap.parse_args()
    torch.set_num_threads(args.threads or max(1, (os.cpu_count() or 2) - 1))
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: torch sees no CUDA device here")
    devices = {"auto": ["cpu"] + (["cuda"] if torch.cuda.is_available() else []),
               "cpu": ["cpu"], "cuda": ["cuda"]}[args.device]
    h = load(ROWS)
    results: dict[str, Any] = {}
    for d in devices:
        cfg = Seq2SeqConfig(symbols=SYMBOLS, step_ms=HOUR, horizons=tuple(HORIZONS), device=d)
        dev = resolve(d)
        print(f"{describe(dev)}:", flush=True)
        learn = bench_learn(cfg, h, args.warm_starts)
        pure = bench_pure(cfg, h, args.steps, warmup=5)
        fc = bench_forecast(learn.pop("forecaster"), h, args.repeats)
        first = learn["runs"][0]["ms_per_step"]
        warm = min((r["ms_per_step"] for r in learn["runs"][1:]), default=None)
        learn["first_s"] = learn["runs"][0]["learn_s"]
        learn["warm_s_max"] = max((r["learn_s"] for r in learn["runs"][1:]), default=None)
        results[d] = {
            "device": describe(dev), **learn, "pure": pure, "forecast": fc,
            # What learn spends beyond the optimiser steps, per step. The first learn of a
            # process also pays one-off costs (lazy torch imports when Adam is first built,
            # first allocations), which the warm starts do not.
            "learn_overhead_ms_per_step": {
                "first": round(first - pure["ms_per_step"], 2),
                "warm": None if warm is None else round(warm - pure["ms_per_step"], 2)},
        }
    cfg = Seq2SeqConfig(symbols=SYMBOLS, step_ms=HOUR)
    emit({
        "benchmark": "train", "rows": len(h), "steps": args.steps,
        "config": {k: getattr(cfg, k) for k in ("lookback", "horizon", "rnn", "hidden", "layers",
                                                "patch", "batch_size", "dropout", "epochs",
                                                "retrain_epochs", "initial_steps",
                                                "retrain_steps")},
        "symbols": list(SYMBOLS), "devices": results, "peak_rss_mb": round(peak_rss_mb(), 1),
    })


if __name__ == "__main__":
    main()

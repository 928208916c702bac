"""Training-step speed of the seq2seq forecaster in its default configuration, on real data.

    python tests/bench/train.py [--steps 50] [--device auto|cpu|cuda] [--threads N]

Data: the last 20160 hourly candles of the bundled Bitstamp BTC/USD and BTC/EUR samples, as
one History of 2 symbols. Config: Seq2SeqConfig defaults (lookback 240, horizon 60, batch 128,
hidden 32, 2 GRU layers, patch 4). For CPU, and for CUDA when torch sees a GPU (same code):

* learn(history, steps=N): a first training, then warm starts on the same history; reported
  as total seconds and ms/step = seconds / steps, everything learn does included (building
  the tensors, validation, the previous model's validation on warm starts, calibration);
* the pure optimiser loop: Seq2Seq + pinball on batches gathered like Seq2SeqForecaster's
  _tensors/_batch, timed after warm-up steps: ms/step and windows/s = batch * steps / s;
* forecast latency for one window and for forecast_many of 64 windows (median of repeats).
"""

from __future__ import annotations

import argparse
import gzip
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from _common import ROOT, emit, peak_rss_mb

from forecaster import windows
from forecaster.base import History
from forecaster.device import describe, resolve
from forecaster.model import Seq2Seq, pinball
from forecaster.scaling import Scaler
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
    return History(ts, np.stack([c[:, 4] for c in cols], axis=1),
                   np.stack([c[:, 5] for c in cols], axis=1), SYMBOLS, HOUR)


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def timed(dev: torch.device, fn: Callable[[], Any]) -> tuple[float, Any]:
    sync(dev)
    t = time.perf_counter()
    out = fn()
    sync(dev)
    return time.perf_counter() - t, out


def bench_learn(cfg: Seq2SeqConfig, h: History, steps: int, warm_starts: int) -> dict[str, Any]:
    f = Seq2SeqForecaster(cfg)
    dev = f.device
    runs = []
    for i in range(1 + warm_starts):
        dt, res = timed(dev, lambda: f.learn(h, steps=steps))
        runs.append({"kind": "first" if i == 0 else "warm", "learn_s": round(dt, 3),
                     "steps": res.steps, "ms_per_step": round(1000 * dt / max(1, res.steps), 2),
                     "accepted": res.accepted, "n_windows": res.n_windows})
        print(f"  learn ({runs[-1]['kind']}): {dt:.2f} s for {res.steps} steps = "
              f"{runs[-1]['ms_per_step']} ms/step; {res.reason}", flush=True)
    return {"runs": runs, "forecaster": f}


def bench_pure(cfg: Seq2SeqConfig, h: History, steps: int, warmup: int) -> dict[str, Any]:
    """The optimiser loop alone, with inputs prepared the way learn prepares them."""
    dev = resolve(cfg.device)
    s = len(cfg.symbols)
    feats = windows.raw_features(h)
    ends = windows.valid_ends(h, cfg.lookback, cfg.horizon)
    scaler = Scaler.fit(feats, s)
    x = torch.as_tensor(np.nan_to_num(scaler.inputs(feats), nan=0.0), dtype=torch.float32,
                        device=dev)
    y = torch.as_tensor(scaler.scale_targets(windows.targets(h.close, ends, cfg.horizon)),
                        dtype=torch.float32, device=dev)
    fut = torch.as_tensor(windows.future_time(h.ts[ends], cfg.step_ms, cfg.horizon),
                          dtype=torch.float32, device=dev)
    ends_t = torch.as_tensor(ends, dtype=torch.long, device=dev)
    offs = torch.arange(-cfg.lookback + 1, 1, device=dev)
    torch.manual_seed(cfg.seed)
    net = Seq2Seq(cfg.n_features, s, cfg.horizon, hidden=cfg.hidden, layers=cfg.layers,
                  dropout=cfg.dropout, rnn=cfg.rnn, patch=cfg.patch).to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.learning_rate)
    net.train()
    rng = np.random.default_rng(cfg.seed)
    train_pos = np.arange(len(ends))

    def step() -> torch.Tensor:
        pos = rng.choice(train_pos, size=min(cfg.batch_size, len(train_pos)), replace=False)
        p = torch.as_tensor(pos, dtype=torch.long, device=dev)
        rows = ends_t[p][:, None] + offs[None, :]
        loss = pinball(net(x[rows], fut[p]), y[p])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
        opt.step()
        return loss.detach()

    for _ in range(warmup):  # first calls pay for allocations and kernel selection
        step()

    def loop() -> torch.Tensor:
        last = torch.zeros(())
        for _ in range(steps):
            last = step()
        return last

    dt, last = timed(dev, loop)
    ms = 1000 * dt / steps
    wps = cfg.batch_size * steps / dt
    print(f"  pure loop: {ms:.2f} ms/step, {wps:,.0f} windows/s (loss {float(last):.4f})",
          flush=True)
    return {"steps": steps, "warmup_steps": warmup, "seconds": round(dt, 3),
            "ms_per_step": round(ms, 2), "windows_per_s": round(wps, 1)}


def bench_forecast(f: Seq2SeqForecaster, h: History, repeats: int) -> dict[str, Any]:
    dev = f.device
    span = f.config.lookback + 1
    one = h.tail(span)
    many = [History(h.ts[k - span:k], h.close[k - span:k], h.volume[k - span:k], h.symbols,
                    h.step_ms) for k in range(len(h) - 63, len(h) + 1)]
    out: dict[str, Any] = {"horizons": HORIZONS}
    for name, call in (("one_window_ms", lambda: f.forecast(one, HORIZONS)),
                       ("many_64_windows_ms", lambda: f.forecast_many(many, HORIZONS))):
        call()  # warm-up
        samples = [timed(dev, call)[0] * 1000 for _ in range(repeats)]
        out[name] = round(statistics.median(samples), 3)
        out[name.replace("_ms", "_min_ms")] = round(min(samples), 3)
    out["many_64_per_window_ms"] = round(out["many_64_windows_ms"] / 64, 3)
    print(f"  forecast: one window {out['one_window_ms']} ms, 64 windows "
          f"{out['many_64_windows_ms']} ms", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                    help="auto: CPU, and CUDA too when available")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--warm-starts", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=20, help="forecast timing repeats")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: torch sees no CUDA device here")
    devices = {"auto": ["cpu"] + (["cuda"] if torch.cuda.is_available() else []),
               "cpu": ["cpu"], "cuda": ["cuda"]}[args.device]
    h = load(ROWS)
    results: dict[str, Any] = {}
    for d in devices:
        cfg = Seq2SeqConfig(symbols=SYMBOLS, step_ms=HOUR, device=d)
        dev = resolve(d)
        print(f"{describe(dev)}:", flush=True)
        learn = bench_learn(cfg, h, args.steps, args.warm_starts)
        pure = bench_pure(cfg, h, args.steps, warmup=5)
        fc = bench_forecast(learn.pop("forecaster"), h, args.repeats)
        first = learn["runs"][0]["ms_per_step"]
        warm = min((r["ms_per_step"] for r in learn["runs"][1:]), default=None)
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
                                                "patch", "batch_size", "dropout")},
        "symbols": list(SYMBOLS), "devices": results, "peak_rss_mb": round(peak_rss_mb(), 1),
    })


if __name__ == "__main__":
    main()

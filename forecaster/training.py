"""Tensors and the optimisation loop of the seq2seq: windows on the device, the one gather
that builds encoder inputs (training, validation and live forecasts alike), epochs of Adam
steps, and batched prediction.

A window ending at row t reads rows t−L+1 .. t of the row features; its returns and
ranges are divided by the issue-time one-step volatility, volume is standardised by the
training window, and everything is clipped and NaN-free before it reaches the network.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from . import windows
from .base import History
from .network import Seq2Seq, pinball
from .optim import Adam
from .scaling import CLIP, Normaliser, Scales

PREDICT_BATCH = 512


@dataclass
class Windows:
    """Windows of one history, normalised, on the device; targets only where known."""

    rows: torch.Tensor  # (n, F) row features, volume standardised
    ends: torch.Tensor  # (m,) row index of each window's last input row
    sigma1: torch.Tensor  # (m, S)
    fut: torch.Tensor  # (m, H, n_future) decoder inputs
    scales: Scales
    y: torch.Tensor | None = None  # (m, H, S) standardised targets
    moves: np.ndarray | None = None  # (m, H, S) raw cumulative log returns

    def __len__(self) -> int:
        return len(self.ends)


def build(h: History, rows: np.ndarray, ends: np.ndarray, norm: Normaliser, horizon: int,
          device: torch.device, *, targets: bool = True, scales: Scales | None = None
          ) -> Windows:
    """Windows of `h` ending at rows `ends` (features `rows` = windows.row_features(h)).

    With `targets`, every end needs its `horizon` outcomes inside `h`. `scales` may be given
    when they are already known (a live forecast computes them in O(n) for the last row).
    """
    sc = scales if scales is not None else norm.scales(h, ends, horizon)
    s = len(h.symbols)
    feats = rows.copy()
    feats[:, 2 * s:3 * s] = (feats[:, 2 * s:3 * s] - norm.vol_mean) / norm.vol_std
    w = Windows(
        rows=torch.as_tensor(feats, dtype=torch.float32, device=device),
        ends=torch.as_tensor(ends, dtype=torch.long, device=device),
        sigma1=torch.as_tensor(sc.sigma1, dtype=torch.float32, device=device),
        fut=torch.as_tensor(future_inputs(h.ts[ends], sc, h.step_ms, horizon),
                            dtype=torch.float32, device=device),
        scales=sc,
    )
    if targets:
        w.moves = windows.targets(h.close, ends, horizon)
        w.y = torch.as_tensor(norm.targets(w.moves, sc), dtype=torch.float32, device=device)
    return w


def gather(w: Windows, pos: torch.Tensor, lookback: int) -> torch.Tensor:
    """Encoder inputs (B, L, F) of windows `pos`: returns and ranges in units of the
    issue-time volatility, clipped at ±CLIP, NaN (a missing volume) as the mean 0."""
    s = w.sigma1.shape[1]
    offs = torch.arange(-lookback + 1, 1, device=w.rows.device)
    x = w.rows[w.ends[pos][:, None] + offs[None, :]].clone()
    sig = w.sigma1[pos][:, None, :]
    x[..., :s] = x[..., :s] / sig
    x[..., s:2 * s] = x[..., s:2 * s] / sig
    return torch.nan_to_num(x.clamp(-CLIP, CLIP), nan=0.0)


def future_inputs(ts_end: np.ndarray, sc: Scales, step_ms: int, horizon: int) -> np.ndarray:
    """Decoder inputs (m, H, 5 + 2S): calendar, step, the prior's path shape, the regime."""
    m = len(ts_end)
    cal = windows.future_time(ts_end, step_ms, horizon)
    step = np.broadcast_to(np.linspace(0.0, 1.0, horizon)[None, :, None], (m, horizon, 1))
    k = np.arange(1, horizon + 1, dtype=np.float64)[None, :, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        shape = np.log(sc.path_sd ** 2 / (k * sc.sigma1[:, None, :] ** 2))
    shape = np.clip(np.nan_to_num(shape), -3.0, 3.0)
    regime = np.broadcast_to(sc.regime[:, None, :], (m, horizon, sc.regime.shape[1]))
    return np.concatenate([cal, step, shape, regime], axis=2)


def init_highway(net: Seq2Seq, w: Windows, lookback: int, penalty: float = 1e-3) -> None:
    """Start a new network's highway at the least-squares fit of the standardised targets
    on its inputs (ridge with a small penalty), so the epochs that follow refine a linear
    lead–lag instead of having to find it from zero with noisy gradients; the rest of the
    network then learns what is left. A warm start keeps the highway it has."""
    assert w.y is not None
    pos = torch.arange(len(w), device=w.rows.device)
    x = gather(w, pos, lookback)[:, lookback - net.lags:, :net.n_symbols].reshape(len(w), -1)
    y = w.y.reshape(len(w), -1)
    x, y = x.double(), y.double()
    gram = x.T @ x + penalty * len(w) * torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
    coef = torch.linalg.solve(gram, x.T @ y)  # (lags * S, H * S)
    if torch.isfinite(coef).all():
        with torch.no_grad():
            net.highway.weight.copy_(coef.T.to(net.highway.weight.dtype))


@dataclass(frozen=True)
class Run:
    """How an optimisation went: steps taken, the mean loss of its last quarter, and why
    it ended early (a non-finite loss or gradient, or a stop request)."""

    steps: int
    loss: float | None
    error: str | None = None
    stopped: bool = False


def n_steps(n_windows: int, epochs: float, batch: int, cap: int) -> int:
    """Optimiser steps for `epochs` passes over `n_windows`, at most `cap` (the budget).

    >>> n_steps(16_000, 4, 64, 2000), n_steps(16_000, 1, 64, 2000), n_steps(100, 1, 64, 9)
    (1000, 250, 2)
    """
    return max(1, min(cap, math.ceil(epochs * n_windows / batch)))


def draw(m: int, steps: int, batch: int, rng: np.random.Generator) -> np.ndarray:
    """Minibatches (steps, min(batch, m)) of window positions 0..m-1, drawn epoch by epoch:
    each window once per pass, in a shuffled order.

    >>> b = draw(10, 5, 4, np.random.default_rng(1))  # 20 draws: two whole passes
    >>> b.shape, sorted(b.ravel().tolist()) == sorted(2 * list(range(10)))
    ((5, 4), True)
    """
    size = min(batch, m)
    out = np.empty((steps, size), dtype=np.int64)
    order = np.zeros(0, dtype=np.int64)
    for step in range(steps):
        if len(order) < size:
            order = np.concatenate([order, rng.permutation(m)])
        out[step], order = order[:size], order[size:]
    return out


def fit(net: Seq2Seq, w: Windows, norm: Normaliser, *, lookback: int, steps: int, batch: int,
        lr: float, grad_clip: float, rng: np.random.Generator | None = None,
        batches: np.ndarray | None = None,
        should_stop: Callable[[], bool] | None = None) -> Run:
    """`steps` Adam steps on minibatches (`batches`, or drawn from `rng` by `draw`), with
    gradient clipping; stops at the first non-finite number."""
    assert w.y is not None
    if batches is None:
        assert rng is not None, "fit needs the minibatches or a generator to draw them"
        batches = draw(len(w), steps, batch, rng)
    # Adam: robust to the very different gradient scales of the encoder, the head and the
    # highway; a constant rate because warm starts are short and many.
    opt = Adam(net.parameters(), lr=lr)
    net.train()
    losses: list[float] = []
    base = torch.as_tensor(norm.base, dtype=torch.float32, device=w.rows.device)
    for step in range(steps):
        if should_stop is not None and should_stop():
            return Run(step, _mean(losses), stopped=True)
        pos = torch.as_tensor(batches[step], dtype=torch.long, device=w.rows.device)
        loss = pinball(net(gather(w, pos, lookback), w.fut[pos], base), w.y[pos])
        if not torch.isfinite(loss):
            return Run(step, _mean(losses), f"non-finite training loss at step {step}")
        opt.zero_grad()
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(net.parameters(), grad_clip)
        if not torch.isfinite(grad_norm):
            return Run(step, _mean(losses), f"non-finite gradient at step {step}")
        opt.step()
        losses.append(float(loss.detach()))
    net.eval()
    return Run(steps, _mean(losses[-max(1, steps // 4):]))


def predict(net: Seq2Seq, w: Windows, norm: Normaliser, lookback: int) -> torch.Tensor:
    """Quantiles (m, H, S, 3) in standardised units, batch by batch, without gradients."""
    net.eval()
    outs = []
    base = torch.as_tensor(norm.base, dtype=torch.float32, device=w.rows.device)
    with torch.inference_mode():
        for k in range(0, len(w), PREDICT_BATCH):
            pos = torch.arange(k, min(k + PREDICT_BATCH, len(w)), device=w.rows.device)
            outs.append(net(gather(w, pos, lookback), w.fut[pos], base))
    if not outs:
        return torch.zeros((0, w.fut.shape[1], w.sigma1.shape[1], 3), device=w.rows.device)
    return torch.cat(outs)


def predict_raw(net: Seq2Seq, w: Windows, norm: Normaliser, lookback: int) -> np.ndarray:
    """Quantiles (m, H, S, 3) of the raw cumulative log return, as the network forecasts."""
    q = predict(net, w, norm, lookback).double().cpu().numpy()
    return norm.unscale(q, w.scales)


def seed_for(base: int, end_ts: int) -> int:
    """A seed that depends only on the config seed and the data's end: runs are
    reproducible, and replay equals live for the same data."""
    h = hashlib.sha256(f"{base}:{end_ts}".encode()).digest()
    return int.from_bytes(h[:4], "little")


def _mean(xs: list[float]) -> float | None:
    return float(np.mean(xs)) if xs else None

"""Judging a candidate network as it would serve: gate its median, blend its band, then
score the served quantiles on the validation slice.

Comparing raw networks would judge what nobody is served: a network that learned a real
lead at one symbol and horizon but is noisy at the fifteen other cells loses on the raw
loss, although the gates would serve only the cell where it is better. So every
candidate (the trained network, the network it started from under the refreshed prior,
and the model in use as it serves today) is scored by the pinball loss of its served
quantiles, in units of the refreshed prior's volatility.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from . import blend, calibration
from .evidence import Record
from .network import QUANTILES
from .scaling import Normaliser, Scales

RAW_SLACK = 1.25  # how much worse its own quantiles may be for a tied network to stay


@dataclass(frozen=True)
class Verdict:
    alpha: np.ndarray  # (H, S)
    gamma: np.ndarray  # (H,)
    widen: np.ndarray  # (H,)
    proof: dict[str, Any]  # the median gate's evidence, as JSON
    loss: float  # pinball of the served quantiles, standardised
    raw_loss: float  # pinball of the network's own quantiles, unserved

    def beats(self, other: Verdict) -> bool:
        """Whether this network should serve (and be the next warm start) rather than
        `other`: a lower served loss; on a tie (the gates served neither, both are the
        prior around the last close) the one that learned, unless its own quantiles are
        far off (RAW_SLACK): noisy at some cells is how a network learning a real lead
        looks, exploded weights are not."""
        if not np.isfinite(self.loss):
            return False
        tie = abs(self.loss - other.loss) <= 1e-9 * max(abs(other.loss), 1e-12)
        if not tie:
            return self.loss < other.loss
        return bool(np.isfinite(self.raw_loss) and self.raw_loss <= RAW_SLACK * other.raw_loss)


def served_loss(lo: np.ndarray, med: np.ndarray, hi: np.ndarray, moves: np.ndarray,
                path_sd: np.ndarray) -> float:
    """Mean pinball loss of served (lower, median, upper) log returns, each (v, H, S),
    against the moves, all divided by the prior's path spread (so every horizon and
    regime weighs alike, as in training).

    >>> y = np.zeros((1, 1, 1)); sd = np.ones((1, 1, 1))
    >>> served_loss(y - 1, y, y + 1, y, sd)  # (0.1 + 0 + 0.1) / 3
    0.06666666666666667
    """
    q = np.stack([lo, med, hi], axis=-1) / path_sd[..., None]
    diff = (moves / path_sd)[..., None] - q
    qs = np.asarray(QUANTILES)
    return float(np.mean(np.maximum(qs * diff, (qs - 1) * diff)))


def judge(raw: np.ndarray, norm: Normaliser, sc: Scales, moves: np.ndarray,
          record: Record, val_ts: np.ndarray, stored: list[int],
          symbols: tuple[str, ...]) -> Verdict:
    """Gates and served loss of a network whose raw validation quantiles are `raw`
    (v, H, S, 3) log returns, under the refreshed normaliser `norm` and scales `sc`."""
    alpha, proof = median_gate(record, val_ts, raw[..., 1], moves, stored, symbols)
    prior = blend.prior_band(norm, sc)
    gamma = calibration.band_weight(prior, (raw[..., 0], raw[..., 2]), moves)
    lo, _, hi = blend.blend(raw, prior, alpha, gamma)
    # The prior's band is calibrated already; only a band the network moved is widened.
    widen = calibration.widen(lo, hi, moves) * (gamma > 0)
    lo, med, hi = blend.serve(raw, prior, alpha, gamma, widen)
    return Verdict(alpha, gamma, widen, proof, served_loss(lo, med, hi, moves, sc.path_sd),
                   served_loss(raw[..., 0], raw[..., 1], raw[..., 2], moves, sc.path_sd))


def median_gate(record: Record, val_ts: np.ndarray, med: np.ndarray, moves: np.ndarray,
                stored: list[int], symbols: tuple[str, ...]) -> tuple[np.ndarray, dict[str, Any]]:
    """alpha (H, S) and the evidence behind it: the record before the validation slice,
    then the candidate's own validation windows, judged by `calibration.median_gate`."""
    k = np.asarray(stored) - 1
    y = moves[:, k, :].reshape(len(moves), -1)
    d_val = np.abs(y - med[:, k, :].reshape(len(med), -1)) - np.abs(y)
    d_rec, y_rec = record.before(int(val_ts[0]))
    cells = calibration.median_gate(np.concatenate([d_rec, d_val]),
                                    np.concatenate([y_rec, np.abs(y)]), stored, symbols)
    alpha = np.zeros(moves.shape[1:])
    for c in cells:
        alpha[c.horizon - 1, symbols.index(c.symbol)] = float(c.moved)
    proof = {"test": "one-sided Diebold-Mariano on |error| against the last close, "
                     "Bonferroni over the cells", "family_alpha": calibration.FAMILY_ALPHA,
             "n_record": len(d_rec), "n_validation": len(d_val),
             "cells": [c.to_json() for c in cells]}
    return alpha, proof


def median_note(proof: dict[str, Any]) -> str:
    """One line for logs and training_runs.reason: where the median moved, or the best
    cell and why it stayed."""
    cells = proof.get("cells", [])
    moved = [c for c in cells if c["moved"]]
    if moved:
        return "median moves at " + ", ".join(
            f"{c['symbol']} h{c['horizon']} ({100 * c['gain']:+.2f}% ± {100 * c['se']:.2f}%)"
            for c in moved)
    judged = [c for c in cells if c["gain"] is not None and c["se"]]
    if not judged:
        return "median stays at the last close (too few out-of-sample windows to judge)"
    best = min(judged, key=lambda c: c["gain"] / c["se"])
    return (f"median stays at the last close (best {best['symbol']} h{best['horizon']} "
            f"{100 * best['gain']:+.2f}% ± {100 * best['se']:.2f}% of MAE, n {best['n']}, "
            f"needs {best['z']:.2f} se)")

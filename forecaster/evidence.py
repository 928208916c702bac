"""The prequential record: how the network's raw median did on the forecasts it would have
issued, judged only once their outcome was known.

Validation alone is too small a sample to see the edge that is learnable in minute prices
(about 1 % of the MAE needs some 10,000 windows; a 20 % validation slice of a two-week
window holds 4,000). So every retrain also extends a running record, as river evaluates
a stream: the network in use predicts (raw median, never gated) every issue time since
the record ends, from windows that end at that time; the prediction is kept until its
outcomes are in the history, then turned into the loss differential d = |y − m| − |y|
against the last close. Each issue time is judged once, by the network that was in use
then: nothing it was trained on, nothing after it was issued. The record travels with the
model (in its checkpoint), so a restarted daemon keeps it, and a rejected retrain leaves
it to be extended again from the same point by the same network.

Cells are the stored horizons × symbols, horizon-major, as `calibration.median_gate`
reads them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from . import windows
from .base import History

KEEP = 10_080  # resolved issue times kept: a week of minutes (with validation ≈ 14,000)


@dataclass(frozen=True)
class Record:
    end_ts: int  # every issue time <= end_ts has been predicted (or had no window)
    ts: np.ndarray  # (n,) int64 resolved issue times, ascending
    d: np.ndarray  # (n, C) float32 |y - m| - |y|, NaN where the outcome is missing
    y_abs: np.ndarray  # (n, C) float32 |y|
    pending_ts: np.ndarray  # (p,) int64 issue times whose outcomes are not all known yet
    pending_pred: np.ndarray  # (p, C) float32 the raw median, log return

    @classmethod
    def empty(cls, end_ts: int, cells: int) -> Record:
        z = np.zeros((0, cells), dtype=np.float32)
        return cls(int(end_ts), np.zeros(0, np.int64), z, z, np.zeros(0, np.int64), z)

    def before(self, ts: int) -> tuple[np.ndarray, np.ndarray]:
        """(d, |y|) of the resolved issue times before `ts`."""
        k = int(np.searchsorted(self.ts, ts, side="left"))
        return self.d[:k].astype(np.float64), self.y_abs[:k].astype(np.float64)

    def to_tensors(self) -> dict[str, torch.Tensor]:
        return {"record.ts": torch.as_tensor(self.ts), "record.d": torch.as_tensor(self.d),
                "record.y_abs": torch.as_tensor(self.y_abs),
                "record.pending_ts": torch.as_tensor(self.pending_ts),
                "record.pending_pred": torch.as_tensor(self.pending_pred)}

    @classmethod
    def from_tensors(cls, t: dict[str, torch.Tensor], end_ts: int, cells: int) -> Record:
        """The record of a checkpoint; ValueError when its arrays do not fit together."""
        arr = {k: t[f"record.{k}"].numpy() for k in ("ts", "d", "y_abs", "pending_ts",
                                                     "pending_pred")}
        n, p = len(arr["ts"]), len(arr["pending_ts"])
        if arr["d"].shape != (n, cells) or arr["y_abs"].shape != (n, cells) or \
                arr["pending_pred"].shape != (p, cells):
            raise ValueError("the prequential record does not fit the model's cells")
        return cls(int(end_ts), arr["ts"].astype(np.int64), arr["d"].astype(np.float32),
                   arr["y_abs"].astype(np.float32), arr["pending_ts"].astype(np.int64),
                   arr["pending_pred"].astype(np.float32))


def extend(rec: Record, h: History, lookback: int, horizons: list[int],
           predict_median: Callable[[np.ndarray], np.ndarray], keep: int = KEEP) -> Record:
    """The record brought up to the end of `h`.

    predict_median(ends) -> (m, C): the raw median of the network in use at the stored
    horizons for windows of `h` ending at rows `ends`.
    """
    if len(h) == 0 or int(h.ts[-1]) <= rec.end_ts:
        return rec
    step, first = h.step_ms, int(h.ts[0])
    new = windows.input_ends(h, lookback)
    new = new[h.ts[new] > rec.end_ts]
    preds = predict_median(new).astype(np.float32) if len(new) else rec.pending_pred[:0]
    p_ts = np.concatenate([rec.pending_ts, h.ts[new].astype(np.int64)])
    p_pred = np.concatenate([rec.pending_pred, preds])
    # Outcomes known: the longest horizon's target candle is inside h.
    known = p_ts + max(horizons) * step <= int(h.ts[-1])
    rows = (p_ts[known] - first) // step
    inside = rows >= 0  # an issue time older than this history cannot be judged: dropped
    n_s = len(h.symbols)
    lc = np.log(h.close)
    d = np.full((int(inside.sum()), len(horizons) * n_s), np.nan, np.float32)
    y_abs = d.copy()
    r = rows[inside]
    pred = p_pred[known][inside]
    for i, k in enumerate(horizons):
        y = lc[r + k] - lc[r]  # (m, S), NaN where a candle is missing
        m = pred[:, i * n_s:(i + 1) * n_s]
        d[:, i * n_s:(i + 1) * n_s] = np.abs(y - m) - np.abs(y)
        y_abs[:, i * n_s:(i + 1) * n_s] = np.abs(y)
    ts = np.concatenate([rec.ts, p_ts[known][inside]])[-keep:]
    return Record(int(h.ts[-1]), ts,
                  np.concatenate([rec.d, d])[-keep:], np.concatenate([rec.y_abs, y_abs])[-keep:],
                  p_ts[~known], p_pred[~known])

"""A trained seq2seq as one value (`Fitted`), and its checkpoint bytes.

Everything a forecast needs is swapped in as one object, so a reader never sees half a
model. The checkpoint holds the network's weights and the prequential record as tensors,
everything else as JSON (format 3: the network with its highway and the record).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import torch

from . import checkpoint
from .evidence import Record
from .network import Seq2Seq
from .scaling import Normaliser


@dataclass(frozen=True)
class Fitted:
    net: Seq2Seq
    norm: Normaliser
    alpha: np.ndarray  # (H, S) 1 where the median gate let the median move, else 0
    gamma: np.ndarray  # (H,) weight of the network's band against the prior's
    widen: np.ndarray  # (H,) conformal adjustment of the band, in band widths
    version: str
    data_start_ts: int
    data_end_ts: int
    val_loss: float
    record: Record
    evidence: dict[str, Any] = field(default_factory=dict)  # the gate's decision, as JSON

    @property
    def uses_network(self) -> bool:
        """Whether any forecast depends on the network (a median move or a band weight)."""
        return bool(np.any(self.alpha != 0) or np.any(self.gamma != 0))


def version_of(net: Seq2Seq, norm: Normaliser, calib: list[np.ndarray], end_ts: int) -> str:
    """Data end time plus a hash of everything that shapes a forecast."""
    h = hashlib.sha256()
    for k, v in sorted(net.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    h.update(json.dumps(norm.to_json(), sort_keys=True).encode())
    for a in calib:
        h.update(np.ascontiguousarray(a, dtype=np.float64).tobytes())
    when = datetime.fromtimestamp(end_ts / 1000, tz=UTC).strftime("%Y%m%dT%H%MZ")
    return f"{when}-{h.hexdigest()[:8]}"


def dumps(f: Fitted, model: str, config: dict[str, Any]) -> bytes:
    meta = {
        "model": model, "version": f.version, "config": config,
        "normaliser": f.norm.to_json(), "alpha": f.alpha.tolist(), "gamma": f.gamma.tolist(),
        "widen": f.widen.tolist(), "data_start_ts": f.data_start_ts,
        "data_end_ts": f.data_end_ts, "val_loss": f.val_loss,
        "record_end_ts": f.record.end_ts, "evidence": f.evidence,
    }
    return checkpoint.dumps({**f.net.state_dict(), **f.record.to_tensors()}, meta)


def loads(data: bytes, *, model: str, config: dict[str, Any], shape: tuple[str, ...],
          new_net: Callable[[], Seq2Seq], calib_shape: tuple[int, int], cells: int,
          origin: str = "checkpoint") -> Fitted:
    """A `Fitted` from checkpoint bytes made for the same model and network shape;
    CheckpointError naming what does not fit otherwise."""
    tensors, meta = checkpoint.loads(data, origin)
    if meta.get("model") != model:
        raise checkpoint.CheckpointError(f"{origin}: a {meta.get('model')!r} checkpoint")
    if meta.get("format") != checkpoint.FORMAT:
        raise checkpoint.CheckpointError(
            f"{origin}: checkpoint format {meta.get('format')} was made by an older "
            "seq2seq; a new model is trained instead")
    theirs = meta.get("config", {})
    diffs = [f"{k} {theirs.get(k)!r} != {_plain(config[k])!r}" for k in shape
             if _plain(theirs.get(k)) != _plain(config[k])]
    if diffs:
        raise checkpoint.CheckpointError(
            f"{origin}: made for another configuration ({'; '.join(diffs)})")
    net = new_net()
    weights = {k: v for k, v in tensors.items() if not k.startswith("record.")}
    try:
        net.load_state_dict(weights, strict=True)
        norm = Normaliser.from_json(meta["normaliser"])
        alpha, gamma, widen = (np.asarray(meta[k], float) for k in ("alpha", "gamma", "widen"))
        record = Record.from_tensors(tensors, int(meta["record_end_ts"]), cells)
        fitted = Fitted(net, norm, alpha, gamma, widen, str(meta["version"]),
                        int(meta["data_start_ts"]), int(meta["data_end_ts"]),
                        float(meta["val_loss"]), record, dict(meta.get("evidence") or {}))
    except (RuntimeError, KeyError, TypeError, ValueError) as e:
        raise checkpoint.CheckpointError(f"{origin}: weights do not fit: {str(e)[:200]}") \
            from e
    if alpha.shape != calib_shape or widen.shape != calib_shape[:1] or \
            gamma.shape != calib_shape[:1]:
        raise checkpoint.CheckpointError(f"{origin}: calibration has the wrong shape")
    for t in [*weights.values(), torch.as_tensor(alpha), torch.as_tensor(gamma),
              torch.as_tensor(widen)]:
        if not torch.isfinite(t).all():
            raise checkpoint.CheckpointError(f"{origin}: contains non-finite numbers")
    return fitted


def _plain(v: Any) -> Any:
    """Tuples as JSON gives them back (lists), for comparing configs."""
    return list(v) if isinstance(v, tuple) else v

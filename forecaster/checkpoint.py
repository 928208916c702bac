"""Checkpoints: weights plus JSON metadata as bytes, loaded safely.

A checkpoint is a torch zip holding only tensors, strings and numbers, read back with
``torch.load(weights_only=True)``: bytes crafted to execute code on unpickling are
refused instead of run. The bytes live in the store (the ``checkpoints`` table), so any
host serves the model.
"""

from __future__ import annotations

import io
import json
import pickle
import warnings
from typing import Any

import torch

FORMAT = 3  # 3: the highway and the prequential record; 2: the volatility-normalised
# seq2seq; 1: the first seq2seq (files on disk). An older format is refused and retrained.


class CheckpointError(Exception):
    """This checkpoint cannot be used: keep the current model and say why."""


def dumps(state: dict[str, torch.Tensor], meta: dict[str, Any]) -> bytes:
    """Weights + metadata as bytes (tensors moved to the CPU: the same bytes load anywhere)."""
    payload = {
        "format": FORMAT,
        "meta": json.dumps(meta, sort_keys=True),
        "state": {k: v.detach().to("cpu").contiguous() for k, v in state.items()},
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    return buf.getvalue()


def loads(data: bytes, origin: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read bytes written by `dumps`; CheckpointError (naming `origin`) on anything else."""
    try:
        with warnings.catch_warnings():
            # Damaged bytes can look like an exotic pickle protocol; torch warns, then fails.
            warnings.simplefilter("ignore", UserWarning)
            payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"{origin}: refused: contains objects that are not plain "
                              f"weights ({str(e).splitlines()[0][:200]})") from e
    except Exception as e:  # noqa: BLE001 - damaged bytes fail inside torch's unpickler in
        # many ways (IndexError, KeyError, RuntimeError, EOFError, BadZipFile...): all
        # mean the same to the caller, an unusable checkpoint.
        raise CheckpointError(f"{origin}: unreadable or truncated: "
                              f"{type(e).__name__}: {str(e)[:200]}") from e
    if not isinstance(payload, dict) or not {"format", "meta", "state"} <= payload.keys():
        raise CheckpointError(f"{origin}: not a tickcast checkpoint")
    fmt = payload["format"]
    if not isinstance(fmt, int) or fmt > FORMAT:
        raise CheckpointError(f"{origin}: checkpoint format {fmt} is newer than this tickcast "
                              f"understands ({FORMAT})")
    try:
        meta = json.loads(payload["meta"])
    except (TypeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{origin}: metadata is not valid JSON") from e
    if not isinstance(meta, dict):
        raise CheckpointError(f"{origin}: metadata is not a JSON object")
    state = payload["state"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{origin}: weights are not a tensor dictionary")
    meta["format"] = fmt
    return state, meta

"""Checkpoints: weights plus JSON metadata, written atomically, loaded safely.

The file is a torch zip holding only tensors, strings and numbers, read back
with ``torch.load(weights_only=True)``: a file crafted to execute code on
unpickling is refused instead of run. Writes go to a temp file in the same
folder, are fsynced, then renamed over, so a crash leaves either the old file
or the new one, never half of one; temp files are never loaded.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

FORMAT = 1
SUFFIX = ".ckpt"
_TMP = ".tmp-"


class CheckpointError(Exception):
    """This checkpoint cannot be used: keep the current model and say why."""


def write(path: Path, state: dict[str, torch.Tensor], meta: dict[str, Any],
          before_rename: Callable[[], None] | None = None) -> None:
    """Atomically write weights + metadata, owner-only.

    `before_rename` runs after the temp file is complete and synced, before it
    replaces `path` (crash-point tests use it).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    payload = {
        "format": FORMAT,
        "meta": json.dumps(meta, sort_keys=True),
        "state": {k: v.detach().to("cpu").contiguous() for k, v in state.items()},
    }
    tmp = path.with_name(f"{_TMP}{os.getpid()}-{path.name}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        if before_rename is not None:
            before_rename()
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    except RuntimeError as e:
        # torch's zip writer reports a failed write (disk full, file too large) as a
        # RuntimeError; surface the OS error underneath, which callers handle.
        tmp.unlink(missing_ok=True)
        cause = e.__context__
        while cause is not None and not isinstance(cause, OSError):
            cause = cause.__context__
        if isinstance(cause, OSError):
            raise OSError(cause.errno, f"cannot write checkpoint {path}: {cause.strerror}") from e
        raise
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load a checkpoint written by `write`; CheckpointError on anything else."""
    path = Path(path)
    if path.name.startswith(_TMP):
        raise CheckpointError(f"{path.name}: a temporary file, never loaded")
    try:
        with warnings.catch_warnings():
            # Damaged bytes can look like an exotic pickle protocol; torch warns, then fails.
            warnings.simplefilter("ignore", UserWarning)
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint") from None
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"{path}: refused: contains objects that are not plain "
                              f"weights ({str(e).splitlines()[0][:200]})") from e
    except Exception as e:  # noqa: BLE001 - damaged bytes fail inside torch's unpickler in
        # many ways (IndexError, KeyError, RuntimeError, EOFError, BadZipFile...): all
        # mean the same to the caller, an unusable file.
        raise CheckpointError(f"{path}: unreadable or truncated: "
                              f"{type(e).__name__}: {str(e)[:200]}") from e
    if not isinstance(payload, dict) or not {"format", "meta", "state"} <= payload.keys():
        raise CheckpointError(f"{path}: not a tickcast checkpoint")
    fmt = payload["format"]
    if not isinstance(fmt, int) or fmt > FORMAT:
        raise CheckpointError(f"{path}: checkpoint format {fmt} is newer than this tickcast "
                              f"understands ({FORMAT})")
    try:
        meta = json.loads(payload["meta"])
    except (TypeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: metadata is not valid JSON") from e
    state = payload["state"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: weights are not a tensor dictionary")
    return state, meta


def file_name(model: str, version: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", version)
    return f"{model}-{safe}{SUFFIX}"


def listing(folder: Path, model: str) -> list[Path]:
    """Checkpoints of a model in a folder, oldest first (by modification time)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [p for p in folder.glob(f"{model}-*{SUFFIX}") if not p.name.startswith(_TMP)]
    return sorted(found, key=lambda p: (p.stat().st_mtime_ns, p.name))


def prune(folder: Path, model: str, keep: int, protect: set[Path] | None = None) -> list[Path]:
    """Delete all but the `keep` newest checkpoints (never those in `protect`)."""
    protect = {p.resolve() for p in (protect or set())}
    files = listing(folder, model)
    removed = []
    for p in files[: max(0, len(files) - keep)]:
        if p.resolve() in protect:
            continue
        p.unlink(missing_ok=True)
        removed.append(p)
    # Temp files left by a crash between write and rename are just debris.
    for p in Path(folder).glob(f"{_TMP}*"):
        p.unlink(missing_ok=True)
    return removed

"""Choosing where torch runs: CUDA when present and asked for, else CPU."""

from __future__ import annotations

import torch


class DeviceError(ValueError):
    """device = "cuda" was asked for where no CUDA device exists."""


def resolve(choice: str) -> torch.device:
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError("model.device = 'cuda' but no CUDA device is available")
        return torch.device("cuda")
    if choice == "cpu":
        return torch.device("cpu")
    raise DeviceError(f"model.device: unknown device {choice!r} (auto, cpu or cuda)")


def describe(dev: torch.device) -> str:
    if dev.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(dev)}"
    return "cpu"

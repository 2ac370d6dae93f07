"""Choosing the device draws run on."""

from __future__ import annotations

import torch


def resolve_device(name: str = "auto") -> torch.device:
    """`"auto"` picks CUDA when available, else CPU; other names are checked and returned.

    Raises:
        ValueError: for a CUDA device on a machine without one, or an unknown name.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"unknown device {name!r}: {error}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but CUDA is not available here")
    return device


def describe_device(device: torch.device) -> str:
    """The device in words, e.g. `"cpu (2 threads)"` or `"cuda:0 (NVIDIA H100 80GB HBM3)"`."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    threads = torch.get_num_threads()
    return f"{device} ({threads} thread{'s' if threads > 1 else ''})"

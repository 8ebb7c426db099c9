"""Device choice shared by inference, training and the widgets' device list."""

from __future__ import annotations

import torch


def available_devices() -> list[str]:
    """Devices this machine can run on, best first (CPU always last)."""
    found = []
    if torch.cuda.is_available():
        found += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        found.append("mps")
    return found + ["cpu"]


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """'auto' -> CUDA, then Apple MPS, then CPU; anything else is checked to exist."""
    if device is None or str(device) == "auto":
        return torch.device(available_devices()[0])
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but no CUDA GPU is available here; "
                         f"use one of {available_devices()} or 'auto'")
    if dev.type == "mps" and "mps" not in available_devices():
        raise ValueError(f"device 'mps' asked for, but Apple MPS is not available here; "
                         f"use one of {available_devices()} or 'auto'")
    return dev

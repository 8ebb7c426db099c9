"""Device choice shared by inference, training and the widgets' device list."""

from __future__ import annotations

import contextlib
import os

import torch

from .errors import SettingsError


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
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise SettingsError(f"device {device!r} is not a device name; use one of "
                            f"{available_devices()} or 'auto'") from exc
    if dev.type not in ("cpu", "cuda", "mps"):
        raise SettingsError(f"device {device!r} is not supported; use one of "
                            f"{available_devices()} or 'auto'")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise SettingsError(f"device {device!r} asked for, but this machine has "
                            f"{torch.cuda.device_count()} CUDA GPU(s); use one of "
                            f"{available_devices()} or 'auto'")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SettingsError(f"device {device!r} asked for, but no CUDA GPU is available here; "
                         f"use one of {available_devices()} or 'auto'")
    if dev.type == "mps" and "mps" not in available_devices():
        raise SettingsError(f"device 'mps' asked for, but Apple MPS is not available here; "
                         f"use one of {available_devices()} or 'auto'")
    return dev


# cuBLAS needs a fixed workspace to be repeatable; the value PyTorch's notes recommend
CUBLAS_WORKSPACE = ":4096:8"


@contextlib.contextmanager
def deterministic(enabled: bool = True):
    """Exactly repeatable kernels inside: the same inputs and seed give the same bits.

    On the CPU torch is already repeatable for a fixed thread count. On CUDA this selects
    cuDNN's deterministic algorithms without autotuning and ``torch.use_deterministic_
    algorithms(True)``, so an operation with no deterministic CUDA kernel raises instead
    of silently varying; ``CUBLAS_WORKSPACE_CONFIG`` is set when unset (set it before
    Python starts to be sure cuBLAS has not chosen its workspace already). Restores the
    previous settings on exit; ``enabled=False`` changes nothing.
    """
    if not enabled:
        yield
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    cudnn = torch.backends.cudnn
    before = (torch.are_deterministic_algorithms_enabled(),
              torch.is_deterministic_algorithms_warn_only_enabled(),
              cudnn.deterministic, cudnn.benchmark)
    torch.use_deterministic_algorithms(True)
    cudnn.deterministic, cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        cudnn.deterministic, cudnn.benchmark = before[2], before[3]


def autocast_for(device: torch.device, dtype: torch.dtype | None):
    """Mixed precision on ``device`` in ``dtype``, or nothing when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def cpu_name() -> str:
    """The CPU's model name (benchmarks name the machine their figures come from; on Linux
    ``platform.processor()`` gives only the architecture)."""
    import platform

    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()

"""``deterministic=True``: the same seed gives bit-identical weights on CUDA too.

On the CPU every op the training uses is deterministic already: same seed, same data,
same iteration count and thread count -> identical weights. On CUDA, cuDNN picks
algorithms by speed and some kernels add with atomics, so runs differ in the last bits
unless PyTorch is told otherwise: :func:`deterministic_mode` enters
:func:`napari_unet.devices.deterministic` (the same switch inference uses) and swaps the UNet's
bilinear upsampling, whose CUDA backward has no deterministic kernel, for the same
interpolation written as two matrix products. Cross-entropy is computed from one-hot
targets (:mod:`.losses`) for the same reason (CUDA's NLL loss has no deterministic
kernel either). Deterministic CUDA training is slower; it is for reproducing a result.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from ..devices import deterministic


class MatrixUpsample(nn.Module):
    """x2 bilinear upsampling (``align_corners=True``) as ``A_h @ x @ A_w^T``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        a_h = _interpolation(h, 2 * h, x)
        a_w = _interpolation(w, 2 * w, x)
        return a_h @ (x @ a_w.T)


def _interpolation(n: int, m: int, like: torch.Tensor) -> torch.Tensor:
    """(m, n) matrix of linear interpolation from n to m samples, ends aligned."""
    pos = torch.linspace(0, n - 1, m, device=like.device, dtype=torch.float64) if n > 1 else \
        torch.zeros(m, device=like.device, dtype=torch.float64)
    lo = pos.floor().clamp(max=max(n - 2, 0)).long()
    frac = pos - lo
    a = torch.zeros(m, n, device=like.device, dtype=torch.float64)
    rows = torch.arange(m, device=like.device)
    a[rows, lo] = 1 - frac
    if n > 1:
        a[rows, lo + 1] += frac
    return a.to(like.dtype)


def _bilinear_upsamplers(net: nn.Module) -> list[tuple[nn.Module, str, nn.Module]]:
    return [(parent, name, child) for parent in net.modules()
            for name, child in parent.named_children()
            if isinstance(child, nn.Upsample) and child.mode == "bilinear"
            and child.align_corners and child.scale_factor in (2, 2.0, (2.0, 2.0))]


@contextlib.contextmanager
def deterministic_mode(net: nn.Module, device: torch.device, enabled: bool,
                       swap_upsampling: bool | None = None):
    """Within the block, training ``net`` on ``device`` is bit-reproducible from its seed.

    Not enabled, on CUDA: cuDNN benchmarks its algorithms once per shape (training
    patches have one shape), the fast choice.
    """
    if not enabled:
        benchmark = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = benchmark or device.type == "cuda"
        try:
            yield
        finally:
            torch.backends.cudnn.benchmark = benchmark
        return
    swap = device.type == "cuda" if swap_upsampling is None else swap_upsampling
    swapped = _bilinear_upsamplers(net) if swap else []
    try:
        for parent, name, _ in swapped:
            setattr(parent, name, MatrixUpsample())
        with deterministic():
            yield
    finally:
        for parent, name, child in swapped:
            setattr(parent, name, child)

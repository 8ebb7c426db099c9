"""Synthetic noise for supervised denoising, added in the normalised [0, 1] domain.

``level`` is the noise sigma as a fraction of the normalised intensity range, so 0.05
means "5% of the range" whatever the scanner's units:

- ``gaussian``: x + level * n
- ``rician``:   |x + level * (n1 + i n2)|, the magnitude of complex Gaussian noise, which
  is what magnitude MR images carry (biased upwards in dark regions);
- ``poisson``:  Poisson(x * peak) / peak with ``peak = 1 / level**2`` photons at full
  intensity, so the noise sigma at intensity 1 equals ``level``.

All draws come from an explicit :class:`torch.Generator` so runs are reproducible.
"""

from __future__ import annotations

import torch

from ..errors import TaskError
from .settings import NOISE_KINDS


def add_noise(clean: torch.Tensor, kind: str, level: float | torch.Tensor,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """Noisy copy of ``clean`` (any shape; ``level`` a float or broadcastable tensor)."""
    level = torch.as_tensor(level, dtype=clean.dtype, device=clean.device)
    if kind == "gaussian":
        return clean + level * _randn(clean, generator)
    if kind == "rician":
        real = clean + level * _randn(clean, generator)
        imag = level * _randn(clean, generator)
        return torch.sqrt(real * real + imag * imag)
    if kind == "poisson":
        peak = 1.0 / (level * level)
        counts = torch.poisson(clean.clamp(min=0) * peak, generator=generator)
        return counts / peak
    raise TaskError(f"unknown noise model {kind!r}: use one of {NOISE_KINDS}")


def _randn(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(like.shape, generator=generator, dtype=like.dtype, device=like.device)


def draw_levels(level: float | tuple[float, float], n: int,
                generator: torch.Generator) -> torch.Tensor:
    """One level per sample, shaped (n, 1, 1, 1): fixed, or uniform in ``(low, high)``."""
    if isinstance(level, (tuple, list)):
        low, high = float(level[0]), float(level[1])
        u = torch.rand(n, generator=generator, device=generator.device)
        return (low + (high - low) * u).view(n, 1, 1, 1)
    return torch.full((n, 1, 1, 1), float(level), device=generator.device)


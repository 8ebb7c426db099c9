"""Slices at the model's pixel spacing: a net learns anatomy at one scale in pixels.

A model trained on 1 mm slices sees a 0.5 mm scan's anatomy twice as large, and a 1.5 mm
scan's 1.5x smaller; like nnU-Net, napari-unet runs the net at the spacing it learned at
(``ModelMeta.pixel_spacing``) and brings the outputs back to the scan's own grid, so
labels and images stay voxel-aligned with the scan. Corner pixels map onto corner pixels
(``align_corners``): the first and last rows and columns keep their place in space.

Within :data:`TOLERANCE` nothing is resampled (interpolation would only blur).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

TOLERANCE = 0.05  # relative spacing difference run as it is
MAX_SIDE = 8192  # pixels: a resampled slice larger than this runs at the scan's spacing


def in_plane(spacing: Sequence[float] | None, axis: int) -> tuple[float, float] | None:
    """The (rows, columns) spacing of slices along ``axis``; None when unknown."""
    if spacing is None or len(spacing) < 3:
        return None
    sp = [float(v) for v in spacing[:3]]
    rows_cols = tuple(v for i, v in enumerate(sp) if i != axis % 3)
    return rows_cols if all(np.isfinite(v) and v > 0 for v in rows_cols) else None


def size_at(hw: Sequence[int], spacing: Sequence[float] | None, axis: int,
            model_spacing: Sequence[float] | None) -> tuple[int, int] | None:
    """The size of the slices along ``axis`` of a volume of ``spacing`` (mm, array order) at
    ``model_spacing``; None where they run as they are."""
    return target_size(hw, in_plane(spacing, axis), model_spacing)


def target_size(hw: Sequence[int], spacing: Sequence[float] | None,
                model_spacing: Sequence[float] | None) -> tuple[int, int] | None:
    """The slice size at ``model_spacing``, or None where the slice runs as it is."""
    if spacing is None or model_spacing is None:
        return None
    ratio = [float(s) / float(m) for s, m in zip(spacing, model_spacing, strict=True)]
    if all(abs(r - 1.0) <= TOLERANCE for r in ratio):
        return None
    size = tuple(max(1, round((int(n) - 1) * r) + 1) for n, r in zip(hw, ratio, strict=True))
    if max(size) > MAX_SIDE:
        warnings.warn(f"slices of {hw[0]} x {hw[1]} pixels would be {size[0]} x {size[1]} "
                      f"at the model's pixel spacing (more than {MAX_SIDE} a side); they run "
                      "at the scan's own pixels instead", RuntimeWarning, stacklevel=3)
        return None
    return None if tuple(size) == tuple(int(n) for n in hw) else size


Kind = Literal["image", "probabilities", "labels"]


def resize(x: torch.Tensor, size: Sequence[int], kind: Kind = "image") -> torch.Tensor:
    """(B, C, H, W) -> (B, C, *size), corners aligned.

    Images: cubic, as nnU-Net resamples images (sharper edges than linear, which matters
    most for the thin cortex of an upsampled 1.5 mm scan: grey matter Dice 0.917 -> 0.921
    for brain-tissue); probabilities: linear (they stay probabilities); labels: nearest.
    An image shrunk is blurred first (:func:`antialiased`); torch's own antialiasing is not
    used: it does not keep corners aligned (a half-pixel shift).
    """
    size = (int(size[0]), int(size[1]))
    if tuple(x.shape[-2:]) == size:
        return x
    if kind == "image":
        return F.interpolate(antialiased(x.float(), size), size=size, mode="bicubic",
                             align_corners=True)
    if kind == "probabilities":
        return F.interpolate(x.float(), size=size, mode="bilinear", align_corners=True)
    rows = torch.from_numpy(nearest(x.shape[-2], size[0])).to(x.device)
    cols = torch.from_numpy(nearest(x.shape[-1], size[1])).to(x.device)
    return x[..., rows[:, None], cols[None, :]]


def antialiased(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """``x`` filtered along each axis it will be shrunk on, so that a finer scan's noise and
    fine texture do not alias into the model's grid. The filter is the triangle of
    half-width f (for a shrink by f) that torch's and PIL's antialiasing use, but centred
    on each pixel, so nothing moves."""
    for dim, n, m in ((-2, x.shape[-2], size[0]), (-1, x.shape[-1], size[1])):
        f = (n - 1) / max(int(m) - 1, 1)
        if f > 1 + TOLERANCE:
            x = _triangle(x, f, dim)
    return x


def _triangle(x: torch.Tensor, f: float, dim: int) -> torch.Tensor:
    radius = math.ceil(f) - 1
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernel = (1 - t.abs() / f).clamp(min=0)
    b, c, h, w = x.shape
    if dim == -2:
        kernel, pad = kernel.view(1, 1, -1, 1), (0, 0, radius, radius)
    else:
        kernel, pad = kernel.view(1, 1, 1, -1), (radius, radius, 0, 0)
    flat = F.pad(x.reshape(b * c, 1, h, w), pad, mode="replicate")
    return F.conv2d(flat, kernel / kernel.sum()).view(b, c, h, w)


def nearest(n: int, m: int) -> np.ndarray:
    """Indices 0..n-1 of the source pixels nearest to m corner-aligned target pixels."""
    if m == 1:
        return np.zeros(1, np.int64)
    return np.clip(np.round(np.arange(m) * ((n - 1) / (m - 1))), 0, n - 1).astype(np.int64)


def resize_slices(stack: np.ndarray, size: Sequence[int] | None,
                  labels: bool = False) -> np.ndarray:
    """Slices-first numpy stack (S, C, H, W) at ``size`` (None: unchanged)."""
    if size is None:
        return stack
    if labels:  # any integer dtype, no torch round trip
        return stack[..., nearest(stack.shape[-2], size[0])[:, None],
                     nearest(stack.shape[-1], size[1])[None, :]]
    out = [resize(torch.from_numpy(np.ascontiguousarray(stack[i : i + 16])), size)
           for i in range(0, len(stack), 16)]
    return torch.cat(out).numpy()

"""Slices at the model's pixel spacing: a net learns anatomy at one scale in pixels.

A model trained on 1 mm slices sees a 0.5 mm scan's anatomy twice as large, and a 1.5 mm
scan's 1.5x smaller; like nnU-Net, napari-unet runs the net at the spacing it learned at
(``ModelMeta.pixel_spacing``) and brings the outputs back to the scan's own grid, so
labels and images stay voxel-aligned with the scan. Corner pixels map onto corner pixels
(``align_corners``): the first and last rows and columns keep their place in space.

Within :data:`TOLERANCE` nothing is resampled (interpolation would only blur).
"""

from __future__ import annotations

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
    torch's antialiasing is not used: it does not keep corners aligned (a half-pixel shift).
    """
    size = (int(size[0]), int(size[1]))
    if tuple(x.shape[-2:]) == size:
        return x
    if kind != "labels":
        mode = "bicubic" if kind == "image" else "bilinear"
        return F.interpolate(x.float(), size=size, mode=mode, align_corners=True)
    rows = torch.from_numpy(nearest(x.shape[-2], size[0])).to(x.device)
    cols = torch.from_numpy(nearest(x.shape[-1], size[1])).to(x.device)
    return x[..., rows[:, None], cols[None, :]]


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

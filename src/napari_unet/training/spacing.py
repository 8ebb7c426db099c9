"""The pixel spacing a segmentation model learns at, and training data brought to it.

A segmentation model records the in-plane spacing of its training slices
(``ModelMeta.pixel_spacing``) so that inference can show it every scan at that scale
(:mod:`napari_unet.inference.resample`). Training volumes of other spacings are
resampled in-plane to it first (intensities cubic, as inference does; labels by nearest
neighbour), so one model never learns one anatomy at several sizes. Denoisers record
none: resampling a noisy image would change the very noise they learned to remove.
"""

from __future__ import annotations

import numpy as np

from ..inference.resample import in_plane, resize_slices, size_at


def model_spacing(task_kind: str, sources: list, axis: int,
                  init=None) -> tuple[float, float] | None:
    """The parent's spacing when fine-tuning one that has it; else the median in-plane
    spacing of the training volumes that know theirs (None: none does, or denoising)."""
    if task_kind != "segment":
        return None
    if init is not None and init.meta.pixel_spacing is not None:
        return tuple(float(v) for v in init.meta.pixel_spacing)
    known = [sp for sp in (in_plane(s.spacing, axis) for s in sources) if sp is not None]
    if not known:
        return None
    return tuple(round(float(v), 6) for v in np.median(np.asarray(known), axis=0))


def to_model_spacing(sources: list, targets: list, axis: int,
                     spacing: tuple[float, float] | None) -> list[str]:
    """Resample (in place) the images and their labels whose in-plane spacing is not
    ``spacing``; returns the names of those resampled."""
    changed = []
    for i, src in enumerate(sources):
        hw = [n for k, n in enumerate(src.array.shape[:3]) if k != axis]
        size = size_at(hw, src.spacing, axis, spacing)
        if size is None:
            continue
        src.array = _resampled(src.array, axis, size, labels=False)
        src.spacing = _in_plane_set(src.spacing, axis, spacing)
        if i < len(targets):
            targets[i].array = _resampled(targets[i].array, axis, size, labels=True)
            targets[i].spacing = src.spacing
        changed.append(src.name)
    return changed


def _in_plane_set(spacing, axis: int, in_plane) -> tuple[float, ...]:
    """``spacing`` (array order) with the two axes besides ``axis`` set to ``in_plane``."""
    rest = iter(in_plane)
    return tuple(float(v) if k == axis else float(next(rest)) for k, v in
                 enumerate(spacing[:3]))


def _resampled(array: np.ndarray, axis: int, size, labels: bool) -> np.ndarray:
    """(Z, Y, X[, C]) with the slices along ``axis`` at ``size``, same layout and dtype."""
    channels = array.ndim == 4
    stack = np.moveaxis(array, axis, 0)
    stack = np.moveaxis(stack, -1, 1) if channels else stack[:, None]
    if not labels:
        stack = stack.astype(np.float32, copy=False)
    out = resize_slices(stack, size, labels)
    out = np.moveaxis(out, 1, -1) if channels else out[:, 0]
    return np.ascontiguousarray(np.moveaxis(out, 0, axis))

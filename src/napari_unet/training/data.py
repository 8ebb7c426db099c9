"""Training data: volumes -> normalised 2D slices along an axis -> augmented patches.

Inputs may be :class:`~napari_unet.io.volume.Volume` objects, paths (read through
:func:`napari_unet.io.read_volume`) or numpy arrays (slices-first, optional trailing
channel axis). Normalisation is fitted once per volume, exactly as inference does.
Patches are cut and augmented with MONAI dictionary transforms seeded from the run's seed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import TaskError, VolumeReadError


@dataclass
class Source:
    """One input volume as an array plus what provenance may name (never patient data)."""

    array: np.ndarray
    name: str
    modality: str = "OT"


def load_source(item, index: int, what: str = "image") -> Source:
    """A Volume, a path or an array -> :class:`Source`; unreadable files raise VolumeReadError."""
    if isinstance(item, (str, os.PathLike)):
        vol = _read(Path(item))
        return Source(np.asarray(vol.array), Path(item).name, getattr(vol, "modality", "OT"))
    if hasattr(item, "array"):  # a Volume
        name = getattr(item, "name", None) or f"{what}{index}"
        return Source(np.asarray(item.array), str(name), getattr(item, "modality", "OT"))
    arr = np.asarray(item)
    if arr.ndim not in (3, 4):
        raise TaskError(f"{what} {index}: expected a 3D volume (slices, rows, columns[, "
                        f"channels]), got an array of shape {arr.shape}")
    return Source(arr, f"{what}{index}")


def _read(path: Path):
    if not path.exists():
        raise VolumeReadError(f"{path}: no such file or folder")
    from ..io import read_volume

    return read_volume(path)


def to_slices(array: np.ndarray, axis: int) -> np.ndarray:
    """(Z, Y, X[, C]) -> (S, C, H, W) with slices taken along ``axis``."""
    if array.ndim == 3:
        array = array[..., None]
    return np.ascontiguousarray(np.moveaxis(np.moveaxis(array, axis, 0), -1, 1))


def label_slices(labels: np.ndarray, axis: int) -> np.ndarray:
    """(Z, Y, X) label or mask volume -> (S, 1, H, W) along ``axis``."""
    return np.ascontiguousarray(np.moveaxis(labels, axis, 0)[:, None])


def to_numpy(x) -> np.ndarray:
    """MONAI MetaTensor / tensor / array -> plain numpy array."""
    if hasattr(x, "as_tensor"):
        x = x.as_tensor()
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def check_labels(labels: np.ndarray, image_shape: tuple, n_labels: int, name: str,
                 where: np.ndarray | None = None) -> np.ndarray:
    """Labels must match the image's spatial shape and hold integers 0..n_labels-1."""
    if labels.ndim == 4 and labels.shape[-1] == 1:
        labels = labels[..., 0]
    if labels.shape != tuple(image_shape[:3]):
        raise TaskError(f"{name}: label shape {labels.shape} does not match the image's "
                        f"{tuple(image_shape[:3])}; labels and images pair up in order")
    values = labels if where is None else labels[where]
    if values.size and (values.min() < 0 or values.max() >= n_labels
                        or not np.array_equal(values, np.round(values))):
        raise TaskError(f"{name}: labels must be integers 0..{n_labels - 1} for this task "
                        f"(found {values.min()}..{values.max()}); set --classes to match")
    return labels


def split_slices(n: int, val_fraction: float, val_block: tuple[int, int] | None = None,
                 gap: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) slice indices: validation is one contiguous block, never trained on.

    The default block holds ``val_fraction`` of the slices around the middle, where the
    anatomy is; ``gap`` slices either side are left out of training too (neighbouring 2D
    slices are nearly identical, so they would leak the held-out block).
    """
    if val_block is not None:
        start, stop = max(0, int(val_block[0])), min(n, int(val_block[1]))
    elif val_fraction <= 0 or n < 3:
        start = stop = n // 2
    else:
        size = min(n - 1, max(1, round(n * val_fraction)))
        start = (n - size) // 2
        stop = start + size
    idx = np.arange(n)
    val = idx[start:stop]
    train = idx[(idx < start - gap) | (idx >= stop + gap)]
    if train.size == 0:
        raise TaskError(f"no slices left for training: {n} slices, held-out block "
                        f"{start}..{stop} (gap {gap}); lower val_fraction or use more data")
    return train, val


class PatchSampler:
    """Draws batches of augmented 2D patches from prepared slice stacks.

    ``images[v]`` is (S, C, H, W) float32; ``extras[v]`` maps other keys ("label",
    "mask", "crop") to (S, 1, H, W) arrays cut in the same place. ``crop`` (usually the
    labels, restricted to trusted voxels) steers crops towards foreground half the time.
    """

    def __init__(self, images: list[np.ndarray], extras: list[dict[str, np.ndarray]],
                 items: list[tuple[int, int]], weights: np.ndarray | None,
                 patch: tuple[int, int], batch_size: int, seed: int,
                 flips: bool = True, intensity: bool = False):
        self.images, self.extras, self.items = images, extras, items
        self.patch, self.batch_size = tuple(patch), batch_size
        p = None if weights is None else np.asarray(weights, float) / np.sum(weights)
        self.p = p
        self.rng = np.random.default_rng(seed)
        keys = ["image", *extras[0]] if extras else ["image"]
        self.keys = keys
        self.plain = self._compose(keys, None, flips, intensity).set_random_state(seed + 1)
        self.guided = (self._compose(keys, "crop", flips, intensity).set_random_state(seed + 2)
                       if "crop" in keys else None)

    def _compose(self, keys, crop_key, flips, intensity):
        from monai.transforms import (
            Compose,
            RandAdjustContrastd,
            RandCropByPosNegLabeld,
            RandFlipd,
            RandScaleIntensityd,
            RandShiftIntensityd,
            RandSpatialCropd,
            SpatialPadd,
        )

        t = [SpatialPadd(keys, spatial_size=self.patch, mode="constant")]
        if crop_key:
            t.append(RandCropByPosNegLabeld(keys, label_key=crop_key, spatial_size=self.patch,
                                            pos=1.0, neg=1.0, num_samples=1))
        else:
            t.append(RandSpatialCropd(keys, roi_size=self.patch, random_size=False))
        if flips:
            t += [RandFlipd(keys, prob=0.5, spatial_axis=0),
                  RandFlipd(keys, prob=0.5, spatial_axis=1)]
        if intensity:
            t += [RandAdjustContrastd("image", prob=0.3, gamma=(0.75, 1.35)),
                  RandScaleIntensityd("image", factors=0.1, prob=0.5),
                  RandShiftIntensityd("image", offsets=0.05, prob=0.5)]
        return Compose(t)

    def draw(self) -> dict[str, torch.Tensor]:
        """One batch: {"image": (B, C, h, w), each extra key: (B, 1, h, w), "volume": (B,)}."""
        picks = self.rng.choice(len(self.items), size=self.batch_size, p=self.p)
        samples = [self._sample(*self.items[i]) for i in picks]
        batch = {k: torch.from_numpy(np.stack([s[k] for s in samples])) for k in self.keys}
        batch["volume"] = torch.tensor([self.items[i][0] for i in picks])
        return batch

    def _sample(self, v: int, s: int) -> dict[str, np.ndarray]:
        d = {"image": self.images[v][s]}
        d.update({k: a[s] for k, a in self.extras[v].items()})
        guided = self.guided is not None and bool(np.any(d["crop"] > 0))
        out = (self.guided if guided else self.plain)(d)
        out = out[0] if isinstance(out, list) else out
        return {k: to_numpy(out[k]).astype(np.float32, copy=False) for k in self.keys}

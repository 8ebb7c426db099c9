"""Training data: volumes -> normalised 2D slices along an axis -> augmented patches.

Inputs may be :class:`~napari_unet.io.volume.Volume` objects, paths (read through
:func:`napari_unet.io.read_volume`) or numpy arrays (slices-first, optional trailing
channel axis). Normalisation is fitted once per volume, exactly as inference does.
Patches are cut and augmented on the training device (:class:`PatchSampler`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import SettingsError, TaskError, VolumeReadError
from ..io.formats import is_nifti_path
from ..limits import check_allocation
from .augment import LIGHT, NONE, Draw, Randomization, affine_matrices, intensity


@dataclass
class Source:
    """One input volume as an array plus what provenance may name (never patient data)."""

    array: np.ndarray
    name: str
    modality: str = "OT"
    spacing: tuple[float, ...] | None = None  # mm in array order; None for plain arrays
    direction: np.ndarray | None = None  # a Volume's direction cosines; None for arrays
    affine: np.ndarray | None = None  # voxel -> LPS mm, when a file (or a scan) gave it
    volume: object = None  # the Volume read, when there was one (a DICOM SEG lands on it)
    class_names: tuple[str, ...] | None = None  # what a label file names its classes
    class_codes: tuple | None = None  # and what a DICOM SEG codes them as


def load_source(item, index: int, what: str = "image", scan: Source | None = None) -> Source:
    """A Volume, a path or an array -> :class:`Source` fit to train on.

    Unreadable files raise VolumeReadError; boolean arrays become 0/1; an image without
    two different finite values (all NaN, constant) is refused naming the input, and
    other non-finite voxels take the image's lowest finite value. Labels may be a DICOM
    SEG, laid on the slices of the ``scan`` it was drawn on.
    """
    if isinstance(item, (str, os.PathLike)):
        vol, names, codes = (_read_labels(Path(item), getattr(scan, "volume", None))
                             if what == "labels" else (_read(Path(item)), None, None))
        src = Source(np.asarray(vol.array), Path(item).name, getattr(vol, "modality", "OT"),
                     _spacing(vol), getattr(vol, "direction", None), vol.affine, vol, names,
                     codes)
    elif hasattr(item, "array"):  # a Volume
        name = getattr(item, "name", None) or f"{what}{index}"
        src = Source(np.asarray(item.array), str(name), getattr(item, "modality", "OT"),
                     _spacing(item), getattr(item, "direction", None), _file_affine(item),
                     item)
    else:
        arr = np.asarray(item)
        if arr.ndim not in (3, 4):
            raise SettingsError(f"{what} {index}: expected a 3D volume (slices, rows, "
                                f"columns[, channels]), got an array of shape {arr.shape}")
        src = Source(arr, f"{what}{index}")
    if src.array.dtype == bool:
        src.array = src.array.astype(np.uint8 if what == "labels" else np.float32)
    if what == "image":
        src.array = _finite_image(src.array, src.name)
    return src


def _file_affine(volume) -> np.ndarray | None:
    """A Volume's affine when it was read from a file (a layer painted in napari has only
    the geometry napari gave it, which need not match the scan's to the voxel)."""
    return volume.affine if getattr(volume, "source", None) is not None else None


def _spacing(volume) -> tuple[float, ...] | None:
    spacing = getattr(volume, "spacing", None)
    return None if spacing is None else tuple(float(v) for v in spacing)


def _read(path: Path):
    if not path.exists():
        raise VolumeReadError(f"{path}: no such file or folder")
    from ..io import read_volume

    return read_volume(path)


def _read_labels(path: Path, scan=None) -> tuple:
    """(volume, class names or None, class codes or None) of a label file: a DICOM SEG on
    ``scan``'s grid when it references that scan (a Volume read from DICOM), with its
    segments' names and codes; a NIfTI with the names it keeps."""
    from ..io.dicom_header import read_header
    from ..io.labels import is_dicom_seg, nifti_label_map, read_dicom_seg

    if path.is_file() and not is_nifti_path(path):
        ds, _ = read_header(path)
        if ds is not None and is_dicom_seg(ds):
            seg = read_dicom_seg(path, scan)
            return seg.volume, seg.class_names, seg.class_codes
    volume = _read(path)
    named = nifti_label_map(volume, path) if is_nifti_path(path) else None
    return volume, None if named is None else named.class_names, None


def _finite_image(a: np.ndarray, name: str) -> np.ndarray:
    if a.dtype.kind not in "biuf" or a.size == 0:
        raise SettingsError(f"{name}: an image of type {a.dtype} and shape {a.shape} "
                            "cannot be trained on")
    finite = np.isfinite(a) if a.dtype.kind == "f" else None
    if finite is not None and not finite.any():
        raise SettingsError(f"{name}: the image has no finite voxels (all NaN or "
                            "infinite); there is nothing to learn from")
    low = a.min() if finite is None else np.min(a, where=finite, initial=np.inf)
    high = a.max() if finite is None else np.max(a, where=finite, initial=-np.inf)
    if low == high:
        raise SettingsError(f"{name}: every voxel of the image has the value {low}; "
                            "there is nothing to learn from")
    return a if finite is None or finite.all() else np.where(finite, a, low)


MAX_LABEL = 65535  # labels are written as uint16 at most (task rules)
MAX_CLASSES = MAX_LABEL + 1


def label_maximum(src: Source) -> int:
    """The largest label of ``src``, checked to be a sane class index before anything uses it."""
    a = src.array
    if a.dtype.kind not in "biuf":
        raise SettingsError(f"{src.name}: labels of type {a.dtype} are not class numbers")
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise SettingsError(f"{src.name}: labels hold NaN or infinite values")
    top, low = (a.max(), a.min()) if a.size else (0, 0)
    if low < 0 or top > MAX_LABEL:
        raise SettingsError(f"{src.name}: label value {top if top > MAX_LABEL else low} is "
                            f"not a class number 0..{MAX_LABEL}; labels must number the "
                            "classes 0 (background), 1, 2, ...")
    return int(top)


def to_slices(array: np.ndarray, axis: int) -> np.ndarray:
    """(Z, Y, X[, C]) -> (S, C, H, W) with slices taken along ``axis``."""
    if array.ndim == 3:
        array = array[..., None]
    return np.ascontiguousarray(np.moveaxis(np.moveaxis(array, axis, 0), -1, 1))


def with_context(slices: np.ndarray, k: int) -> np.ndarray:
    """(S, C, H, W) -> (S, (2k+1) C, H, W): each slice with its ``k`` neighbours either side
    as channels, nearest slice first to last (edges repeat the end slice), as inference
    gathers them (:func:`napari_unet.inference.staging.neighbours`)."""
    if k == 0:
        return slices
    from ..inference.staging import neighbours

    rows = neighbours(np.arange(len(slices)), k, len(slices))
    check_allocation(slices.nbytes * (2 * k + 1), f"{len(slices)} slices with {k} "
                     "neighbour slice(s) either side", SettingsError)
    return np.ascontiguousarray(slices[rows].reshape(len(slices), -1, *slices.shape[2:]))


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
                        f"(found {values.min()}..{values.max()}); make the number of classes match "
                        "the labels (--classes or --class-names, 'classes' in the training "
                        "widget, or the model training starts from)")
    return labels


def check_same_grid(image: Source, labels: Source) -> None:
    """Labels read from a file must lie on their image's voxel grid: same shape is not
    enough (a mirrored, shifted or resampled label map would teach the wrong anatomy)."""
    if image.affine is None or labels.affine is None:
        return
    a, b = image.affine, labels.affine
    scale = np.abs(a[:3, :3]).max()
    voxel = float(min(image.spacing or (1.0,)))
    if np.allclose(a[:3, :3], b[:3, :3], atol=1e-4 * scale) and np.allclose(
            a[:3, 3], b[:3, 3], atol=0.05 * voxel):
        return
    if not np.allclose(np.linalg.norm(a[:3, :3], axis=0), np.linalg.norm(b[:3, :3], axis=0),
                       rtol=1e-4):
        why = "their voxel spacing differs"
    elif not np.allclose(a[:3, :3], b[:3, :3], atol=1e-4 * scale):
        why = "their orientation differs (axes flipped or swapped)"
    else:
        why = f"their origins are {np.linalg.norm(a[:3, 3] - b[:3, 3]):.3g} mm apart"
    raise TaskError(f"{labels.name}: the labels are not on the voxel grid of {image.name}: "
                    f"{why}; save the labels on the scan's grid (same orientation, spacing "
                    "and origin)")


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
    """Draws batches of augmented 2D patches from slice stacks held on the training device.

    ``images[v]`` is (S, C, H, W) float32; ``extras[v]`` maps other keys ("label",
    "mask", "crop") to (S, 1, H, W) arrays cut in the same place. ``crop`` (usually the
    labels, restricted to trusted voxels) centres ``crop_fraction`` of the patches on its
    foreground. Only the slices named in ``items`` go to ``device``, zero-padded to one
    common size, once; each batch is then cut, resampled and augmented there by batched
    ops (:mod:`.augment`), with every random draw from one generator seeded by ``seed``.
    ``randomization`` defaults to :data:`~.augment.LIGHT` with ``intensity``, else none;
    a geometric one resamples labels as one-hot maps when ``n_labels`` <= 16 (smooth class
    boundaries under zoom), else by nearest neighbour.
    """

    def __init__(self, images: list[np.ndarray], extras: list[dict[str, np.ndarray]],
                 items: list[tuple[int, int]], weights: np.ndarray | None,
                 patch: tuple[int, int], batch_size: int, seed: int,
                 flips: bool = True, intensity: bool = False, *, device="cpu",
                 randomization: Randomization | None = None, n_labels: int | None = None,
                 clip: bool = True, crop_fraction: float = 0.5):
        self.device = torch.device(device)
        self.patch, self.batch_size, self.flips, self.clip = tuple(patch), batch_size, flips, clip
        self.random = randomization or (LIGHT if intensity else NONE)
        self.n_labels, self.crop_fraction = n_labels, crop_fraction
        self.item_volume = torch.tensor([v for v, _ in items], device=self.device)
        sizes = torch.tensor([images[v].shape[2:4] for v, _ in items])
        self.extent = torch.maximum(sizes, torch.tensor(self.patch)).to(self.device)
        size = self.extent.max(0).values.tolist()
        planes = images[0].shape[1] + (len(extras[0]) if extras else 0)
        check_allocation(len(items) * planes * size[0] * size[1] * 4,
                         f"{len(items)} training slices of {size[0]} x {size[1]} pixels",
                         SettingsError)
        self.image = _stack([images[v][s] for v, s in items], size, np.float32, self.device)
        keys = list(extras[0]) if extras else []
        self.extras = {k: _stack([extras[v][k][s] for v, s in items], size,
                                 _dtype(extras[0][k]), self.device) for k in keys}
        p = np.ones(len(items)) if weights is None else np.asarray(weights, float)
        self.p = torch.tensor(p / p.sum(), dtype=torch.float32, device=self.device)
        self.g = torch.Generator(device=self.device).manual_seed(seed)
        self.host = torch.Generator().manual_seed(seed + 1)

    def draw(self) -> dict[str, torch.Tensor]:
        """One batch: {"image": (B, C, h, w), each extra key: (B, 1, h, w), "volume": (B,)}."""
        d = Draw(self.g, self.host, self.batch_size, self.device)
        idx = torch.multinomial(self.p, self.batch_size, replacement=True, generator=self.g)
        cy, cx = self._centres(idx, d)
        if self.random.geometric:
            batch, coords = self._resample(idx, cy, cx, d)
        else:
            batch, coords = self._cut(idx, cy, cx, d)
        x = intensity(batch["image"], coords, self.random, d)
        batch["image"] = x.clamp(0.0, 1.0) if self.clip else x
        batch.pop("crop", None)
        batch["volume"] = self.item_volume[idx]
        return batch

    def _centres(self, idx: torch.Tensor, d: Draw) -> tuple[torch.Tensor, torch.Tensor]:
        """Patch centres (pixels): uniform, or on a random foreground pixel of ``crop``."""
        (ph, pw), ext = self.patch, self.extent[idx].float()
        cy = torch.floor(d.uniform(0, 1) * (ext[:, 0] - ph + 1)) + (ph - 1) / 2
        cx = torch.floor(d.uniform(0, 1) * (ext[:, 1] - pw + 1)) + (pw - 1) / 2
        if "crop" not in self.extras:
            return cy, cx
        fg = (self.extras["crop"][idx, 0] > 0).flatten(1)
        has = fg.any(1)
        pick = torch.multinomial(torch.where(has[:, None], fg, True).float(), 1,
                                 generator=self.g)[:, 0]
        width = self.extras["crop"].shape[-1]
        on = has & d.coin(self.crop_fraction)
        return (torch.where(on, (pick // width).float(), cy),
                torch.where(on, (pick % width).float(), cx))

    def _cut(self, idx, cy, cx, d: Draw):
        """Exact crops (no resampling) with random flips; coordinates for the bias field."""
        (ph, pw), ext = self.patch, self.extent[idx]
        y0 = torch.minimum(torch.clamp(torch.round(cy - (ph - 1) / 2), min=0).long(),
                           ext[:, 0] - ph)
        x0 = torch.minimum(torch.clamp(torch.round(cx - (pw - 1) / 2), min=0).long(),
                           ext[:, 1] - pw)
        iy = y0[:, None] + torch.arange(ph, device=self.device)
        ix = x0[:, None] + torch.arange(pw, device=self.device)
        flip_y, flip_x = (d.coin(0.5), d.coin(0.5)) if self.flips else (None, None)

        def cut(t: torch.Tensor) -> torch.Tensor:
            out = t[idx[:, None, None], :, iy[:, :, None], ix[:, None, :]].permute(0, 3, 1, 2)
            if flip_y is not None:
                out = torch.where(flip_y.view(-1, 1, 1, 1), out.flip(2), out)
                out = torch.where(flip_x.view(-1, 1, 1, 1), out.flip(3), out)
            return out.float()

        batch = {"image": cut(self.image), **{k: cut(v) for k, v in self.extras.items()}}
        return batch, _slice_coords(iy.float(), ix.float(), ext)

    def _resample(self, idx, cy, cx, d: Draw):
        """Rotated, zoomed and flipped patches by ``grid_sample`` around the centres."""
        (ph, pw), ext = self.patch, self.extent[idx]
        a = affine_matrices(d, self.random, self.flips)
        oy = torch.arange(ph, device=self.device, dtype=torch.float32) - (ph - 1) / 2
        ox = torch.arange(pw, device=self.device, dtype=torch.float32) - (pw - 1) / 2
        oy, ox = oy.view(1, -1, 1), ox.view(1, 1, -1)
        iy = cy.view(-1, 1, 1) + a[:, 0, 0, None, None] * oy + a[:, 0, 1, None, None] * ox
        ix = cx.view(-1, 1, 1) + a[:, 1, 0, None, None] * oy + a[:, 1, 1, None, None] * ox
        height, width = self.image.shape[-2:]
        grid = torch.stack([(2 * ix + 1) / width - 1, (2 * iy + 1) / height - 1], -1)
        batch = {"image": _sample(self.image[idx], grid, "bilinear")}
        for key, stack in self.extras.items():
            if key == "crop":
                continue
            batch[key] = self._resample_extra(key, stack[idx], grid)
        coords = torch.stack([(2 * ix + 1) / ext[:, 1, None, None] - 1,
                              (2 * iy + 1) / ext[:, 0, None, None] - 1], -1)
        return batch, coords

    def _resample_extra(self, key: str, t: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        n = self.n_labels
        if key == "label" and n is not None and 2 <= n <= MAX_SOFT_CLASSES:
            classes = torch.arange(n, device=t.device, dtype=t.dtype).view(1, -1, 1, 1)
            return _first_max(_sample((t == classes).float(), grid, "bilinear"))
        return _sample(t.float(), grid, "nearest")


MAX_SOFT_CLASSES = 16


def _first_max(p: torch.Tensor) -> torch.Tensor:
    """argmax over the few channels of ``p`` as (B, 1, H, W) floats (faster than argmax)."""
    best, label = p[:, :1], torch.zeros_like(p[:, :1])
    for c in range(1, p.shape[1]):
        better = p[:, c:c + 1] > best
        best = torch.where(better, p[:, c:c + 1], best)
        label = torch.where(better, float(c), label)
    return label


def _sample(t: torch.Tensor, grid: torch.Tensor, mode: str) -> torch.Tensor:
    return F.grid_sample(t.float(), grid, mode=mode, padding_mode="zeros", align_corners=False)


def _slice_coords(iy: torch.Tensor, ix: torch.Tensor, ext: torch.Tensor) -> torch.Tensor:
    """(B, h, w, 2) pixel rows/cols -> (x, y) in [-1, 1] over each slice."""
    y = (2 * iy + 1) / ext[:, :1] - 1
    x = (2 * ix + 1) / ext[:, 1:] - 1
    return torch.stack(torch.broadcast_tensors(x[:, None, :], y[:, :, None]), -1)


def _dtype(a: np.ndarray):
    if a.dtype.kind == "f":
        return np.float32
    return np.uint8 if a.dtype == bool else np.int16


def _stack(slices: list[np.ndarray], size, dtype, device) -> torch.Tensor:
    """(C, h, w) slices -> one zero-padded (N, C, H, W) tensor on ``device``."""
    out = np.zeros((len(slices), slices[0].shape[0], *size), dtype=dtype)
    for i, sl in enumerate(slices):
        out[i, :, : sl.shape[1], : sl.shape[2]] = sl
    return torch.from_numpy(out).to(device)

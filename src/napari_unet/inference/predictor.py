"""Slice-wise inference: run the 2D UNet over the slices of a volume along one axis.

``predict(volume, model, ...)`` returns a :class:`Prediction` whose arrays are plain numpy
arrays in the input's array order and spatial shape, so
``write_volume(pred.labels, path, like=volume)`` writes them aligned with the scan.

- **Normalisation** is fitted once per volume (``model.meta.normalization.fit``), applied
  per batch with MONAI's ``ScaleIntensityRange``.
- **NaN / Inf** voxels are replaced before normalisation: NaN and -Inf by the volume's
  finite minimum, +Inf by its finite maximum, with a warning giving their count. A volume
  with no finite voxel at all raises :class:`VolumeReadError` naming it.
- **Axis** 0, 1, 2 or ``'auto'``: the axis with the largest spacing (the acquisition
  axis); ties, and plain arrays without spacing, use ``model.meta.default_axis``.
- **Memory**: slices stream through in batches into preallocated outputs of the final
  dtype; float32 probability / uncertainty volumes exist only when asked for.
- **Partial runs** (``slices=`` or :func:`predict_slices`): outputs are still full-size;
  only the requested slices are filled (labels 0, image NaN, probabilities 0, uncertainty
  NaN elsewhere), and ``Prediction.slices`` lists them; :meth:`Prediction.merge_into`
  copies just those slices into an existing array (e.g. a labels layer being corrected).

The torch side (fused copy of the net, tiling, TTA, devices, out-of-memory fallback) is in
:mod:`napari_unet.inference.engine`.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace

import numpy as np

from ..errors import Cancelled, TaskError, VolumeReadError
from ..progress import Cancel, Progress

# Default CPU batch: about this many bytes of activations per forward pass (fits in cache
# far better than huge batches, and bounds peak memory for 512 x 512 CT slices).
CPU_ACTIVATION_BUDGET = 64 * 2**20
MAX_BATCH = 64


PRECISIONS = ("auto", "float32", "bfloat16", "float16")


@dataclass
class InferenceSettings:
    """Everything that changes how :func:`predict` runs (the CLI and widgets fill this)."""

    axis: int | str = "auto"
    roi_size: tuple[int, int] | None = None  # None: the model's patch_size
    overlap: float = 0.25
    batch_size: int | None = None  # None: chosen from the slice size and the device
    device: str = "auto"
    tta: bool = False
    probabilities: bool = False  # keep per-class probabilities (float32, channel-last)
    uncertainty: bool = False  # keep the per-voxel uncertainty map (implied by probabilities)
    # auto: bf16/fp16 on CUDA; bf16 for segmentation on CPUs with native bf16 (AVX512-BF16,
    # AMX): about 2x faster there with the same labels; float32 everywhere else
    precision: str = "auto"

    def __post_init__(self):
        if self.axis != "auto" and self.axis not in (0, 1, 2, -1, -2, -3):
            raise TaskError(f"axis must be 0, 1, 2 or 'auto', not {self.axis!r}")
        if not 0.0 <= float(self.overlap) < 1.0:
            raise TaskError(f"overlap must lie in [0, 1) (got {self.overlap})")
        if self.precision not in PRECISIONS:
            raise TaskError(f"precision must be one of {', '.join(PRECISIONS)}, "
                            f"not {self.precision!r}")
        if self.batch_size is not None and int(self.batch_size) < 1:
            raise TaskError(f"batch_size must be >= 1 (got {self.batch_size})")
        if self.roi_size is not None:
            roi = tuple(int(v) for v in np.broadcast_to(self.roi_size, (2,)))
            if min(roi) < 1:
                raise TaskError(f"roi_size must be two positive sizes (got {self.roi_size})")
            self.roi_size = roi

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class Prediction:
    """The result of :func:`predict`; arrays have the input volume's spatial shape."""

    labels: np.ndarray | None = None  # segmentation: task.label_dtype
    image: np.ndarray | None = None  # denoising: float32, input's shape, scan intensities
    probabilities: np.ndarray | None = None  # float32 (Z, Y, X, C), when asked
    uncertainty: np.ndarray | None = None  # float32 in [0, 1], when asked
    slice_uncertainty: np.ndarray | None = None  # mean uncertainty per slice along `axis`
    axis: int = 0
    device: str = "cpu"
    seconds: float = 0.0
    model_hash: str = ""
    slices: np.ndarray | None = None  # indices along `axis` predicted; None: all of them
    settings: InferenceSettings = field(default_factory=InferenceSettings)
    batch_size: int = 1
    roi_size: tuple[int, int] = (0, 0)
    tiled: bool = False

    @property
    def result(self) -> np.ndarray:
        """The labels (segmentation) or the denoised image."""
        return self.labels if self.labels is not None else self.image

    def merge_into(self, target: np.ndarray) -> np.ndarray:
        """Copy the predicted slices of :attr:`result` into ``target`` in place; return it."""
        if target.shape != self.result.shape:
            raise ValueError(f"target shape {target.shape} != prediction {self.result.shape}")
        idx = slice(None) if self.slices is None else self.slices
        np.moveaxis(target, self.axis, 0)[idx] = np.moveaxis(self.result, self.axis, 0)[idx]
        return target


def predict(volume, model, settings: InferenceSettings | int | str | None = None, *,
            progress: Progress | None = None, cancel: Cancel | None = None,
            slices: Sequence[int] | None = None, **overrides) -> Prediction:
    """Segment or denoise ``volume`` (a :class:`Volume` or an array (Z, Y, X[, C])).

    Settings come from ``settings`` and/or keywords named like :class:`InferenceSettings`
    fields (``axis``, ``roi_size``, ``overlap``, ``batch_size``, ``device``, ``tta``,
    ``probabilities``, ``uncertainty``). ``progress(done, total)`` is called after every
    batch (in slices); ``cancel()`` is checked before every batch and, when true, raises
    :class:`Cancelled`. ``slices`` restricts the run to those indices along the axis.
    """
    from ..devices import resolve_device
    from .engine import Engine, cpu_threads

    start = time.perf_counter()
    settings = _settings(settings, overrides)
    array, spacing, name = _unpack(volume)
    _check_channels(array, model, name)
    axis = resolve_axis(settings.axis, spacing, model.meta.default_axis)
    stack = np.moveaxis(array, axis, 0)  # a view: slices along `axis` first
    indices = _indices(slices, len(stack), axis, name)
    roi = settings.roi_size or tuple(model.meta.patch_size)
    device = resolve_device(settings.device)
    batch = settings.batch_size or default_batch_size(stack.shape[1:3], roi, model, device)
    engine = Engine(model, device, batch, roi, settings.overlap, settings.tta,
                    settings.precision)
    prep = _Preprocess(model.meta.normalization.fit(array), _nonfinite_fill(array, name))
    out = _Outputs(model.task, array.shape, axis, settings)
    with cpu_threads(), _no_grad():
        _run(stack, indices, batch, engine, prep, out, progress, cancel)
    return Prediction(
        labels=out.labels, image=out.image, probabilities=out.probs,
        uncertainty=out.unc, slice_uncertainty=out.slice_unc, axis=axis,
        device=str(engine.device), seconds=time.perf_counter() - start,
        model_hash=model.hash, slices=None if slices is None else indices, settings=settings,
        batch_size=batch, roi_size=tuple(roi), tiled=engine.tiled(*stack.shape[1:3]),
    )


def predict_slices(volume, model, slice_indices: Sequence[int],
                   settings: InferenceSettings | None = None, **kwargs) -> Prediction:
    """Predict only ``slice_indices`` along the settings' axis (see the module docstring).

    Give an explicit axis when the indices come from a viewer: with ``'auto'`` they
    refer to the axis :func:`resolve_axis` picks.
    """
    return predict(volume, model, settings, slices=slice_indices, **kwargs)


def resolve_axis(axis: int | str, spacing: Sequence[float] | None, default_axis: int) -> int:
    """0/1/2 as given; 'auto': largest spacing, ties (or no spacing) -> ``default_axis``."""
    if axis != "auto":
        return int(axis) % 3
    if spacing is None:
        return int(default_axis) % 3
    sp = np.asarray(spacing, dtype=float)[:3]
    largest = np.flatnonzero(np.isclose(sp, sp.max(), rtol=1e-3))
    return int(default_axis) % 3 if int(default_axis) % 3 in largest else int(largest[0])


def default_batch_size(slice_hw: Sequence[int], roi: Sequence[int], model, device) -> int:
    """Slices per batch from the activation memory of one slice (or tile) of the UNet."""
    arch = model.meta.architecture
    h, w = (min(int(a), int(r)) for a, r in zip(slice_hw, roi, strict=True))
    pixels = (-(-h // 16) * 16) * (-(-w // 16) * 16)
    per_pixel = 4 * (6 * arch.base + 2 * arch.in_channels + 3 * arch.out_channels)
    budget = CPU_ACTIVATION_BUDGET
    if device.type == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info(device)
        budget, per_pixel = free // 4, per_pixel // 2  # half precision under autocast
    return int(np.clip(budget // (pixels * per_pixel), 1, MAX_BATCH))


def _settings(settings, overrides: dict) -> InferenceSettings:
    if settings is not None and not isinstance(settings, InferenceSettings):
        overrides = {"axis": settings, **overrides}  # predict(volume, model, 2) = axis 2
        settings = None
    known = {f.name for f in fields(InferenceSettings)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TypeError(f"predict() got unknown settings {unknown}; known: {sorted(known)}")
    return replace(settings or InferenceSettings(), **overrides)


def _unpack(volume) -> tuple[np.ndarray, tuple | None, str]:
    array = getattr(volume, "array", volume)
    spacing = getattr(volume, "spacing", None)
    name = getattr(volume, "name", None) or "array"
    array = np.asarray(array)
    if array.ndim not in (3, 4):
        raise TaskError(f"{name}: expected a 3D volume (Z, Y, X) or (Z, Y, X, C), "
                        f"got shape {array.shape}")
    if array.dtype.kind not in "biuf":
        raise TaskError(f"{name}: cannot predict from {array.dtype} voxels")
    return array, spacing, name


def _check_channels(array: np.ndarray, model, name: str) -> None:
    have = array.shape[3] if array.ndim == 4 else 1
    want = model.task.in_channels
    if have != want:
        raise TaskError(f"{name}: has {have} channel(s) but model {model.name!r} expects "
                        f"{want} ({model.task.describe()})")


def _indices(slices, n: int, axis: int, name: str) -> np.ndarray:
    if slices is None:
        return np.arange(n)
    idx = np.asarray(list(slices), dtype=np.int64).reshape(-1)
    bad = idx[(idx < -n) | (idx >= n)]
    if bad.size:
        raise ValueError(f"{name}: slice indices {bad.tolist()} out of range for {n} "
                         f"slices along axis {axis}")
    return np.unique(idx % n)


def _nonfinite_fill(array: np.ndarray, name: str) -> tuple[float, float] | None:
    """None for clean volumes; else (low, high) fill values, with a warning."""
    if array.dtype.kind != "f":
        return None
    chunks = [array[i : i + 16] for i in range(0, len(array), 16)]
    n_bad = sum(int(c.size - np.count_nonzero(np.isfinite(c))) for c in chunks)
    if not n_bad:
        return None
    finite = [c[np.isfinite(c)] for c in chunks]
    finite = [f for f in finite if f.size]
    if not finite:
        raise VolumeReadError(f"{name}: every voxel is NaN or Inf; nothing to predict from")
    low = float(min(f.min() for f in finite))
    high = float(max(f.max() for f in finite))
    warnings.warn(f"{name}: {n_bad} NaN/Inf voxel(s) replaced before normalisation (NaN and "
                  f"-Inf by the finite minimum {low:g}, +Inf by the maximum {high:g})",
                  RuntimeWarning, stacklevel=3)
    return low, high


@dataclass
class _Preprocess:
    """Slices (B, H, W[, C]) as stored -> normalised (B, C, H, W) float32, channels-last."""

    fitted: object
    fill: tuple[float, float] | None

    def __call__(self, raw: np.ndarray):
        import torch

        if self.fill is not None:
            raw = np.nan_to_num(raw, nan=self.fill[0], neginf=self.fill[0], posinf=self.fill[1])
        if raw.ndim == 3:
            raw = raw[..., None]
        x = self.fitted.forward(np.ascontiguousarray(raw))
        x = x.as_tensor() if hasattr(x, "as_tensor") else torch.as_tensor(x)
        return x.float().permute(0, 3, 1, 2)


class _Outputs:
    """Preallocated result arrays, filled batch by batch through slice-first views."""

    def __init__(self, task, shape: tuple[int, ...], axis: int, settings: InferenceSettings):
        self.task, self.axis = task, axis
        spatial = shape[:3]
        seg = task.kind == "segment"
        self.labels = np.zeros(spatial, task.label_dtype) if seg else None
        self.image = None if seg else np.full(shape, np.nan, np.float32)
        want_probs = settings.probabilities and seg
        c = task.out_channels
        self.probs = np.zeros((*spatial, c), np.float32) if want_probs else None
        want_unc = (settings.probabilities or settings.uncertainty) and (seg or settings.tta)
        self.unc = np.full(spatial, np.nan, np.float32) if want_unc else None
        self.slice_unc = np.full(shape[axis], np.nan, np.float32) if seg or settings.tta else None

    def write(self, idx, probs, variance, fitted) -> None:
        from .uncertainty import entropy_map, spread_map

        first = (lambda a: np.moveaxis(a, self.axis, 0))  # noqa: E731
        if self.labels is not None:
            first(self.labels)[idx] = self.task.decide(probs).numpy()
        else:
            img = fitted.inverse(probs.permute(0, 2, 3, 1).numpy())
            first(self.image)[idx] = img if self.image.ndim == 4 else img[..., 0]
        if self.probs is not None:
            first(self.probs)[idx] = probs.permute(0, 2, 3, 1).numpy()
        if self.slice_unc is None:
            return
        unc = entropy_map(probs, self.task) if variance is None else spread_map(variance)
        self.slice_unc[idx] = unc.mean(dim=(1, 2)).numpy()
        if self.unc is not None:
            first(self.unc)[idx] = unc.numpy()


def _run(stack, indices, batch, engine, prep, out, progress, cancel) -> None:
    total = len(indices)
    for done in range(0, total, batch):
        if cancel is not None and cancel():
            raise Cancelled(f"cancelled after {done} of {total} slices")
        idx = indices[done : done + batch]
        run = idx[-1] - idx[0] == len(idx) - 1  # a run of slices: views, not copies
        sel = slice(int(idx[0]), int(idx[-1]) + 1) if run else idx
        probs, variance = engine(prep(stack[sel]))
        out.write(sel, probs, variance, prep.fitted)
        if progress is not None:
            progress(min(done + batch, total), total)


def _no_grad():
    import torch

    return torch.inference_mode()

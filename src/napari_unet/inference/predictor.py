"""Slice-wise inference: run the 2D UNet over the slices of a volume along one axis.

``predict(volume, model, ...)`` returns a :class:`Prediction` whose arrays are plain numpy
arrays in the input's array order and spatial shape, so
``write_volume(pred.labels, path, like=volume)`` writes them aligned with the scan.

- **The device does the work**: batches of raw slices travel to the device once, in their
  stored dtype (:mod:`~napari_unet.inference.staging`: pinned memory and a side stream on
  CUDA); normalisation, the net, tile blending, activation, decisions, probabilities and
  uncertainty all run there, and only the results asked for come back (uint8 labels for
  a segmentation). The same code runs on the CPU, where "the device" is the host.
- **Normalisation** is fitted once per volume (``model.meta.normalization.fit``) and
  applied per batch with MONAI's ``ScaleIntensityRange``.
- **NaN / Inf** voxels are replaced before normalisation: NaN and -Inf by the volume's
  finite minimum, +Inf by its finite maximum, with a warning giving their count. A volume
  with no finite voxel at all raises :class:`VolumeReadError` naming it. Boolean volumes
  are read as 0/1.
- **Axis** ``'axial'``, ``'coronal'``, ``'sagittal'`` (found from the direction cosines),
  an array axis 0, 1, 2, or ``'auto'``: the axis with the largest spacing (the
  acquisition axis); ties, and plain arrays without spacing, use
  ``model.meta.default_axis``.
- **Pixel spacing** (:mod:`~napari_unet.inference.resample`): a model that records the
  in-plane spacing it learned at sees every scan's slices resampled to it, and its
  outputs come back on the scan's own grid (``resample=False`` turns this off).
- **Whole slices or tiles** (:mod:`~napari_unet.inference.budget`): whole slices when one
  fits the memory budget, MONAI tiles of the model's patch size otherwise or of
  ``roi_size`` when given.
- **Memory**: slices stream through in batches into preallocated outputs of the final
  dtype; float32 probability / uncertainty volumes exist only when asked for.
- **Partial runs** (``slices=`` or :func:`predict_slices`): outputs are still full-size;
  only the requested slices are filled (labels 0, image NaN, probabilities 0, uncertainty
  NaN elsewhere), and ``Prediction.slices`` lists them; :meth:`Prediction.merge_into`
  copies just those slices into an existing array (e.g. a labels layer being corrected).

The net itself (precision, tiling, TTA, out-of-memory fallback) is in
:mod:`napari_unet.inference.engine`.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace

import numpy as np

from ..errors import Cancelled, SettingsError, TaskError, VolumeReadError
from ..io.geometry import PLANES, plane_axis
from ..progress import Cancel, Progress
from .planes import PLANE_MODES, planes_wanted, predict_planes

PRECISIONS = ("auto", "float32", "bfloat16", "float16")


@dataclass
class InferenceSettings:
    """Everything that changes how :func:`predict` runs (the CLI and widgets fill this)."""

    axis: int | str = "auto"
    # None: whole slices when one fits the memory budget, else tiles of the model's
    # patch size; (H, W): MONAI tiles of that size wherever a slice is larger
    roi_size: tuple[int, int] | None = None
    overlap: float = 0.25
    batch_size: int | None = None  # None: chosen from the slice size and the device
    device: str = "auto"
    tta: bool = False
    probabilities: bool = False  # keep per-class probabilities (float32, channel-last)
    uncertainty: bool = False  # keep the per-voxel uncertainty map (implied by probabilities)
    # auto: bf16 for segmentation on CUDA and on CPUs with native bf16 (AVX512-BF16, AMX),
    # labels equal to float32's on >= 99.9 % of voxels; float32 elsewhere (TF32 convs
    # allowed on CUDA). float32: strict float32 everywhere, also on CUDA
    precision: str = "auto"
    # CUDA: deterministic cuDNN kernels, no autotuning (the same bits every run; the CPU
    # always is repeatable)
    deterministic: bool = False
    # run the net at the model's pixel spacing (when it records one) and bring the outputs
    # back to the scan's grid; False: the scan's own pixels go through the net
    resample: bool = True
    # segmentation along "one" plane (``axis``), or "all" three with the class
    # probabilities averaged (near-cubic voxels only); "auto": the model's default_planes
    planes: str = "auto"
    # compute only where the answer can differ from the model's answer on air (the scan's
    # foreground and a margin, see inference.crop); False: every pixel, for parity checks
    crop: bool = True

    def __post_init__(self):
        if self.axis not in ("auto", *PLANES, 0, 1, 2, -1, -2, -3):
            raise SettingsError(f"axis must be 'auto', {', '.join(PLANES)}, or an array "
                                f"axis 0, 1, 2; not {self.axis!r}")
        if not 0.0 <= float(self.overlap) < 1.0:
            raise SettingsError(f"overlap must lie in [0, 1) (got {self.overlap})")
        if self.precision not in PRECISIONS:
            raise SettingsError(f"precision must be one of {', '.join(PRECISIONS)}, "
                                f"not {self.precision!r}")
        if self.planes not in PLANE_MODES:
            raise SettingsError(f"planes must be one of {', '.join(PLANE_MODES)}, not "
                                f"{self.planes!r}")
        if self.batch_size is not None and int(self.batch_size) < 1:
            raise SettingsError(f"batch_size must be >= 1 (got {self.batch_size})")
        if self.roi_size is not None:
            roi = tuple(int(v) for v in np.broadcast_to(self.roi_size, (2,)))
            if min(roi) < 1:
                raise SettingsError(f"roi_size must be two positive sizes (got {self.roi_size})")
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
    # segmentation: per slice along `axis` and foreground class, the sums behind the
    # model's own Dice estimate (uncertainty.agreement_sums); NaN where not predicted
    class_sums: np.ndarray | None = None
    axis: int = 0
    device: str = "cpu"
    seconds: float = 0.0
    model_hash: str = ""
    slices: np.ndarray | None = None  # indices along `axis` predicted; None: all of them
    settings: InferenceSettings = field(default_factory=InferenceSettings)
    batch_size: int = 1
    roi_size: tuple[int, int] = (0, 0)  # one forward item: the tile, or the whole slice
    tiled: bool = False
    net_size: tuple[int, int] | None = None  # slices resampled to this size for the net
    notes: tuple[str, ...] = ()  # what was repaired in the input (also warned), to show
    planes: int = 1  # planes whose probabilities were averaged (see inference.planes)
    computed: float = 1.0  # share of the slices' pixels that went through the net

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
    ``probabilities``, ``uncertainty``, ``precision``, ``deterministic``, ``resample``,
    ``planes``, ``crop``).
    ``progress(done, total)`` is called after every
    batch (in slices weighted by their work; with three planes, one bar over the planes'
    passes: :mod:`.planes`); ``cancel()`` is checked before every batch and, when true, raises
    :class:`Cancelled`. ``slices`` restricts the run to those indices along the axis.
    """
    start = time.perf_counter()
    settings = _settings(settings, overrides)
    array, spacing, name = _unpack(volume)
    _check_channels(array, model, name)
    axis = resolve_axis(settings.axis, spacing, model.meta.default_axis,
                        getattr(volume, "direction", None), array.shape)
    _indices(slices, array.shape[axis], axis, name)
    if planes_wanted(settings.planes, model):
        pred = predict_planes(volume, model, settings, axis, slices, progress, cancel)
        return replace(pred, seconds=time.perf_counter() - start)
    return along_axis(volume, model, settings, axis, slices, progress, cancel)


@dataclass(frozen=True)
class Prepared:
    """What a run needs from the whole scan, made once and shared by the planes' passes:
    its normalisation, the NaN/Inf repair and the foreground the net is cropped to."""

    fitted: object
    fill: tuple[float, float] | None
    notes: tuple[str, ...]
    foreground: object | None  # inference.crop.Foreground; None: every pixel is computed

    @classmethod
    def of(cls, array: np.ndarray, model, settings: InferenceSettings, name: str
           ) -> Prepared:
        from .crop import foreground

        fill, notes = _nonfinite_fill(array, name)
        fitted = model.meta.normalization.fit(array)
        fg = (foreground(array, fitted, model.task.kind != "segment", fill)
              if settings.crop else None)
        return cls(fitted, fill, notes, fg)


def along_axis(volume, model, settings: InferenceSettings, axis: int,
               slices: Sequence[int] | None = None, progress: Progress | None = None,
               cancel: Cancel | None = None, prepared: Prepared | None = None,
               probabilities_only: bool = False, start: np.ndarray | None = None
               ) -> Prediction:
    """:func:`predict` along one plane (``axis``, resolved) whatever ``settings.planes``
    says; ``prepared`` reuses the scan's normalisation and foreground.
    ``probabilities_only`` (segmentation): keep the class probabilities and nothing else
    (labels all 0), for a caller that decides from several passes; with ``start``
    (probabilities, channel-last, float32) the pass writes into that array, in place, only
    the crops it computes (its foreground says where this pass may change them)."""
    from .engine import cpu_threads

    began = time.perf_counter()
    array, spacing, name = _unpack(volume)
    stack = np.moveaxis(array, axis, 0)  # a view: slices along `axis` first
    indices = _indices(slices, len(stack), axis, name)
    engine, how, size = _engine(model, settings, stack.shape[1:3], spacing, axis)
    prepared = prepared or Prepared.of(array, model, settings, name)
    prep = _Preprocess(prepared.fitted, prepared.fill)
    out = _Outputs(model.task, array.shape, axis, settings, probabilities_only, start)
    with cpu_threads(), _no_grad():
        windows = _windows(engine, prepared.foreground, axis, indices, stack.shape[1:3],
                           model.meta.slice_context)
        share = _run(stack, indices, how.batch, engine, prep, out, progress, cancel,
                     model.meta.slice_context, windows)
    out.blank(_stand_ins(volume, len(array)), array)
    return Prediction(
        labels=out.labels, image=out.image, probabilities=out.probs,
        uncertainty=out.unc, slice_uncertainty=out.slice_unc, class_sums=out.sums, axis=axis,
        device=str(engine.device), seconds=time.perf_counter() - began,
        notes=prepared.notes, model_hash=model.hash,
        slices=None if slices is None else indices, settings=settings,
        batch_size=how.batch, roi_size=how.item_hw,
        tiled=engine.tiled(*(size or stack.shape[1:3])), net_size=size, computed=share,
    )


def _engine(model, settings: InferenceSettings, hw, spacing, axis: int):
    """The Engine for slices of ``hw`` along ``axis``, its plan and its net size."""
    from ..devices import resolve_device
    from .budget import plan
    from .engine import Engine, compute_dtype

    device = resolve_device(settings.device)
    itemsize = compute_dtype(device, settings.precision, model.task).itemsize
    size = _net_size(hw, spacing, axis, model, settings)
    how = plan(model, size or hw, settings.roi_size, settings.batch_size, device, itemsize)
    engine = Engine(model, device, how.batch, how.tile, settings.overlap, settings.tta,
                    settings.precision, settings.deterministic, size)
    return engine, how, size


def make_kernels(volume, model, settings: InferenceSettings, axes: Sequence[int],
                 cancel: Cancel | None = None) -> int:
    """Run the net once on every input shape a prediction of ``volume`` along ``axes``
    will give it (whole slices, each crop size in its batches) that this process has not
    run yet, until ``cancel()``: oneDNN (or cuDNN) makes kernels for each new shape,
    about 25 ms apiece on the CPU, 40 to 60 of them for three planes of a head. Returns
    how many it ran.
    The other planes' crops are those of every slice with foreground, a superset."""
    import torch

    from .crop import runs, shape_of
    from .engine import cpu_threads
    from .staging import group_size

    array, spacing, name = _unpack(volume)
    prepared = Prepared.of(array, model, settings, name)
    made = 0
    with cpu_threads(), _no_grad():
        for axis in axes:
            hw = tuple(np.moveaxis(array, axis, 0).shape[1:3])
            engine, how, size = _engine(model, settings, hw, spacing, axis)
            indices = np.arange(array.shape[axis])
            windows = _windows(engine, prepared.foreground, axis, indices, hw,
                               model.meta.slice_context)
            for group, wins in runs(indices, windows, how.batch):
                shape = (size or hw) if wins is None else shape_of(wins[0])
                if shape == () or engine.tiled(*shape):  # no foreground; MONAI's tiles
                    continue
                for x in engine.inputs(group_size(group), *shape):
                    if cancel is not None and cancel():
                        return made
                    if not engine.has_run(x):
                        engine._predict(torch.zeros(x, device=engine.device))
                        made += 1
    return made


def _windows(engine, fg, axis: int, indices: np.ndarray, hw, context: int) -> list | None:
    """Each slice's crop (None: whole), after the background answer is known; None
    without a foreground (every pixel is computed)."""
    if fg is None:
        return None
    from .crop import context_boxes

    engine.background(fg.value)
    boxes = context_boxes(fg.boxes(axis), context)
    return [engine.window(boxes[i], hw) for i in indices]


def predict_slices(volume, model, slice_indices: Sequence[int],
                   settings: InferenceSettings | None = None, **kwargs) -> Prediction:
    """Predict only ``slice_indices`` along the settings' axis (see the module docstring).

    Give an explicit axis when the indices come from a viewer: with ``'auto'`` they
    refer to the axis :func:`resolve_axis` picks.
    """
    return predict(volume, model, settings, slices=slice_indices, **kwargs)


def _net_size(hw, spacing, axis: int, model, settings: InferenceSettings):
    """The slice size at the model's pixel spacing; None: the scan's own pixels."""
    from .resample import size_at

    return size_at(hw, spacing, axis, model.meta.pixel_spacing) if settings.resample else None


def resolve_axis(axis: int | str, spacing: Sequence[float] | None, default_axis: int,
                 direction=None, shape: Sequence[int] | None = None) -> int:
    """0/1/2 as given; a plane by the direction cosines; 'auto': a single image's own plane
    (the one axis of ``shape`` with one voxel: a 2D DICOM whose pixels are wider than its
    nominal 1 mm slice was run as 1024 one-pixel-wide slices), else the largest spacing,
    ties (or no spacing) -> ``default_axis``."""
    if axis in PLANES:
        if direction is None:
            raise SettingsError(f"{axis!r} slices need a scan with an orientation; for a "
                                "plain array give the array axis 0, 1 or 2")
        return plane_axis(axis, direction)
    if axis != "auto":
        return int(axis) % 3
    single = [] if shape is None else [a for a in range(3) if int(shape[a]) == 1]
    if len(single) == 1:
        return single[0]
    if spacing is None:
        return int(default_axis) % 3
    sp = np.asarray(spacing, dtype=float)[:3]
    largest = np.flatnonzero(np.isclose(sp, sp.max(), rtol=1e-3))
    return int(default_axis) % 3 if int(default_axis) % 3 in largest else int(largest[0])


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
        raise VolumeReadError(f"{name}: expected a 3D volume (Z, Y, X) or (Z, Y, X, C), "
                              f"got shape {array.shape}")
    if array.dtype.kind not in "biuf":
        raise VolumeReadError(f"{name}: cannot predict from {array.dtype} voxels (numbers "
                              "or booleans are needed)")
    if array.dtype.kind == "b":  # a mask: False/True are intensities 0/1
        array = array.view(np.uint8)
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


def _nonfinite_fill(array: np.ndarray, name: str) -> tuple[tuple[float, float] | None,
                                                            tuple[str, ...]]:
    """(None, ()) for clean volumes; else (low, high) fill values and the note, warned too."""
    if array.dtype.kind != "f":
        return None, ()
    chunks = [array[i : i + 16] for i in range(0, len(array), 16)]
    n_bad = sum(int(c.size - np.count_nonzero(np.isfinite(c))) for c in chunks)
    if not n_bad:
        return None, ()
    finite = [c[np.isfinite(c)] for c in chunks]
    finite = [f for f in finite if f.size]
    if not finite:
        raise VolumeReadError(f"{name}: every voxel is NaN or Inf; nothing to predict from")
    low = float(min(f.min() for f in finite))
    high = float(max(f.max() for f in finite))
    note = (f"{name}: {n_bad} NaN/Inf voxel(s) replaced before normalisation (NaN and -Inf "
            f"by the finite minimum {low:g}, +Inf by the maximum {high:g})")
    warnings.warn(note, RuntimeWarning, stacklevel=3)
    return (low, high), (note,)


@dataclass
class _Preprocess:
    """Raw slices (B, H, W[, C]) on the device -> normalised (B, C, H, W) float32 there."""

    fitted: object
    fill: tuple[float, float] | None

    def __call__(self, raw):
        import torch

        if self.fill is not None:
            raw = torch.nan_to_num(raw, nan=self.fill[0], neginf=self.fill[0],
                                   posinf=self.fill[1])
        if raw.ndim == 3:
            raw = raw.unsqueeze(-1)
        x = self.fitted.forward(raw)
        x = x.as_tensor() if hasattr(x, "as_tensor") else x
        return x.float().permute(0, 3, 1, 2)  # channels-last strides, no copy


class _Outputs:
    """Preallocated host arrays, filled batch by batch; decisions are made on the device."""

    def __init__(self, task, shape: tuple[int, ...], axis: int, settings: InferenceSettings,
                 probabilities_only: bool = False, start: np.ndarray | None = None):
        self.task, self.axis = task, axis
        spatial = shape[:3]
        seg = task.kind == "segment"
        # probabilities only (a pass of several planes): labels stay 0 until decided later
        self.only = probabilities_only and seg
        self.partial = self.only and start is not None  # write only what was computed
        self.labels = np.zeros(spatial, task.label_dtype) if seg else None
        self.image = None if seg else np.full(shape, np.nan, np.float32)
        want_probs = (settings.probabilities or self.only) and seg
        c = task.out_channels
        if self.partial:
            self.probs = start
        else:
            self.probs = np.zeros((*spatial, c), np.float32) if want_probs else None
        want_unc = ((settings.probabilities or settings.uncertainty) and (seg or settings.tta)
                    and not self.only)
        self.unc = np.full(spatial, np.nan, np.float32) if want_unc else None
        want_slice_unc = (seg or settings.tta) and not self.only
        self.slice_unc = np.full(shape[axis], np.nan, np.float32) if want_slice_unc else None
        self.sums = (np.full((shape[axis], n_sums(task), 3), np.nan)
                     if seg and not self.only else None)

    def blank(self, stand_ins: list[int], array: np.ndarray) -> None:
        """No result where the scan has no data (blank slices standing in for missing
        ones): background labels, the blank as the denoised image, no probabilities."""
        if not stand_ins:
            return
        if self.labels is not None:
            self.labels[stand_ins] = 0
        if self.image is not None:
            self.image[stand_ins] = array[stand_ins]
        if self.probs is not None:
            self.probs[stand_ins] = 0.0
            self.probs[stand_ins, ..., 0] = 1.0 if self.probs.shape[-1] > 1 else 0.0
        if self.sums is not None and self.axis == 0:  # no data, nothing to trust or not
            self.sums[stand_ins] = np.nan

    def write(self, idx, probs, variance, fitted, boxes=None) -> None:
        """Fill slices ``idx`` from device tensors; only what is kept is copied back.
        ``boxes`` (r0, r1, c0, c1 per slice; None: none): the parts computed, for a pass
        that writes only those."""
        from .uncertainty import agreement_sums, entropy_map, spread_map

        first = (lambda a: np.moveaxis(a, self.axis, 0))  # noqa: E731
        if self.partial:
            rows = np.arange(idx.start, idx.stop) if isinstance(idx, slice) else idx
            for k, (r0, r1, c0, c1) in enumerate(boxes or []):
                first(self.probs)[int(rows[k]), r0:r1, c0:c1] = _host(
                    probs[k, :, r0:r1, c0:c1].permute(1, 2, 0))
            return
        if self.only:
            first(self.probs)[idx] = _host(probs.permute(0, 2, 3, 1))
            return
        if self.labels is not None:
            decided = self.task.decide(probs)
            first(self.labels)[idx] = _host(_label_tensor(decided, self.task))
            self.sums[idx] = _host(agreement_sums(probs, decided, self.task))
        else:
            img = _host(fitted.inverse(probs.permute(0, 2, 3, 1)))
            first(self.image)[idx] = img if self.image.ndim == 4 else img[..., 0]
        if self.probs is not None:
            first(self.probs)[idx] = _host(probs.permute(0, 2, 3, 1))
        if self.slice_unc is None:
            return
        unc = entropy_map(probs, self.task) if variance is None else spread_map(variance)
        self.slice_unc[idx] = _host(unc.mean(dim=(1, 2)))
        if self.unc is not None:
            first(self.unc)[idx] = _host(unc)


def n_sums(task) -> int:
    """Foreground classes in :attr:`Prediction.class_sums` (all pooled into one when many)."""
    from .uncertainty import MAX_CLASS_SUMS

    k = 1 if task.is_binary else task.n_classes - 1
    return k if k <= MAX_CLASS_SUMS else 1


def _stand_ins(volume, n: int) -> list[int]:
    """Array slices (axis 0) that stand in for DICOM slices missing from the series: they
    hold no data, so results there are background (labels) or the blank itself."""
    index = getattr(getattr(volume, "source", None), "slice_index", None)
    return [] if index is None else sorted(set(range(n)) - set(index))


def _label_tensor(labels, task):
    """Labels in the narrowest dtype torch and numpy share, before they leave the device."""
    import torch

    return labels.to(torch.uint8 if task.label_dtype == np.uint8 else torch.int32)


def _host(t) -> np.ndarray:
    return t.cpu().numpy()


def _run(stack, indices, batch, engine, prep, out, progress, cancel, context: int,
         windows: list | None = None) -> float:
    """Batches in order; batch k+1 is uploaded while batch k computes (on CUDA). With a
    slice ``context``, each batch loads its slices' neighbours too and stacks them. With
    ``windows``, a batch holds slices of one crop and slices without foreground are
    filled without going through the net. Returns the share of pixels computed."""
    from torch.profiler import record_function

    from .crop import runs
    from .engine import STAGE_NORMALISE, STAGE_OUTPUTS, STAGE_UPLOAD
    from .staging import SlabLoader, context_rows, group_size

    total, done = len(indices), 0
    groups = runs(indices, windows, batch)
    work = [(g, w) for g, w in groups if w is None or not w[0].empty]
    loads = [context_rows(g, context, len(stack)) if context else (g, None) for g, _ in work]
    loader = SlabLoader(stack, [load for load, _ in loads], engine.device)
    loader.prefetch(0)
    k, hw, pixels = 0, stack.shape[1:3], 0.0
    report = _WorkDone(groups, engine, hw, total, progress)
    for sel, wins in groups:
        if cancel is not None and cancel():
            raise Cancelled(f"cancelled after {done} of {total} slices")
        n = group_size(sel)
        boxes = [(0, hw[0], 0, hw[1])] * n
        if wins is not None and wins[0].empty:
            probs, variance = engine.filled(n, hw)
            boxes = None
        else:
            with record_function(STAGE_UPLOAD):
                raw = loader.get(k)
            with record_function(STAGE_NORMALISE):
                x = _stacked(prep(raw), loads[k][1])
            before = engine.uncropped
            probs, variance = engine(x, wins)
            whole = wins is None or engine.uncropped > before
            if not whole:
                boxes = [w.box(hw, engine.size) for w in wins]
            pixels += n if whole else sum(w.share(hw, engine.size) for w in wins)
            k += 1
            with record_function(STAGE_UPLOAD):
                loader.prefetch(k)  # host staging and upload overlap the queued GPU work
        with record_function(STAGE_OUTPUTS):
            out.write(sel, probs, variance, prep.fitted, boxes)
        done += n
        report(sel, wins)
    return pixels / max(1, total)


class _WorkDone:
    """Progress in slices weighted by what each group costs to compute (its pixels through
    the net, its calls, its new shapes: ``Engine.cost``; an empty slice: nothing), so that
    the pace a time-left estimate reads from it is even: crops of a head's top and of its
    middle differ several-fold, and slices run grouped by crop."""

    def __init__(self, groups, engine, hw, total: int, progress):
        self.total, self.progress, self.done = total, progress, 0.0
        seen: set = set()
        self.weights = [self._weight(sel, wins, engine, hw, seen) for sel, wins in groups]
        self.sum = sum(self.weights)
        self.k = 0

    @staticmethod
    def _weight(sel, wins, engine, hw, seen: set) -> float:
        from .crop import shape_of
        from .staging import group_size

        n = group_size(sel)
        if wins is None:
            return engine.cost(n, *(engine.size or hw), seen)
        if wins[0].empty:
            return 0.0
        return engine.cost(n, *shape_of(wins[0]), seen)

    def __call__(self, sel, wins) -> None:
        self.done += self.weights[self.k]
        self.k += 1
        if self.progress is not None:
            share = self.done / self.sum if self.sum else self.k / len(self.weights)
            self.progress(min(self.total, round(self.total * share)), self.total)


def _stacked(x, rows):
    """(L, C, H, W) loaded slices -> (B, (2k+1) C, H, W): each slice with its neighbours."""
    if rows is None:
        return x
    import torch

    return x[torch.as_tensor(rows, device=x.device)].flatten(1, 2)


def _no_grad():
    import torch

    return torch.inference_mode()

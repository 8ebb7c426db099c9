"""``train``: a UNet for segmentation or denoising from volumes, reproducibly."""

from __future__ import annotations

import contextlib
import copy
import datetime as _dt
import os
from dataclasses import replace

import numpy as np
import torch

from ..errors import Cancelled, SettingsError, TaskError
from ..limits import check_allocation
from ..model.normalize import Normalization
from ..model.tasks import TaskSpec, make_task
from . import recipes
from .data import MAX_CLASSES, Source, label_maximum, load_source
from .determinism import deterministic_mode
from .loop import LoopConfig, run_loop
from .losses import make_loss
from .settings import TrainResult, TrainSettings
from .spacing import model_spacing, to_model_spacing

CT_WINDOW = Normalization("window", -1000.0, 1000.0)


def train(images, labels=None, *, settings: TrainSettings | None = None, progress=None,
          cancel=None, on_metrics=None, **options) -> TrainResult:
    """Train a UNet on 2D slices of ``images`` (and ``labels`` for segmentation).

    ``images``/``labels``: one or a list of Volumes, file paths or arrays; they pair up in
    order. Settings come as keyword arguments (see :class:`TrainSettings`) or a
    ``settings`` object. ``progress(done, total)``, ``cancel()`` (raises
    :class:`~napari_unet.errors.Cancelled`) and ``on_metrics(dict)`` (each log/validation
    step) follow the inference contract; a cancelled run's exception carries the model
    trained so far as ``exc.partial`` (a TrainResult, stopped_by "cancelled"). For
    self-supervised denoising, ``labels`` may hold clean references, used only to report
    validation PSNR.
    """
    s = replace(settings, **options) if settings is not None else TrainSettings(**options)
    from ..devices import resolve_device

    device = resolve_device(s.device)
    sources = [load_source(x, i) for i, x in enumerate(_as_list(images))]
    targets = [load_source(x, i, "labels", sources[i] if i < len(sources) else None)
               for i, x in enumerate(_as_list(labels))]
    _check_pairs(s, sources, targets)
    s = replace(s, axis=slice_axis(s.axis, sources))
    init = _init_model(s.init)
    parent = None if init is None else {"name": init.name, "hash": init.hash}
    task = _task(s, sources, targets, init)
    s = replace(s, slice_context=_slice_context(s, init))
    norm = s.normalization or (init.meta.normalization if init else _default_norm(sources))
    pixel = model_spacing(task.kind, sources, s.axis, init)
    resampled = to_model_spacing(sources, targets, s.axis, pixel)
    model = _new_model(s, task, norm, init, pixel, class_codes=_class_codes(s, task, targets))
    cfg = LoopConfig(s.iterations, s.time_budget, s.lr, val_every=s.val_every, device=device,
                     channels_last=s.channels_last, log_every=s.log_every,
                     autocast=training_autocast(device, s.precision, task))
    threads = s.threads or busy_cpu_threads(s, device)
    with _threads(threads), deterministic_mode(model.net, device, s.deterministic):
        recipe = _recipe(s, task, sources, targets, norm, device)  # labels checked here
        model.meta = replace(model.meta, intensity_profile=_intensity_profile(
            s, task, sources, targets, norm, init))
        recipe.info["threads"] = torch.get_num_threads() if device.type == "cpu" else None
        if resampled:
            recipe.info["resampled_to_pixel_spacing"] = resampled
        try:
            out = run_loop(model.net, recipe.next_batch, make_loss(task), cfg,
                           recipe.validate, progress=progress, cancel=cancel,
                           on_metrics=on_metrics)
        except Cancelled as exc:  # keep the partly trained model reachable: exc.partial
            exc.partial = _result(model, exc.outcome, s, sources, parent, recipe.info, device)
            raise
    return _result(model, out, s, sources, parent, recipe.info, device)


def busy_cpu_threads(s: TrainSettings, device: torch.device) -> int | None:
    """Torch threads for a time-budgeted CPU run: no more than the cores idle right now.

    On a shared machine more threads than idle cores is far slower, not faster: each op
    waits for its slowest thread (measured here with two cores and a load average of 4:
    1.9 s per iteration with two threads, 0.45 s with one). Runs with an iteration count
    keep torch's setting, so that the same seed gives the same weights.
    """
    if device.type != "cpu" or s.time_budget is None:
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    idle = (cores or 1) - os.getloadavg()[0]
    return max(1, min(torch.get_num_threads(), round(idle)))


def training_autocast(device: torch.device, precision: str, task: TaskSpec):
    """The forward pass's autocast dtype, or None for plain float32: inference's rule
    (:func:`~napari_unet.inference.engine.compute_dtype`), except that on CUDA ``auto``
    trains every task in mixed precision (the loss is taken in float32 either way)."""
    from ..inference.engine import compute_dtype

    if precision == "auto" and device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    dtype = compute_dtype(device, precision, task)
    return None if dtype == torch.float32 else dtype


@contextlib.contextmanager
def _threads(n: int | None):
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _result(model, out, s, sources, parent, info, device) -> TrainResult:
    prov = _provenance(s, sources, parent, out, info, device)
    model.meta = replace(model.meta, provenance={**model.meta.provenance, **prov}, hash="")
    return TrainResult(model, out.history, out.metrics, out.losses, out.iterations,
                       out.seconds, out.stopped_by)


def _as_list(x) -> list:
    if x is None:
        return []
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _check_pairs(s: TrainSettings, images: list[Source], labels: list[Source]) -> None:
    if not images:
        raise TaskError("no training images given")
    if s.task == "segment" and len(labels) != len(images):
        raise TaskError(f"segmentation needs one label volume per image: got {len(images)} "
                        f"images and {len(labels)} label volumes (they pair up in order)")
    if s.task == "denoise" and labels and not s.self_supervised:
        raise TaskError("supervised denoising trains on clean images only (noise is added "
                        "synthetically); give no labels, or use --self-supervised")
    if labels and len(labels) != len(images):
        raise TaskError(f"{len(images)} images but {len(labels)} reference volumes")
    channels = {1 if im.array.ndim == 3 else im.array.shape[-1] for im in images}
    if len(channels) > 1:
        raise TaskError(f"all images need the same number of channels (got {sorted(channels)})")


def slice_axis(axis: int | str, sources: list[Source]) -> int:
    """The array axis to slice along: a plane (or 'auto') is found from each scan's
    orientation as ``predict`` finds it, and every scan must put it on the same axis."""
    if not isinstance(axis, str):
        return int(axis)
    from ..inference.predictor import resolve_axis

    found: dict[int, list[str]] = {}
    for src in sources:
        try:
            a = resolve_axis(axis, src.spacing, 0, src.direction, np.shape(src.array))
        except SettingsError as exc:
            raise SettingsError(f"{src.name}: {exc}") from None
        found.setdefault(a, []).append(src.name)
    if len(found) > 1:
        where = "; ".join(f"array axis {a} in {', '.join(names)}" for a, names in found.items())
        raise SettingsError(f"the {axis} slices lie along different array axes ({where}); "
                            "give the array axis (0, 1 or 2), or train on scans stored alike")
    return next(iter(found))


def _init_model(init):
    """A copy of the starting model (never the caller's own object), or None."""
    if init is None:
        return None
    if isinstance(init, (str,)) or hasattr(init, "__fspath__"):
        from ..model.checkpoint import load_model

        return load_model(init, device="cpu")
    model = copy.copy(init)
    model.net = copy.deepcopy(init.net).cpu()
    return model


def _task(s: TrainSettings, images: list[Source], labels: list[Source], init) -> TaskSpec:
    in_ch = 1 if images[0].array.ndim == 3 else images[0].array.shape[-1]
    if init is not None:
        t = init.task
        if t.kind != s.task or t.in_channels != in_ch or (
                s.n_classes is not None and s.n_classes != t.n_classes):
            raise TaskError(f"--init model {init.name!r} is a {t.describe()}; it cannot start "
                            f"a {s.task} model with {in_ch} input channel(s)"
                            + (f" and {s.n_classes} classes" if s.n_classes else ""))
        return t
    if s.task == "denoise":
        return make_task("denoise", in_channels=in_ch)
    top, where = max((label_maximum(lab), lab.name) for lab in labels)
    if top <= 0:
        names = ", ".join(lab.name for lab in labels)
        raise TaskError(f"{names}: the labels hold only background (0), so there is "
                        "nothing to learn; mark each structure with its class number 1, 2, ...")
    n, origin = s.n_classes, "--classes"
    if n is None and not s.class_names:
        _check_label_map(labels, top)
        n, origin = (1 if top <= 1 else top + 1), f"label value {top} in {where}"
    if n is not None:
        _check_class_memory(n, s, origin)
    names = s.class_names or _named_in_files(labels, n)
    return make_task("segment", in_channels=in_ch, n_classes=n, class_names=names)


def _named_in_files(labels: list[Source], n: int | None) -> list[str] | None:
    """Class names a label file keeps (a DICOM SEG's segments, a NIfTI napari-unet wrote),
    when they name every class of the task (two for a binary one)."""
    count = 2 if n == 1 else n
    for lab in labels:
        if count and lab.class_names and len(lab.class_names) >= count:
            return list(lab.class_names[:count])
    return None


INFERRED_CLASSES_MAX = 32  # more, counted from the labels alone, is most likely a scan


def _check_label_map(labels: list[Source], top: int) -> None:
    """A scan given as labels would become a model of hundreds of classes: refuse label
    volumes with many different values unless the class count is given on purpose."""
    if top < INFERRED_CLASSES_MAX:
        return
    for lab in labels:
        values = np.unique(lab.array)
        if len(values) > INFERRED_CLASSES_MAX:
            raise TaskError(f"{lab.name}: {len(values)} different values "
                            f"({values[0]:g}..{values[-1]:g}) look like a scan, not a label "
                            "map (0 = background, 1, 2, ... one number per structure); if these "
                            "really are N classes, set the number of classes (--classes N, "
                            "or 'classes' in the training widget)")


ACTIVATION_COPIES = 8  # logits, probabilities, one-hot, gradients... per class and pixel


def _check_class_memory(n: int, s: TrainSettings, origin: str) -> None:
    """Refuse class counts whose per-class tensors cannot fit, before any allocation."""
    if n > MAX_CLASSES:
        raise SettingsError(f"{origin}: {n} classes, over the limit of "
                            f"{MAX_CLASSES}; labels must number the classes "
                            "0 (background), 1, 2, ...")
    pixels = s.batch_size * s.patch_size[0] * s.patch_size[1]
    check_allocation(ACTIVATION_COPIES * 4 * n * pixels,
                     f"{origin}: training {n} classes on batches of {s.batch_size} x "
                     f"{s.patch_size[0]} x {s.patch_size[1]}", SettingsError)


MIN_INFERENCE_ROI = 256


def _default_norm(images: list[Source]) -> Normalization:
    """Fixed HU window for CT, per-volume percentiles (0.5..99.5) otherwise."""
    return CT_WINDOW if images[0].modality.upper() == "CT" else Normalization()


def inference_roi(train_patch: tuple[int, int]) -> tuple[int, int]:
    """The tile size stored in the model for inference: at least 256 x 256.

    The UNet is fully convolutional, so small training crops need no small tiles; at 256
    typical MR slices run whole (no overlapping tiles: 1.4x faster on the sample brain).
    """
    return tuple(max(int(p), MIN_INFERENCE_ROI) for p in train_patch)


def _slice_context(s: TrainSettings, init) -> int:
    """The run's slice context: as asked, else the parent's; a parent's net fixes it."""
    if init is None:
        return s.slice_context or 0
    k = init.meta.slice_context
    if s.slice_context is not None and s.slice_context != k:
        raise SettingsError(f"--init model {init.name!r} takes {k} neighbour slice(s) either "
                            f"side; it cannot learn with {s.slice_context} (leave the slice "
                            "context out to keep the model's)")
    return k


def _class_codes(s: TrainSettings, task: TaskSpec, labels: list[Source]):
    """The classes' codes: as given (``class_codes``), else a DICOM SEG's among the label
    files that names every class as the task does (standard codes only; the generic
    "Tissue" a SEG gives uncoded classes stays uncoded), else None."""
    from ..io.class_codes import FALLBACK, class_codes_for_labels, class_codes_from_texts, standard

    if task.kind != "segment":
        return None
    if s.class_codes is not None:
        return class_codes_from_texts(s.class_codes, task.n_labels)
    for lab in labels:
        if lab.class_codes and tuple(lab.class_names or ())[:task.n_labels] == tuple(
                task.class_names):
            return tuple(None if c is None or (c.category, c.type) == (
                FALLBACK.category, FALLBACK.type) else standard(c)
                for c in class_codes_for_labels(task.n_labels, lab.class_codes))
    return None


def _new_model(s: TrainSettings, task: TaskSpec, norm: Normalization, init, pixel_spacing,
               profile=None, class_codes=None):
    from ..model.checkpoint import Model

    name = s.name or f"{task.kind}-model"
    roi = inference_roi(s.patch_size)
    if init is not None:
        planes = "all" if s.all_planes else init.meta.default_planes
        meta = replace(init.meta, normalization=norm, name=name, default_axis=s.axis,
                       patch_size=roi, provenance={}, hash="", pixel_spacing=pixel_spacing,
                       default_planes=planes, intensity_profile=profile,
                       class_codes=class_codes or init.meta.class_codes)
        return Model(init.net, meta)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(s.seed)
        return Model.new(task, base=s.base, normalization=norm, name=name,
                         default_axis=s.axis, patch_size=roi, pixel_spacing=pixel_spacing,
                         slice_context=s.slice_context,
                         default_planes="all" if s.all_planes else "one",
                         intensity_profile=profile, class_codes=class_codes)


def _intensity_profile(s: TrainSettings, task: TaskSpec, sources: list[Source],
                       targets: list[Source], norm: Normalization, init):
    """What the training scans look like after normalisation (the model's quality scores
    compare every scan with it); a model trained from another also keeps what that one
    learned from, unless the normalisation changed (its figures would not compare)."""
    from ..model.intensity_profile import profile_of

    seg = task.kind == "segment"
    added = s.noise_level if task.kind == "denoise" and not s.self_supervised else None
    profile = profile_of([src.array for src in sources], norm,
                         [t.array for t in targets] if seg else None,
                         task.n_labels if seg else 0, noise_added=added, noise_kind=s.noise)
    parent = init.meta.intensity_profile if init is not None else None
    if parent is None or init.meta.normalization != norm:
        return profile
    return parent.merged(profile) if profile is not None else parent


def _recipe(s, task, sources, targets, norm, device) -> recipes.Recipe:
    if s.task == "segment":
        return recipes.segmentation(task, sources, targets, norm, s, device)
    if s.self_supervised:
        return recipes.self_supervised_denoising(task, sources, targets or None, norm, s,
                                                 device)
    return recipes.supervised_denoising(task, sources, norm, s, device)


def _provenance(s: TrainSettings, sources: list[Source], parent, out, info: dict,
                device) -> dict:
    from ..batch.privacy import patient_free_name

    prov = {
        "trained": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "data": [patient_free_name(src.name, src.volume) for src in sources],
        "mode": ("self-supervised " if s.self_supervised else "") + s.task,
        "axis": s.axis,
        "iterations": out.iterations,
        "seconds": round(out.seconds, 2),
        "stopped_by": out.stopped_by,
        "seed": s.seed,
        "device": str(device),
        "settings": {k: v for k, v in s.to_dict().items()
                     if k in ("base", "patch_size", "batch_size", "lr", "val_fraction",
                              "val_gap", "augment", "domain_randomization", "precision",
                              "deterministic", "iterations", "time_budget", "all_planes")},
        "metrics": out.metrics,
        **info,
    }
    if s.task == "denoise":
        prov["noise"] = s.describe_noise()
    if parent is not None:
        prov["parent"] = parent
    return prov

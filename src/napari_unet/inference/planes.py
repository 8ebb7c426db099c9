"""Segmentation along all three planes, the class probabilities combined (view aggregation).

A 2D net sees each voxel in the context of one plane; the same voxel in its axial,
coronal and sagittal slices gives three partly independent answers, and their mean is
better than any one of them (FastSurfer aggregates its views the same way). On the
bundled brain-tissue model it raised held-out Dice from 0.964 / 0.972 (grey / white
matter, axial slices) to 0.972 / 0.980, and helped under every perturbation of
``bench/robustness.py``; it costs one pass per plane over the whole scan.

``planes all`` takes the plain mean. ``planes auto`` (a model made for all planes)
weighs each plane by the context its slices give and leaves out thin planes that
disagree with the best-covered one (:mod:`~napari_unet.inference.aggregation`): on a
scan of part of the head the plain mean can be far worse than one plane.

Only segmentation is averaged, and only on scans whose voxels are near cubic: the other
planes of thick slices show the anatomy stretched, as the model never saw it. Such a
scan, or one whose probability volumes would not fit in memory, is predicted along its
one plane with a note saying so.
"""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np

from ..errors import SettingsError
from ..io.geometry import axis_plane, near_cubic
from ..limits import human_bytes, memory_limit
from . import aggregation

PLANE_MODES = ("auto", "one", "all")  # InferenceSettings.planes
ALL = (0, 1, 2)
MIN_EXTENT = 16  # voxels along every axis for slices of the other planes to be worth a look
# progress, in slices of the first plane: a later plane's slice (computed only where the
# first plane is unsure), the work between two planes (keeping the first plane's answer,
# where it is unsure, the next plane's start) and the combining after the last, in slices
# of an average plane. Measured in napari on the sample brain, kernels warm: 1.26 s for
# the first plane, 0.94 and 1.0 s for the others, 0.3 to 0.6 s between, 0.3 s to combine;
# without these shares a first estimate read from the first plane's pace was 17 to 36 %
# short, with plain slice counts for the hand-overs 38 % long
LATER, HAND_OVER, FINISH = 0.8, 0.3, 0.2


def planes_wanted(mode: str, model) -> bool:
    """Whether ``mode`` (``auto``: the model's ``default_planes``) asks for all planes."""
    seg = model.task.kind == "segment"
    if mode == "all" and not seg:
        raise SettingsError("averaging the three planes is for segmentation models; "
                            f"{model.name!r} is a {model.task.describe()}")
    return seg and (mode == "all" or (mode == "auto" and model.meta.default_planes == "all"))


def one_plane_reason(array: np.ndarray, spacing, model, name: str) -> str | None:
    """Why a scan is predicted along its one plane although all were wanted (None: fine)."""
    if min(array.shape[:3]) < MIN_EXTENT:
        return (f"{name}: predicted along one plane only: its other planes' slices would be "
                f"{min(array.shape[:3])} pixels across (fewer than {MIN_EXTENT})")
    if not near_cubic(spacing):
        mm = " x ".join(f"{float(v):g}" for v in spacing[:3])
        return (f"{name}: predicted along one plane only: its voxels ({mm} mm) are far from "
                "cubic, so its other planes would show the anatomy stretched")
    # three planes' probabilities at once (the sum, the first plane's kept for the later
    # passes to start from, the pass running; float32), their labels and the first's
    need = 3 * int(np.prod(array.shape[:3])) * ((model.task.out_channels + 1) * 4 + 3)
    if need > memory_limit():
        return (f"{name}: predicted along one plane only: averaging three planes would need "
                f"{human_bytes(need)} of probabilities, more than the memory limit")
    return None


def predict_planes(volume, model, settings, axis: int, slices, progress, cancel):
    """A Prediction along all three planes, or along ``axis`` with a note (and a warning)
    saying why not; ``slices``: indices along ``axis`` to fill (None: all)."""
    from .predictor import _indices, _unpack, predict

    array, spacing, name = _unpack(volume)
    why = one_plane_reason(array, spacing, model, name)
    if why is None:
        own = _indices(slices, array.shape[axis], axis, name)
        return _all_planes(volume, model, settings, axis, own, slices is not None,
                           progress, cancel)
    pred = predict(volume, model, replace(settings, planes="one", axis=axis), slices=slices,
                   progress=progress, cancel=cancel)
    warnings.warn(why, UserWarning, stacklevel=3)
    return replace(pred, settings=settings, notes=(*pred.notes, why))


def _all_planes(volume, model, settings, axis: int, own: np.ndarray, partial: bool,
                progress, cancel):
    """``predict`` along ``axis`` (the slices ``own``) and the two other planes; their
    probabilities combined: the plain mean (``planes all``) or weighted (``auto``)."""
    from .predictor import Prepared, _unpack, along_axis

    array, _, name = _unpack(volume)
    prepared = Prepared.of(array, model, settings, name)  # one normalisation and foreground
    rule = _Rule(volume, model, settings, axis)
    bar = _Bar([len(own) if a == axis else rule.shape[a] for a in rule.planes], progress)
    one = replace(settings, planes="one", probabilities=True, uncertainty=False)
    acc, weights, passes, notes, reference, first = None, [], [], [], None, None
    checks = any(rule.thin(a) for a in rule.planes[1:])  # labels wanted to compare planes
    for k, a in enumerate(rule.planes):
        last = k == len(rule.planes) - 1
        how, start = _later(prepared, first, rule, a, last) if k else (prepared, None)
        pred = along_axis(volume, model, replace(one, axis=a), a,
                          own if (a == axis and partial) else None,
                          bar.plane(k), cancel, how,
                          probabilities_only=start is not None or (k == 0 and not checks),
                          start=start)
        if k == 0 and checks:
            reference = _along(pred.labels, axis, own)
        if k == 0:
            first = _first_kept(pred, prepared, rule, axis)
        elif rule.thin(a):
            agree = aggregation.agreement(_along(pred.labels, axis, own), reference)
            if agree < aggregation.AGREE:
                notes.append(rule.left_out(a, agree))
                passes.append(replace(pred, probabilities=None,
                                      labels=pred.labels if a == axis else None))
                continue
        w = rule.weight(a)
        if w is not None:
            pred.probabilities *= w[..., None]
        weights.append(1.0 if w is None else w)
        if acc is None:
            acc = pred.probabilities
        else:
            _add(acc, pred.probabilities, axis, own)
        passes.append(replace(pred, probabilities=None,
                              labels=pred.labels if a == axis else None))
    for note in notes:
        warnings.warn(note, UserWarning, stacklevel=4)
    out = _combined(passes, acc, weights, model, settings, axis, own, partial, tuple(notes))
    bar.done()
    return out


def _first_kept(pred, prepared, rule, axis: int):
    """What later passes start from: the first plane's unweighted probabilities and the
    foreground where it is unsure (None: later passes compute every pixel, from zero).
    Only with a foreground, and only when the first plane is the scan's own."""
    from .crop import unsure

    if prepared.foreground is None or rule.planes[0] != axis:
        return None
    own = pred.slices if pred.slices is not None else np.arange(rule.shape[axis])
    return pred.probabilities.copy(), unsure(prepared.foreground, pred.probabilities, axis, own)


def _later(prepared, first, rule, plane: int, last: bool):
    """How a later plane's pass runs (prepared, start): where the first plane is unsure,
    into a copy of its probabilities (the last pass: into them), whose answer elsewhere
    the other planes would not change (``crop.unsure``); a thin plane (auto) runs whole,
    as its agreement with the first plane decides whether it counts at all."""
    if first is None or rule.thin(plane):
        return prepared, None
    kept, fg = first
    return replace(prepared, foreground=fg), kept if last else kept.copy()


def _along(labels: np.ndarray, axis: int, own: np.ndarray) -> np.ndarray:
    """The labels of the slices ``own`` along ``axis`` (all of them: a view, no copy)."""
    moved = np.moveaxis(labels, axis, 0)
    return moved if len(own) == len(moved) else moved[own]


class _Rule:
    """Which planes run, in which order, and how each counts (``planes`` auto or all)."""

    def __init__(self, volume, model, settings, axis: int):
        from .predictor import _unpack

        array, spacing, self.name = _unpack(volume)
        self.shape, self.axis, self.direction = array.shape[:3], axis, getattr(
            volume, "direction", None)
        self.weighted = settings.planes == "auto"
        pixel = model.meta.pixel_spacing if settings.resample else None
        patch = tuple(model.meta.patch_size)
        self.steps = [aggregation.steps(spacing, pixel, a) for a in ALL]
        self.patch = patch
        self.cover = [aggregation.coverage(self.shape, a, self.steps[a], patch) for a in ALL]
        self.planes = (aggregation.order(self.cover, axis) if self.weighted
                       else [axis, *(a for a in ALL if a != axis)])

    def thin(self, plane: int) -> bool:
        """A plane whose slices show too little of the scan to count unchecked (auto)."""
        return self.weighted and aggregation.thin(self.cover, plane, self.planes[0])

    def weight(self, plane: int) -> np.ndarray | None:
        if not self.weighted:
            return None
        return aggregation.context_weight(self.shape, plane, self.steps[plane], self.patch)

    def plane_name(self, plane: int) -> str:
        if self.direction is None:
            return f"array axis {plane}"
        return axis_plane(plane, np.asarray(self.direction))

    def left_out(self, plane: int, agree: float) -> str:
        across = min(self.shape[a] for a in aggregation.in_slice(plane))
        return (f"{self.name}: the {self.plane_name(plane)} slices ({across} pixels across) "
                f"left out of the average: their labels agreed with the "
                f"{self.plane_name(self.planes[0])} slices' on {100 * agree:.1f}% of the "
                f"foreground (less than {aggregation.AGREE:.0%})")


class _Bar:
    """One progress bar over the planes' passes: each plane's slices (a later plane's at
    :data:`LATER`), a hand-over before each later plane and the combining after the last
    (:data:`HAND_OVER`, :data:`FINISH`), so that the first plane's pace holds for the run."""

    def __init__(self, sizes: list[int], progress):
        self.progress = progress
        mean = sum(sizes) / len(sizes)
        self.hand_over, finish = round(HAND_OVER * mean), round(FINISH * mean)
        self.sizes = [sizes[0], *(round(LATER * n) for n in sizes[1:])]
        self.total = sum(self.sizes) + (len(sizes) - 1) * self.hand_over + finish

    def plane(self, k: int):
        """The progress callback of plane ``k``'s pass; reports the hand-over before it."""
        if self.progress is None:
            return None
        before, size = sum(self.sizes[:k]) + k * self.hand_over, self.sizes[k]
        if k:
            self.progress(before, self.total)
        return lambda done, n: self.progress(before + round(size * done / max(n, 1)),
                                             self.total)

    def done(self) -> None:
        if self.progress is not None:
            self.progress(self.total, self.total)


def _add(into: np.ndarray, more: np.ndarray, axis: int, own: np.ndarray) -> None:
    if len(own) == into.shape[axis]:  # every slice: one contiguous add, no gather
        np.add(into, more, out=into)
    else:
        np.moveaxis(into, axis, 0)[own] += np.moveaxis(more, axis, 0)[own]


def _combined(passes, probs: np.ndarray, weights: list, model, settings, axis: int,
              own: np.ndarray, partial: bool, left_out: tuple[str, ...]):
    """The own plane's Prediction with labels, uncertainty and probabilities of the
    combination (``probs``: the weighted sum of the planes that counted)."""
    import torch

    from .predictor import n_sums
    from .uncertainty import agreement_sums, entropy_map

    main = next(p for p in passes if p.axis == axis)
    rule_shape = main.labels.shape
    along = np.moveaxis(probs, axis, 0)
    if partial:  # probabilities only where asked, as for one plane
        rest = np.ones(len(along), bool)
        rest[own] = False
        along[rest] = 0.0
    labels = np.moveaxis(main.labels, axis, 0)
    want_unc = settings.probabilities or settings.uncertainty
    unc = np.full(rule_shape, np.nan, np.float32) if want_unc else None
    slice_unc = np.full(len(labels), np.nan, np.float32)
    sums = np.full((len(labels), n_sums(model.task), 3), np.nan)
    total = _Totals(weights, rule_shape, axis)
    for chunk in np.array_split(own, max(1, len(own) // 16)):
        along[chunk] /= total(chunk)[..., None]
        p = torch.from_numpy(np.ascontiguousarray(along[chunk])).permute(0, 3, 1, 2)
        decided = model.task.decide(p)
        labels[chunk] = decided.numpy().astype(labels.dtype)
        sums[chunk] = agreement_sums(p, decided, model.task).numpy()
        h = entropy_map(p, model.task)
        slice_unc[chunk] = h.mean(dim=(1, 2)).numpy()
        if unc is not None:
            np.moveaxis(unc, axis, 0)[chunk] = h.numpy()
    notes = tuple(dict.fromkeys([*(n for p in passes for n in p.notes), *left_out]))
    return replace(main, probabilities=probs if settings.probabilities else None,
                   uncertainty=unc, slice_uncertainty=slice_unc, class_sums=sums,
                   settings=settings,
                   seconds=sum(p.seconds for p in passes), notes=notes, planes=len(weights),
                   computed=float(np.mean([p.computed for p in passes])),
                   slices=own if partial else None)


class _Totals:
    """Per-voxel sums of the weights of the planes that counted, slice chunk by chunk."""

    def __init__(self, weights: list, shape, axis: int):
        self.weights, self.shape, self.axis = weights, tuple(shape), axis

    def __call__(self, chunk: np.ndarray) -> np.ndarray:
        rest = [n for a, n in enumerate(self.shape) if a != self.axis]
        out = np.zeros((len(chunk), *rest), np.float32)
        for w in self.weights:
            out += np.moveaxis(np.broadcast_to(np.asarray(w, np.float32), self.shape),
                               self.axis, 0)[chunk]
        return out

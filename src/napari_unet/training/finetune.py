"""``finetune``: learn from a person's corrections without forgetting what was not checked.

Only slices with trusted voxels are sampled, labels outside the trusted mask are zeroed
before anything sees them (crop placement included) and the loss is voxel-masked, so
unchecked labels have no influence at all. The input model is never modified: the
result is a new :class:`~napari_unet.model.checkpoint.Model` whose provenance names its parent,
so the correction loop can always undo.

How far to move is set by the *trust in the parent*: its Dice on the checked voxels before
fine-tuning, mapped from ``AGREEMENT_RANGE`` to 0..1. A model that already agrees with the
corrections has little to learn and much to lose on the slices nobody checked; one that
does not (a weak or new model) must learn fast. Unless given in :class:`FinetuneSettings`:

- the learning rate runs log-linearly from ``LR_RANGE[1]`` (trust 0) to ``LR_RANGE[0]`` (1);
- the anchor (:mod:`.anchor`: cross-entropy to the parent's own probabilities on patches of
  unchecked slices) weighs ``ANCHOR_WEIGHT`` x trust;
- BatchNorm statistics stay the parent's when trust >= 0.5 (a few slices cannot
  re-estimate them), and follow the batches otherwise (a weak model's are not worth keeping);
- iterations run from ``ITERATIONS[1]`` (trust 0) down to ``ITERATIONS[0]`` (trust 1).

Speed (a correction round should answer in seconds): the forward pass runs under bf16
autocast where the device has it (``precision``, as training), patches are at most
:data:`PATCH` pixels a side, the parent answers the anchor's patches through its inference
copy (folded BatchNorm, bf16), and with frozen statistics the anchor's patches share one
forward pass with the corrections'. On the sample brain with 2 corrected slices (27 and
99, the case the check turned down), changing from float32, two passes, 128-pixel patches
and 80 iterations: 40 iterations gave +0.0012 with 128-pixel patches and -0.0002 with 96
(both recommended), 30 iterations +0.0008; learning in the decoder only
(``freeze_encoder``) would have cost Dice (-0.0019 had it been applied; the check said no).
``bench/correction.py`` measures the defaults over nine cases (README).

Measured on the sample brain (``sample_data/brain_t1.nii.gz``, axial slices, 2 torch
threads) with the bundled ``brain-tissue`` (trust 1 on these slices); the update applied
whatever the acceptance check said; change of Dice on all the other slices against the
reference labels (0.9687 / 0.9637 grey / white before for slices 60 and 110):

==========================================  ======  ================  ==================
fine-tuning setting (slices 60 and 110)     iters   anchor            change grey / white
==========================================  ======  ================  ==================
lr 1e-3, BatchNorm statistics updated       100     none              -0.0154 / -0.0127
lr 1e-3, frozen BatchNorm                   100     none              -0.0073 / -0.0084
lr 1e-3, frozen BatchNorm                   100     labels, 1         -0.0088 / -0.0136
lr 3e-4, frozen BatchNorm                   100     labels, 1         -0.0020 / -0.0042
lr 1e-4, frozen BatchNorm                   100     none              -0.0008 / +0.0005
lr 1e-4, frozen BatchNorm                   100     labels, 1         -0.0009 / -0.0014
lr 1e-4, frozen BatchNorm                   300     none              -0.0019 / -0.0011
lr 1e-4, frozen BatchNorm                   300     labels, 1         +0.0001 / +0.0003
==========================================  ======  ================  ==================

The first row was the previous default. The step size does most of the work in short
runs, the anchor in long ones (a time budget on a fast machine runs many iterations).
"labels" was the first anchor (the parent's argmax as hard targets); with the parent's
probabilities instead and more weight, the three 60-iteration cases the label anchor had
made worse by more than 0.002 (mean of both classes) came out better:

============================  ============  ==============  ================
anchor (lr 1e-4, 60 iters)    slice 59      slices 44, 64   slices 45,105,124
============================  ============  ==============  ================
labels, weight 1              -0.0023       -0.0041         -0.0023
probabilities, weight 1       -0.0014       -0.0041
probabilities, weight 3       **-0.0009**   **-0.0025**     **+0.0007**
============================  ============  ==============  ================

and the acceptance check of the correction loop turns down the 44/64 update. A model
trained for 15 iterations (trust 0; slices 45, 83 and 108 corrected, 60 iterations at
lr 1e-3, no anchor) went from Dice 0.0034 / 0.2155 to 0.7385 / 0.0000 with frozen
BatchNorm statistics and to **0.9207 / 0.8907** with the statistics following the batches.
``bench/correction.py`` measures the defaults over several slice choices (README).
"""

from __future__ import annotations

import copy
import datetime as _dt
from dataclasses import dataclass, replace

import numpy as np
import torch

from ..errors import TaskError
from ..inference.resample import resize_slices, size_at
from .anchor import Anchor, anchored, anchored_together, unchecked_rows
from .data import (
    PatchSampler,
    check_labels,
    label_slices,
    load_source,
    to_numpy,
    to_slices,
    with_context,
)
from .loop import LoopConfig, run_loop
from .losses import make_loss
from .metrics import DiceCounter
from .recipes import EMPTY_SLICE_WEIGHT
from .settings import DEFAULT_FINETUNE_SECONDS, FinetuneSettings, TrainResult
from .trainer import training_autocast

LR_RANGE = (1e-4, 1e-3)
AGREEMENT_RANGE = (0.8, 0.95)  # trusted Dice of the parent: much to learn .. little
ANCHOR_WEIGHT = 3.0  # anchor weight at full trust (against Dice + cross-entropy: two terms)
ITERATIONS = (40, 80)  # default iterations at full trust .. none: little to learn .. much
PATCH = 96  # largest default patch side (pixels): a correction round should take seconds


def finetune(model, volume, labels, trusted, settings: FinetuneSettings | None = None, *,
             axis: int | None = None, progress=None, cancel=None, on_metrics=None,
             **overrides) -> TrainResult:
    """Fine-tune a segmentation ``model`` on the ``trusted`` part of ``labels``.

    ``trusted``: booleans per slice along ``axis`` (1-D) or per voxel (the labels' shape).
    ``settings`` and/or keywords named like :class:`FinetuneSettings` fields say how long
    and how; ``axis`` defaults to the model's default slice axis. Slices without a single
    trusted voxel anchor the model to its own predictions (``settings.anchor``).
    """
    from ..devices import resolve_device
    from ..model.checkpoint import Model

    s = replace(settings or FinetuneSettings(), **overrides)
    if model.task.kind != "segment":
        raise TaskError(f"fine-tuning from corrections needs a segmentation model; "
                        f"{model.name!r} is a {model.task.describe()}")
    axis = model.meta.default_axis if axis is None else axis
    data = _Corrections.of(model, volume, labels, trusted, axis)
    dev = resolve_device(s.device)
    net = copy.deepcopy(model.net).cpu()
    before = data.dice(net.to(dev).eval(), model.task, dev)
    time_budget = s.time_budget
    if s.iterations is None and time_budget is None:
        time_budget = DEFAULT_FINETUNE_SECONDS  # a cap: the iterations end it first
    trust = parent_trust(before)
    s = _settle(s, trust)
    cfg = LoopConfig(s.iterations, time_budget, s.lr, device=dev,
                     autocast=training_autocast(dev, s.precision, model.task))
    patch = _patch(model, s)
    anchor = _anchor(model, data, patch, s, dev)
    batches, loss = _batches(data, patch, s), make_loss(model.task)
    if anchor is not None and s.freeze_norm:  # one forward pass for both
        batches, loss = anchored_together(batches, loss, anchor, s.anchor)
    else:
        loss = anchored(loss, anchor, net, s.anchor)
    out = run_loop(net, batches, loss,
                   cfg, None, params=_trainable(net, s.freeze_encoder), progress=progress,
                   cancel=cancel, on_metrics=on_metrics,
                   train_mode=_train_frozen_norm if s.freeze_norm else None)
    metrics = {"trusted_dice_before": before, "trusted_dice": data.dice(net, model.task, dev),
               "parent_trust": round(trust, 4)}
    meta = replace(model.meta, name=s.name or model.name, hash="",
                   provenance=_provenance(model, data, axis, out, s, metrics),
                   intensity_profile=_learned_from(model, data))
    return TrainResult(Model(net, meta), out.history, metrics, out.losses, out.iterations,
                       out.seconds, out.stopped_by)


@dataclass
class _Corrections:
    """The scan's normalised slices and the checked labels, slices first (S, 1, H, W)."""

    img: np.ndarray
    labels: np.ndarray
    mask: np.ndarray
    rows: list[int]  # slices with at least one trusted voxel
    name: str
    profile: object = None  # the scan's intensity profile (model.intensity_profile)

    @classmethod
    def of(cls, model, volume, labels, trusted, axis: int) -> _Corrections:
        src = load_source(volume, 0, "scan")
        lab, trust = _checked_labels(labels, trusted, src,
                                     _described(volume, src, "the scan"), axis,
                                     model.task)
        profile = _scan_profile(model, src.array, np.where(trust, lab, -1))
        fitted = model.meta.normalization.fit(src.array)
        img = to_numpy(fitted.forward(to_slices(src.array.astype(np.float32), axis)))
        # learn at the scale it predicts at
        size = size_at(img.shape[-2:], src.spacing, axis, model.meta.pixel_spacing)
        img = with_context(resize_slices(img, size), model.meta.slice_context)
        mask = resize_slices(label_slices(trust, axis).astype(np.float32), size, labels=True)
        lab = resize_slices(label_slices(lab, axis).astype(np.int16), size, labels=True)
        rows = [i for i in range(len(img)) if mask[i].any()]
        return cls(img, lab, mask, rows, src.name, profile)

    @torch.no_grad()
    def dice(self, net, task, device, batch: int = 8) -> float | None:
        """Mean foreground Dice over the trusted voxels (how well a net fits the checks)."""
        counter = DiceCounter(task.n_labels)
        for i in range(0, len(self.rows), batch):
            idx = self.rows[i:i + batch]
            pred = task.decide(task.activate(net(torch.from_numpy(self.img[idx]).to(device))))
            counter.add(pred.cpu(), torch.from_numpy(self.labels[idx][:, 0]),
                        torch.from_numpy(self.mask[idx][:, 0]))
        dice = counter.per_class()[1:]
        return round(float(np.nanmean(dice)), 6) if np.isfinite(dice).any() else None


def _scan_profile(model, array: np.ndarray, labels: np.ndarray):
    """The corrected scan's intensity profile (classes from the trusted labels only)."""
    from ..model.intensity_profile import IntensityProfile, scan_profile

    scan = scan_profile(array, model.meta.normalization, labels, model.task.n_labels)
    return None if scan is None else IntensityProfile((scan,))


def _learned_from(model, data: _Corrections):
    """The parent's intensity profile with the corrected scan added: the fine-tuned model
    has learned from it too. A parent without one (made before profiles were recorded,
    or imported) learned from scans nobody recorded: it stays without."""
    parent = model.meta.intensity_profile
    return None if parent is None else parent.merged(data.profile)


def parent_trust(agreement: float | None) -> float:
    """0 .. 1: how far the parent can be trusted where nobody checked it.

    Its Dice on the checked voxels, mapped linearly from ``AGREEMENT_RANGE[0]`` (or less:
    0) to ``AGREEMENT_RANGE[1]`` (or more: 1); None (no foreground anywhere) counts as 1.
    """
    if agreement is None:
        return 1.0
    low, high = AGREEMENT_RANGE
    return float(min(1.0, max(0.0, (agreement - low) / (high - low))))


def _settle(s: FinetuneSettings, trust: float) -> FinetuneSettings:
    """Settings left at None, from the trust in the parent."""
    its = s.iterations or round(ITERATIONS[0] + (ITERATIONS[1] - ITERATIONS[0]) * (1 - trust))
    return replace(s, iterations=its, lr=step_size(trust) if s.lr is None else s.lr,
                   anchor=ANCHOR_WEIGHT * trust if s.anchor is None else s.anchor,
                   freeze_norm=trust >= 0.5 if s.freeze_norm is None else s.freeze_norm)


def step_size(trust: float) -> float:
    """The learning rate: log-linear from ``LR_RANGE[1]`` (trust 0) to ``LR_RANGE[0]`` (1)."""
    small, large = LR_RANGE
    return float(large * (small / large) ** trust)


def _patch(model, s: FinetuneSettings) -> tuple[int, int]:
    return tuple(s.patch_size or (min(model.meta.patch_size[0], PATCH),
                                  min(model.meta.patch_size[1], PATCH)))


def _provenance(model, data: _Corrections, axis: int, out, s: FinetuneSettings,
                metrics: dict) -> dict:
    from ..batch.privacy import patient_free_name

    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return {**model.meta.provenance,
            "parent": {"name": model.name, "hash": model.hash},
            "corrected_slices": len(data.rows),
            "finetune": {"finetuned": now, "data": patient_free_name(data.name), "axis": axis,
                         "trusted_voxels": int(data.mask.sum()),
                         "iterations": out.iterations, "seconds": round(out.seconds, 2),
                         "seed": s.seed, "lr": round(s.lr, 7), "freeze_encoder": s.freeze_encoder,
                         "freeze_norm": s.freeze_norm, "anchor": round(s.anchor, 4),
                         "metrics": metrics}}


def _checked_labels(labels, trusted, src, scan_name: str, axis: int, task):
    """The labels (zero where unchecked) and the voxel trust mask, both checked."""
    lab_src = load_source(labels, 0, "labels")
    lab, lab_name = lab_src.array, _described(labels, lab_src, "the labels")
    if lab.ndim == 4 and lab.shape[-1] == 1:
        lab = lab[..., 0]
    if lab.shape != tuple(src.array.shape[:3]):
        raise TaskError(f"{lab_name} and {scan_name} have different shapes: the labels "
                        f"have {_shape_words(lab.shape, axis)}, the scan has "
                        f"{_shape_words(src.array.shape[:3], axis)}; give the labels that "
                        f"were drawn on this scan")
    trust = _trust_mask(trusted, lab.shape, axis)
    _check_classes(lab, trust, task, lab_name, axis)
    lab = check_labels(lab, src.array.shape, task.n_labels, lab_name, where=trust)
    return np.where(trust, lab, 0), trust  # unchecked labels never reach loss or sampler


def _check_classes(lab: np.ndarray, trust: np.ndarray, task, lab_name: str,
                   axis: int) -> None:
    """A person painted a label the model does not have: say which, where, and which it has
    (the training message about --classes means nothing in the correction loop)."""
    bad = trust & ((lab < 0) | (lab >= task.n_labels))
    if not bad.any():
        return
    values = sorted({int(v) for v in np.unique(lab[bad])})
    where = sorted({int(i) for i in np.unique(np.nonzero(bad)[axis])})
    more = f" and {len(where) - 8} more" if len(where) > 8 else ""
    raise TaskError(f"{lab_name}: label {', '.join(map(str, values))} on slice "
                    f"{', '.join(map(str, where[:8]))}{more} is not one of the model's classes "
                    f"({task.numbered_classes()}); paint those voxels with one of them")


def _described(item, src, default: str) -> str:
    """A file's or layer's name for messages; ``default`` for a bare array."""
    return default if isinstance(item, np.ndarray) else f"{default} {src.name!r}"


def _shape_words(shape: tuple, axis: int) -> str:
    return f"{shape[axis]} slices along axis {axis} ({' x '.join(map(str, shape))})"


def _batches(data: _Corrections, patch, s: FinetuneSettings):
    """``next_batch()``: augmented patches of the corrected slices with their trust mask."""
    weights = np.array([1.0 if data.labels[i].any() else EMPTY_SLICE_WEIGHT
                        for i in data.rows])
    extras = {"label": data.labels, "mask": data.mask, "crop": data.labels}
    sampler = PatchSampler([data.img], [extras], [(0, i) for i in data.rows], weights, patch,
                           s.batch_size, s.seed, flips=s.augment, intensity=s.augment)

    def next_batch():
        b = sampler.draw()
        return b["image"], b["label"].round().long(), b["mask"]

    return next_batch


def _anchor(model, data: _Corrections, patch, s: FinetuneSettings, dev) -> Anchor | None:
    """The parent's predictions on unchecked slices, when there are any and a weight."""
    free = unchecked_rows(data.mask)
    if not free or not s.anchor:
        return None
    return Anchor(model.net, model.task, data.img, free, patch, s.batch_size, s.seed, dev,
                  s.augment, s.precision)


def _train_frozen_norm(net: torch.nn.Module) -> None:
    """Train mode with every BatchNorm in eval mode: its statistics stay the parent's."""
    net.train()
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()


def _trust_mask(trusted, shape: tuple, axis: int) -> np.ndarray:
    """Per-slice or per-voxel booleans -> a voxel mask of the labels' shape."""
    t = np.asarray(trusted).astype(bool)
    shape = tuple(shape[:3])
    if t.ndim == 1:
        if len(t) != shape[axis]:
            raise TaskError(f"the list of checked slices has {len(t)} entries but the "
                            f"labels have {shape[axis]} slices along axis {axis}")
        view = [1, 1, 1]
        view[axis] = len(t)
        t = np.broadcast_to(t.reshape(view), shape)
    elif t.shape != shape:
        raise TaskError(f"the trusted mask {t.shape} matches neither the number of slices "
                        f"nor the shape of the labels {shape}")
    if not t.any():
        raise TaskError("nothing is marked as checked: mark at least one corrected slice "
                        "as trusted before fine-tuning")
    return np.ascontiguousarray(t)


def _trainable(net: torch.nn.Module, freeze_encoder: bool) -> list:
    if freeze_encoder:
        for name, p in net.named_parameters():
            if name.split(".")[0] in ("inc", "down1", "down2", "down3", "down4"):
                p.requires_grad_(False)
    return [p for p in net.parameters() if p.requires_grad]

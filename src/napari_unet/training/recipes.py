"""What a batch and a validation mean for each kind of training.

- :func:`segmentation`: image patches with their labels; validation Dice per class on the
  held-out slices.
- :func:`supervised_denoising`: clean patches get synthetic noise (the input); the clean
  patch is the target. Patches are centred on the object (the head, the body) 90% of the
  time and the squared error weighs its pixels 4x those of the air around it: the air is
  easy, and the object is what a reader looks at. The input is mapped with the
  normalisation a *noisy* scan of the same volume (at the patch's noise level) would get,
  as inference will do, and the target in the same scale, so the denoised output maps
  back to the scan's units. Validation PSNR against the clean slices.
- :func:`self_supervised_denoising`: noisy patches with blind-spot masking; validation
  PSNR against clean references when given, else the blind-spot MSE on held-out slices.

What a run samples from and validates on is put on the training device once; batches
are cut, augmented and (for denoising) made noisy there, from generators seeded by the
run's seed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from ..errors import SettingsError, TaskError
from ..limits import check_allocation
from ..model.normalize import Fitted, Normalization
from ..model.tasks import TaskSpec
from .augment import DOMAIN, LIGHT, NONE, Randomization
from .blindspot import blindspot
from .data import (
    PatchSampler,
    Source,
    check_labels,
    check_same_grid,
    label_slices,
    split_slices,
    to_numpy,
    with_context,
)
from .data import to_slices as _slices
from .metrics import DiceCounter, psnr
from .noise import add_noise, draw_levels
from .planes import blanked, other_planes
from .settings import TrainSettings

EMPTY_SLICE_WEIGHT = 0.25  # slices without foreground are drawn this much less often
OBJECT_LEVEL = 0.05  # denoising: normalised intensity above which a pixel is the object
OBJECT_CROPS = 0.9  # share of denoising patches centred on the object (air is easy)
BACKGROUND_WEIGHT = 0.25  # denoising loss weight of pixels outside the object


@dataclass
class Recipe:
    next_batch: Callable
    validate: Callable | None
    info: dict = field(default_factory=dict)  # for provenance (held-out slices, ...)


def randomization(s: TrainSettings, denoise: bool = False) -> Randomization:
    """The augmentation a run asks for; a denoiser's targets never get noise added."""
    if s.domain_randomization:
        return replace(DOMAIN, noise=(0.0, 0.0)) if denoise else DOMAIN
    return LIGHT if s.augment and not denoise else NONE


def _sampler(images, extras, items, weights, s: TrainSettings, device, **kw) -> PatchSampler:
    return PatchSampler(images, extras, items, weights, s.patch_size, s.batch_size, s.seed,
                        flips=s.augment or s.domain_randomization, device=device, **kw)


def _normalised_volume(src: Source, norm: Normalization) -> np.ndarray:
    return to_numpy(norm.fit(src.array).forward(src.array.astype(np.float32)))


def _normalised(src: Source, norm: Normalization, axis: int) -> tuple[np.ndarray, Fitted]:
    fitted = norm.fit(src.array)
    return to_numpy(fitted.forward(_slices(src.array.astype(np.float32), axis))), fitted


def _split(n: int, s: TrainSettings):
    """Train and held-out slices; a held-out slice is not even a training slice's context."""
    return split_slices(n, s.val_fraction, s.val_block, max(s.val_gap, s.slice_context or 0))


def _middle(x, channels: int):
    """The middle slice's ``channels`` of (N, (2k+1) x channels, H, W) slices with context."""
    k = (x.shape[1] // channels - 1) // 2
    return x[:, k * channels:(k + 1) * channels]


def _held_out_info(splits) -> dict:
    blocks = [[int(v[0]), int(v[-1]) + 1] if len(v) else None for _, v in splits]
    return {"held_out_slices": blocks, "train_slices": [int(len(t)) for t, _ in splits]}


def _on(x, device) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(x)).to(device)


def _chunks(x: torch.Tensor, size: int):
    for i in range(0, len(x), size):
        yield x[i:i + size]


def segmentation(task: TaskSpec, images: list[Source], labels: list[Source],
                 norm: Normalization, s: TrainSettings, device) -> Recipe:
    imgs, extras, items, weights, splits, val = [], [], [], [], [], []

    def add(img, lab_sl, train_idx) -> None:
        v = len(imgs)
        imgs.append(img)
        extras.append({"label": lab_sl, "crop": lab_sl})
        for i in train_idx:
            items.append((v, int(i)))
            weights.append(1.0 if lab_sl[i].any() else EMPTY_SLICE_WEIGHT)

    planes = []
    for src, lab in zip(images, labels, strict=True):
        volume = _normalised_volume(src, norm)
        img = with_context(_slices(volume, s.axis), s.slice_context or 0)
        lab_arr = check_labels(np.asarray(lab.array), src.array.shape, task.n_labels, lab.name)
        check_same_grid(src, lab)
        lab_sl = label_slices(lab_arr, s.axis).astype(np.int16)
        train_idx, val_idx = _split(len(img), s)
        splits.append((train_idx, val_idx))
        add(img, lab_sl, train_idx)
        cut = list(_other_planes(src, volume, lab_arr, train_idx, s)) if s.all_planes else []
        for stack in cut:
            add(*stack)
        planes.append(1 + len(cut))
        if len(val_idx):
            val.append((_on(img[val_idx], device), _on(lab_sl[val_idx], device)))
    sampler = _sampler(imgs, extras, items, np.array(weights), s, device,
                       randomization=randomization(s), n_labels=task.n_labels, clip=norm.clip)

    def next_batch():
        b = sampler.draw()
        return b["image"], b["label"].round().long(), None

    validate = _dice_validation(task, val, s.batch_size) if val else None
    info = _held_out_info(splits)
    if s.all_planes:
        info["planes_per_volume"] = planes
    return Recipe(next_batch, validate, info)


def _other_planes(src: Source, volume: np.ndarray, lab_arr: np.ndarray, keep,
                  s: TrainSettings):
    """(image slices, label slices, training slices) along each other plane of ``src``
    (``volume``: its normalised image).

    Voxels outside the main plane's training slices ``keep`` are blanked (see
    :mod:`.planes`); each stack keeps the same slice numbers out of training as the main
    one, and a plane left without any is skipped.
    """
    axes = other_planes(s.axis, src.spacing)
    if not axes:
        return
    check_allocation(3 * volume.nbytes + 3 * lab_arr.nbytes,
                     f"the other two planes of {src.name} (all planes)", SettingsError)
    volume = blanked(volume, s.axis, keep)
    lab = blanked(lab_arr, s.axis, keep)
    for a in axes:
        img = with_context(_slices(volume, a), s.slice_context or 0)
        try:
            train_idx, _ = _split(len(img), s)
        except TaskError:
            continue
        yield img, label_slices(lab, a).astype(np.int16), train_idx


def _dice_validation(task: TaskSpec, val, batch: int) -> Callable:
    def validate(net) -> dict:
        counter = DiceCounter(task.n_labels)
        for img, lab in val:
            for x, y in zip(_chunks(img, batch), _chunks(lab, batch), strict=True):
                counter.add(task.decide(task.activate(net(x))), y[:, 0])
        dice = counter.per_class()
        out = {f"val_dice_{name}": _f(d) for name, d in zip(task.class_names, dice, strict=True)}
        out["val_dice"] = _f(np.nanmean(dice[1:])) if np.isfinite(dice[1:]).any() else None
        return out

    return validate


def _f(x) -> float | None:
    x = float(x)
    return None if np.isnan(x) else round(x, 6)


def _mean_level(level) -> float:
    return float(np.mean(level)) if isinstance(level, (tuple, list)) else float(level)


def supervised_denoising(task: TaskSpec, images: list[Source], norm: Normalization,
                         s: TrainSettings, device) -> Recipe:
    setup = torch.Generator().manual_seed(s.seed + 7)
    val_gen = torch.Generator().manual_seed(s.seed + 11)
    grid = _level_grid(s.noise_level)
    imgs, extras, items, tables, splits, val = [], [], [], [], [], []
    for v, src in enumerate(images):
        fitted = norm.fit(src.array)
        clean = _linear(_slices(src.array.astype(np.float32), s.axis), fitted)
        table = [_noisy_scale(clean, fitted, norm, s.noise, level, setup) for level in grid]
        tables.append(table)
        train_idx, val_idx = _split(len(clean), s)
        splits.append((train_idx, val_idx))
        obj = (clean > OBJECT_LEVEL).astype(np.uint8)
        extras.append({"crop": obj, "object": obj})
        clean = with_context(clean, s.slice_context or 0)
        imgs.append(clean)
        items += [(v, int(i)) for i in train_idx]
        if len(val_idx):
            level = _mean_level(s.noise_level)
            a0, a1 = _noisy_scale(_middle(clean, task.in_channels), fitted, norm, s.noise,
                                  level, setup)
            c = torch.from_numpy(clean[val_idx])
            noisy = add_noise(c, s.noise, level, val_gen)
            x, target = _to_noisy_scale(noisy, c, a0, a1, norm.clip)
            val.append((_on(x, device), _on(_middle(target, task.in_channels), device)))
    sampler = _sampler(imgs, extras, items, None, s, device, clip=False,
                       randomization=randomization(s, denoise=True), crop_fraction=OBJECT_CROPS)
    grid_t = torch.tensor(grid, dtype=torch.float32, device=device)
    table_t = torch.tensor(tables, dtype=torch.float32, device=device)  # (V, levels, 2)
    gen = torch.Generator(device=device).manual_seed(s.seed + 7)

    def next_batch():
        b = sampler.draw()
        clean_patch = b["image"]
        levels = draw_levels(s.noise_level, len(clean_patch), gen)
        noisy = add_noise(clean_patch, s.noise, levels, gen)
        a = _interpolate(levels.view(-1), grid_t, table_t[b["volume"]]).view(-1, 2, 1, 1)
        x, target = _to_noisy_scale(noisy, clean_patch, a[:, :1], a[:, 1:], norm.clip)
        weight = BACKGROUND_WEIGHT + (1 - BACKGROUND_WEIGHT) * b["object"]
        return x, _middle(target, task.in_channels), weight

    validate = _psnr_validation(task, val, s.batch_size) if val else None
    info = {**_held_out_info(splits), "noisy_scale": {"levels": grid, "bounds": tables}}
    return Recipe(next_batch, validate, info)


SCALE_LEVELS = 9  # noise levels at which a noisy scan's normalisation bounds are measured


def _level_grid(level) -> list[float]:
    if isinstance(level, (tuple, list)):
        return [float(v) for v in np.linspace(float(level[0]), float(level[1]), SCALE_LEVELS)]
    return [float(level)]


def _interpolate(x: torch.Tensor, grid: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Per sample, the (low, high) bounds at level ``x``, linear between grid levels.

    ``table``: (B, levels, 2) bounds of each sample's volume at the ``grid`` levels.
    """
    if len(grid) == 1:
        return table[:, 0]
    pos = ((x - grid[0]) / (grid[1] - grid[0])).clamp(0, len(grid) - 1)
    i = pos.floor().clamp(max=len(grid) - 2).long()
    frac = (pos - i).unsqueeze(1)
    rows = torch.arange(len(x), device=x.device)
    return table[rows, i] * (1 - frac) + table[rows, i + 1] * frac


def _linear(x: np.ndarray, fitted: Fitted) -> np.ndarray:
    """Scanner units -> the clean volume's [0, 1] scale, unclipped (noise is added here)."""
    return ((x - fitted.low) / (fitted.high - fitted.low)).astype(np.float32)


def _noisy_scale(clean: np.ndarray, fitted: Fitted, norm: Normalization, kind: str,
                 level: float, gen: torch.Generator) -> tuple[float, float]:
    """Where the normalisation bounds of the scan with noise at ``level`` fall on the clean
    [0, 1] scale: inference normalises a noisy scan by its own bounds, so must training,
    at each noise level it draws (one fixed mapping for all levels would scale the
    intensities of every other level wrongly)."""
    noisy = add_noise(torch.from_numpy(clean), kind, level, gen)
    nf = norm.fit(fitted.inverse(noisy.numpy()))
    span = fitted.high - fitted.low
    return (nf.low - fitted.low) / span, (nf.high - fitted.low) / span


def _to_noisy_scale(noisy, clean, a0, a1, clip: bool):
    """Input and target on the scale the noisy scan's normalisation gives."""
    x = (noisy - a0) / (a1 - a0)
    target = ((clean - a0) / (a1 - a0)).clamp(0.0, 1.0)
    return (x.clamp(0.0, 1.0) if clip else x), target


def _psnr_validation(task: TaskSpec, val, batch: int) -> Callable:
    baseline = psnr(torch.cat([_middle(x, task.in_channels).flatten() for x, _ in val]),
                    torch.cat([t.flatten() for _, t in val]))

    def validate(net) -> dict:
        outs, targets = [], []
        for x, target in val:
            for xb, tb in zip(_chunks(x, batch), _chunks(target, batch), strict=True):
                outs.append(task.decide(task.activate(net(xb))).flatten())
                targets.append(tb.flatten())
        return {"val_psnr": round(psnr(torch.cat(outs), torch.cat(targets)), 4),
                "val_psnr_input": round(baseline, 4)}

    return validate


def self_supervised_denoising(task: TaskSpec, images: list[Source],
                              references: list[Source] | None, norm: Normalization,
                              s: TrainSettings, device) -> Recipe:
    """``references``: optional clean scans used only to report validation PSNR."""
    imgs, items, splits, val, val_masked = [], [], [], [], []
    for v, src in enumerate(images):
        img, fitted = _normalised(src, norm, s.axis)
        train_idx, val_idx = _split(len(img), s)
        splits.append((train_idx, val_idx))
        imgs.append(img)
        items += [(v, int(i)) for i in train_idx]
        if not len(val_idx):
            continue
        noisy = torch.from_numpy(img[val_idx])
        if references:
            if references[v].array.shape != src.array.shape:
                raise SettingsError(f"{references[v].name}: clean reference of shape "
                                    f"{references[v].array.shape} does not match the noisy "
                                    f"scan {src.name} {src.array.shape}")
            ref = to_numpy(fitted.forward(_slices(references[v].array.astype(np.float32),
                                                  s.axis)))
            val.append((_on(noisy, device), _on(ref[val_idx], device)))
        else:
            vgen = torch.Generator().manual_seed(s.seed + 11 + v)
            val_masked.append(tuple(_on(t, device) for t in (
                *blindspot(noisy, s.blindspot_fraction, vgen), noisy)))
    sampler = _sampler(imgs, [{} for _ in imgs], items, None, s, device,
                       randomization=randomization(s, denoise=True), clip=norm.clip)
    gen = torch.Generator(device=device).manual_seed(s.seed + 7)

    def next_batch():
        y = sampler.draw()["image"]
        x, mask = blindspot(y, s.blindspot_fraction, gen)
        return x, y, mask

    if val:
        validate = _psnr_validation(task, val, s.batch_size)
    elif val_masked:
        validate = _blindspot_validation(task, val_masked, s.batch_size)
    else:
        validate = None
    return Recipe(next_batch, validate, _held_out_info(splits))


def _blindspot_validation(task: TaskSpec, val, batch: int) -> Callable:
    def validate(net) -> dict:
        err, n = 0.0, 0.0
        for x, mask, y in val:
            for i in range(0, len(x), batch):
                out = task.activate(net(x[i:i + batch]))
                m = mask[i:i + batch].expand_as(out)
                err += float((((out - y[i:i + batch]) ** 2) * m).sum())
                n += float(m.sum())
        return {"val_blindspot_mse": round(err / max(n, 1.0), 8)}

    return validate

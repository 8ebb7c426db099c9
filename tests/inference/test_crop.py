"""Less work, same labels: the net runs on the scan's foreground only (inference/crop.py)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from napari_unet.inference.crop import BLOCK, foreground, window
from napari_unet.inference.predictor import predict
from napari_unet.io.volume import Volume
from napari_unet.model.checkpoint import Model
from napari_unet.model.normalize import Normalization
from napari_unet.model.tasks import make_task
from napari_unet.model.unet import UNet, receptive_field
from support.tiny_models import tiny_model

CALLS: list[tuple[int, ...]] = []  # shapes the pointwise nets were given


class Pointwise(nn.Module):
    """A 'UNet' with a receptive field of one pixel, so a crop must change nothing at all:
    class 1 where the normalised intensity exceeds 0.5 (``sign`` -1: where it is under)."""

    def __init__(self, sign: float = 1.0, channels: int = 1):
        super().__init__()
        self.sign, self.channels = sign, channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        CALLS.append(tuple(x.shape))
        logit = 40.0 * self.sign * (x.mean(dim=1, keepdim=True) - 0.5)
        return logit if self.channels == 1 else torch.cat([-logit, logit], dim=1)


def pointwise_model(sign=1.0, kind="segment", pixel_spacing=None, context=0) -> Model:
    task = make_task(kind, n_classes=1 if kind == "segment" else None)
    meta = Model.new(task, base=2, normalization=Normalization("window", 0.0, 1.0),
                     patch_size=(32, 32), pixel_spacing=pixel_spacing,
                     slice_context=context).meta
    return Model(Pointwise(sign), meta)


def ball(shape=(40, 96, 88), centre=(20, 50, 40), radius=9.0, spacing=(1.0, 1.0, 1.0),
         smooth=False) -> Volume:
    """A bright ball in air (0), sharp or with a smooth edge (probabilities near 0.5)."""
    grid = np.indices(shape).astype(np.float32)
    r = np.sqrt(sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)))
    array = np.clip((radius - r) / 4 + 0.5, 0, 1) if smooth else (r < radius) * 1.0
    return Volume(array.astype(np.float32), spacing=spacing, name="ball")


def test_the_receptive_field_bounds_what_one_output_pixel_depends_on():
    torch.manual_seed(0)
    net = UNet(1, 1, base=4).double().eval()
    x = torch.randn(1, 1, 288, 288, dtype=torch.float64, requires_grad=True)
    net(x)[0, 0, 144, 144].backward()
    rows = np.flatnonzero(x.grad[0, 0].abs().sum(1).numpy())
    reach = rows[-1] - rows[0] + 1  # autograd: the input pixels that output depends on
    assert 0.9 * receptive_field() <= reach <= receptive_field() == 230


def test_the_foreground_covers_the_ball_and_nothing_far_from_it():
    vol = ball()
    fg = foreground(vol.array, Normalization("window", 0.0, 1.0).fit(vol.array), False, None)
    inside = np.argwhere(vol.array > 0)
    for axis in range(3):
        boxes = fg.boxes(axis)
        rest = [a for a in range(3) if a != axis]
        for i in np.unique(inside[:, axis]):  # every slice with ball holds all of it
            pts = inside[inside[:, axis] == i][:, rest]
            r0, r1, c0, c1 = boxes[i]
            assert r0 <= pts[:, 0].min() and pts[:, 0].max() < r1
            assert c0 <= pts[:, 1].min() and pts[:, 1].max() < c1
        centre = (20, 50, 40)[axis]
        far = [i for i in range(vol.array.shape[axis]) if abs(i - centre) > 9 + 2 * BLOCK]
        assert far and all(boxes[i, 0] == boxes[i, 1] for i in far)  # nothing to compute
    assert fg.value == 0.0


def test_a_window_is_whole_cells_of_the_padded_grid_around_the_box():
    w = window((40, 60, 100, 110), (233, 197), (233, 197), margin=16)
    t, _, left, _ = w.pad
    assert w.pad == (3, 4, 5, 6)  # the UNet pads 233 x 197 to 240 x 208 the same way
    assert all(v % 16 == 0 for v in (*w.rows, *w.cols))
    assert w.rows[0] <= 40 + t - 16 and w.rows[1] >= 60 + t + 16
    assert w.cols[0] <= 100 + left - 16 and w.cols[1] >= 110 + left + 16
    assert window((0, 233, 0, 197), (233, 197), (233, 197)) is None  # the whole slice
    assert window((5, 5, 0, 0), (233, 197), (233, 197)).empty


@pytest.mark.parametrize("case", ["plain", "finer scan, resampled", "coarser scan",
                                  "2.5D context", "channels-last batch of 1"])
def test_a_pointwise_net_gives_exactly_the_whole_slices_answer(case):
    vol, model, kw = ball(), pointwise_model(), {}
    if case == "finer scan, resampled":
        vol, model = ball((30, 241, 235), (15, 120, 80), 18, (1.0, 0.5, 0.5)), pointwise_model(
            pixel_spacing=(1.0, 1.0))
    elif case == "coarser scan":
        vol, model = ball(spacing=(1.0, 1.5, 1.5)), pointwise_model(pixel_spacing=(1.0, 1.0))
    elif case == "2.5D context":
        model = pointwise_model(context=1)
    else:
        kw = {"batch_size": 1}
    whole = predict(vol, model, axis=0, device="cpu", crop=False, **kw)
    CALLS.clear()
    cropped = predict(vol, model, axis=0, device="cpu", **kw)
    assert np.array_equal(cropped.labels, whole.labels)
    assert cropped.labels.sum() > 100 and cropped.computed < 0.75 and whole.computed == 1.0
    assert np.allclose(cropped.slice_uncertainty, whole.slice_uncertainty, atol=1e-6)


def test_outside_the_crop_is_the_model_s_own_answer_on_air_not_class_0():
    vol, model = ball(), pointwise_model(sign=-1.0)  # this model calls air class 1
    whole = predict(vol, model, axis=0, device="cpu", crop=False)
    cropped = predict(vol, model, axis=0, device="cpu")
    assert whole.labels.mean() > 0.9 and np.array_equal(cropped.labels, whole.labels)
    assert cropped.computed < 0.75


@pytest.mark.parametrize("resampled", [False, True])
def test_all_three_planes_add_up_as_if_every_pixel_were_computed(resampled):
    """A smooth edge gives unsure voxels, so the other planes' crops are used and the first
    plane's probabilities stand in everywhere else; with identical planes the mean must be
    the first plane's own, pixel for pixel (at the model's pixel spacing too)."""
    vol, model = ball(smooth=True), pointwise_model()
    if resampled:
        vol = ball((50, 80, 70), (25, 40, 30), 12, (0.7, 0.7, 0.7), smooth=True)
        model = pointwise_model(pixel_spacing=(1.0, 1.0))
    model = Model(model.net, replace(model.meta, default_planes="all"))
    whole = predict(vol, model, device="cpu", crop=False, probabilities=True)
    cropped = predict(vol, model, device="cpu", probabilities=True)
    assert whole.planes == cropped.planes == 3
    assert np.array_equal(cropped.labels, whole.labels)
    assert np.abs(cropped.probabilities - whole.probabilities).max() < 1e-5
    assert cropped.computed < 0.75
    part = predict(vol, model, device="cpu", slices=[12, 20, 27])
    assert np.array_equal(part.labels[[12, 20, 27]], whole.labels[[12, 20, 27]])


def test_a_structure_the_mask_misses_at_the_crop_edge_makes_the_slices_run_whole():
    """A faint line (under half the Otsu threshold) out of the ball that the model still
    labels: its labels on the crop's outer ring are not the background's, so those slices
    run whole."""
    array = ball().array.copy()
    array[14:27, 50, 2:86] = np.maximum(array[14:27, 50, 2:86], 0.06)
    model = Model(_Faint(), pointwise_model().meta)
    whole = predict(array, model, axis=0, device="cpu", crop=False)
    cropped = predict(array, model, axis=0, device="cpu")
    assert whole.labels[14:27, 50, 3].all() and np.array_equal(cropped.labels, whole.labels)


class _Faint(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 40.0 * (x - 0.03)


def test_a_scan_of_air_only_is_the_background_answer_and_runs_no_slice():
    model = pointwise_model()
    CALLS.clear()
    pred = predict(np.zeros((6, 40, 40), np.float32), model, axis=0, device="cpu")
    assert pred.computed == 0.0 and not pred.labels.any()
    assert len(CALLS) == 1  # the one look at an empty slice that says what air is


def test_denoising_crops_only_exactly_constant_air():
    """Noisy air is denoised as before (no crop); exactly constant air (a skull-stripped
    scan's outside) is the denoiser's answer on that constant."""
    model = pointwise_model(kind="denoise")
    vol = ball()
    noisy = vol.array + np.random.default_rng(0).normal(0, 0.01, vol.array.shape).astype(
        np.float32)
    for array, most in ((vol.array, 0.75), (noisy, 1.0)):
        whole = predict(array, model, axis=0, device="cpu", crop=False)
        cropped = predict(array, model, axis=0, device="cpu")
        assert cropped.computed <= most and np.allclose(cropped.image, whole.image, atol=1e-6)


def test_a_tiny_unet_agrees_with_the_whole_slices_on_nearly_every_voxel():
    vol = ball((24, 128, 128), (12, 60, 70), 14)
    model = tiny_model(n_classes=3, normalization=Normalization("window", 0.0, 1.0))
    whole = predict(vol, model, axis=0, device="cpu", crop=False)
    cropped = predict(vol, model, axis=0, device="cpu")
    assert cropped.computed < 0.8
    assert (cropped.labels == whole.labels).mean() >= 0.99


def test_progress_counts_the_pixels_through_the_net_not_the_slices():
    # the ball fills slices 11..29 of 40: the air slices at either end take no work, so a
    # time-left estimate reading the pace sees it even (by slice count, the first group,
    # slices 0..3 of air filled without the net, would report 4 of 40 done)
    seen: list[tuple[int, int]] = []
    pred = predict(ball(), pointwise_model(), axis=0, device="cpu", planes="one",
                   progress=lambda done, total: seen.append((done, total)))
    assert all(total == 40 for _, total in seen) and seen[-1][0] == 40
    done = [d for d, _ in seen]
    assert done == sorted(done)  # never backwards
    assert done[0] == 0  # the first slices: air, no pixel went through the net
    assert done[-1] == done[-2]  # nor through the last ones
    assert pred.computed < 0.7  # the crop did leave pixels out

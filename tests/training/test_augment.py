"""Batched augmentation: each op equals the MONAI transform it follows, and the sampler
cuts patches where it says, keeps labels on their pixels and repeats itself from a seed."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from napari_unet.training import augment
from napari_unet.training.augment import DOMAIN, NONE, Draw, Randomization
from napari_unet.training.data import PatchSampler


def _image(seed=0, shape=(3, 1, 40, 36)) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).random(shape).astype(np.float32))


def test_gibbs_equals_monai_per_sample():
    from monai.transforms import GibbsNoise

    x = _image()
    alpha = torch.tensor([0.0, 0.3, 0.6])
    out = augment.gibbs(x, alpha)
    for i, a in enumerate(alpha.tolist()):
        ref = torch.as_tensor(GibbsNoise(alpha=a)(x[i]))
        assert torch.allclose(out[i], ref, atol=1e-5)


def test_gamma_equals_monai_adjust_contrast_on_the_unit_range():
    from monai.transforms import AdjustContrast

    x = _image(1)
    x[:, :, 0, 0], x[:, :, 0, 1] = 0.0, 1.0  # the unit range MONAI rescales by
    g = torch.tensor([0.5, 1.0, 2.0])
    out = augment.gamma(x, g)
    for i, gi in enumerate(g.tolist()):
        assert torch.allclose(out[i], torch.as_tensor(AdjustContrast(gi)(x[i])), atol=1e-5)


def test_low_resolution_equals_monai_simulate_low_resolution():
    from monai.transforms import RandSimulateLowResolution

    x = _image(2)
    ref = RandSimulateLowResolution(prob=1.0, downsample_mode="area", upsample_mode="bilinear",
                                    zoom_range=(0.5, 0.5))
    out = augment.low_resolution(x, 0.5)
    for i in range(len(x)):
        assert torch.allclose(out[i], torch.as_tensor(ref(x[i])), atol=1e-5)


def test_bias_field_is_monais_legendre_polynomial():
    """MONAI's RandBiasField: exp(leggrid2d(y, x, C)) with C's lower triangle the coefficients."""
    h, w = 20, 30
    coeff = torch.linspace(-0.3, 0.3, augment.n_bias_coefficients()).view(1, -1)
    ys, xs = np.linspace(-1, 1, h), np.linspace(-1, 1, w)
    c = np.zeros((4, 4))
    c[np.tril_indices(4)] = coeff[0].numpy()
    ref = np.exp(np.polynomial.legendre.leggrid2d(ys, xs, c))
    grid = torch.stack(torch.meshgrid(torch.tensor(xs), torch.tensor(ys), indexing="xy"), -1)
    out = augment.bias_field(torch.ones(1, 1, h, w, dtype=torch.float64), grid[None], coeff)
    np.testing.assert_allclose(out[0, 0].numpy(), ref, rtol=1e-6)


def test_histogram_shift_is_monotone_and_fixes_the_ends():
    x = torch.linspace(0, 1, 101).view(1, 1, 1, 101).repeat(2, 1, 1, 1)
    points = torch.tensor([[0.0, 0.1, 0.2, 1.0], [0.0, 0.7, 0.9, 1.0]])
    out = augment.histogram_shift(x, points)[:, 0, 0]
    assert (out.diff(dim=1) >= 0).all()
    assert torch.allclose(out[:, 0], torch.zeros(2)) and torch.allclose(out[:, -1], torch.ones(2))
    ref = np.interp(x[0, 0, 0].numpy(), np.linspace(0, 1, 4), points[1].numpy())
    np.testing.assert_allclose(out[1].numpy(), ref, atol=1e-6)


def _stack(seed=0, n=5, shape=(50, 44)):
    """Slices whose intensity encodes their label (label / 2), so alignment can be checked."""
    rng = np.random.default_rng(seed)
    lab = np.zeros((n, 1, *shape), np.int16)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for i in range(n):
        for c in (1, 2):
            cy, cx, r = rng.uniform(10, 34), rng.uniform(10, 30), rng.uniform(5, 12)
            lab[i, 0][(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = c
    return (lab / 2).astype(np.float32), lab


def _sampler(randomization, seed=0, patch=(32, 32), crop_fraction=0.5, **kw):
    img, lab = _stack()
    return PatchSampler([img], [{"label": lab, "crop": lab}], [(0, i) for i in range(5)], None,
                        patch, 6, seed, randomization=randomization, n_labels=3,
                        crop_fraction=crop_fraction, **kw)


def test_exact_crops_are_pieces_of_the_slices():
    s = _sampler(NONE, flips=False)
    b = s.draw()
    img, _ = _stack()
    for patch in b["image"][:, 0].numpy():
        found = any((img[i, 0, y:y + 32, x:x + 32] == patch).all()
                    for i in range(5) for y in range(19) for x in range(13))
        assert found
    assert torch.equal(b["label"], b["image"] * 2)


@pytest.mark.parametrize("rand", [replace(DOMAIN, histogram=0, gamma=(1, 1), bias=0,
                                          low_res=(1, 1), gibbs=(0, 0), noise=(0, 0),
                                          scale=0, shift=0),
                                  Randomization(rotate=30.0, zoom=(0.5, 2.0))])
def test_rotated_and_zoomed_labels_stay_on_their_pixels(rand):
    b = _sampler(rand).draw()
    agree = (b["label"] == torch.round(b["image"] * 2)).float().mean().item()
    assert agree > 0.97  # only pixels on interpolated class boundaries may differ
    assert set(torch.unique(b["label"]).tolist()) <= {0.0, 1.0, 2.0}


def test_same_seed_same_batches_other_seed_differs():
    a, b, c = (_sampler(DOMAIN, seed=s) for s in (3, 3, 4))
    for _ in range(2):
        x, y, z = a.draw(), b.draw(), c.draw()
        assert all(torch.equal(x[k], y[k]) for k in x)
    assert not torch.equal(x["image"], z["image"])


def test_domain_randomisation_changes_intensities_within_range():
    b = _sampler(DOMAIN).draw()
    x = b["image"]
    assert x.min() >= 0 and x.max() <= 1 and torch.isfinite(x).all()
    plain = _sampler(NONE, flips=False).draw()["image"]
    assert not torch.equal(x, plain)


def test_foreground_crops_always_hold_foreground():
    img = np.zeros((4, 1, 200, 200), np.float32)
    lab = np.zeros((4, 1, 200, 200), np.int16)
    lab[:, 0, 150:154, 20:24] = 1  # a tiny target far from the centre
    img[lab > 0] = 1.0
    s = PatchSampler([img], [{"label": lab, "crop": lab}], [(0, i) for i in range(4)], None,
                     (32, 32), 16, 0, crop_fraction=1.0)
    for _ in range(3):
        assert (s.draw()["label"].flatten(1).amax(1) > 0).all()


def test_draw_uses_one_generator_on_the_device():
    g = torch.Generator().manual_seed(0)
    d = Draw(g, torch.Generator().manual_seed(1), 4, torch.device("cpu"))
    u = d.log_uniform(0.5, 2.0)
    assert u.shape == (4,) and (u >= 0.5).all() and (u <= 2.0).all()
    x = augment.intensity(_image(0, (4, 1, 16, 16)), torch.zeros(4, 16, 16, 2), DOMAIN, d)
    assert x.shape == (4, 1, 16, 16) and torch.isfinite(x).all()

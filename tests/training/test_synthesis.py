"""Images drawn from label maps (SynthSeg-style): regions follow the image's own intensity
clusters, synthetic patches follow the labels and not the scan, and nothing else changes."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from napari_unet.errors import SettingsError
from napari_unet.training import TrainSettings
from napari_unet.training.augment import NONE
from napari_unet.training.data import PatchSampler
from napari_unet.training.synthesis import SUBREGIONS, subregion_map


def test_regions_are_intensity_clusters_within_each_class():
    labels = np.zeros((1, 6, 8), np.int16)
    labels[0, 3:] = 1
    image = np.zeros((1, 6, 8), np.float32)  # class 0: air (many exact zeros), skin, bone
    image[0, 1, :] = 0.5
    image[0, 2, :] = 0.9
    image[0, 3:, :4], image[0, 3:, 4:] = 0.3, 0.35  # class 1: two close tissues
    regions = subregion_map(image, labels, 2)
    assert (regions[0, 0] == regions[0, 0, 0]).all()  # the tied zeros stay together
    assert len({regions[0, 0, 0], regions[0, 1, 0], regions[0, 2, 0]}) == 3
    assert (regions[labels == 0] < SUBREGIONS).all() and (regions[labels == 1] >= SUBREGIONS).all()
    assert regions[0, 3, 0] != regions[0, 3, 7]
    flat = subregion_map(np.ones_like(image), labels, 2)  # one value per class: one region
    assert np.array_equal(flat, labels * SUBREGIONS)


def _sampler(synthesis: float, regions: bool = True) -> PatchSampler:
    rng = np.random.default_rng(0)
    lab = np.zeros((4, 1, 40, 40), np.int16)
    lab[:, :, 10:30, 10:30] = 1
    lab[:, :, 15:25, 15:25] = 2
    img = (lab / 2 + 0.05 * rng.standard_normal(lab.shape)).astype(np.float32)
    extras = {"label": lab, "crop": lab}
    if regions:
        extras["regions"] = (lab * SUBREGIONS).astype(np.int16)
    return PatchSampler([img], [extras], [(0, i) for i in range(4)], None, (32, 32), 6, 0,
                        flips=False, randomization=replace(NONE, synthesis=synthesis),
                        n_labels=3)


def test_synthetic_patches_follow_the_labels_not_the_scan():
    real, fake = _sampler(0.0).draw(), _sampler(1.0).draw()
    assert torch.equal(real["label"], fake["label"]) and "regions" not in fake
    assert not torch.equal(real["image"], fake["image"])
    x, y = fake["image"], fake["label"]
    for c in range(3):  # away from the class edges (and the blur) a region is near flat
        core = torch.nn.functional.avg_pool2d((y == c).float(), 7, 1, 3) == 1
        for i in range(len(x)):
            if core[i].sum() > 20:
                assert x[i][core[i]].std() < 0.1
    real_x = real["image"]
    assert real_x[y == 2].mean() > real_x[y == 0].mean() + 0.5  # the scan's contrast...
    assert abs(x[y == 2].mean() - x[y == 0].mean()) < 0.5  # ...is not the synthetic one's
    assert x.min() >= 0 and x.max() <= 1


def test_without_synthesis_the_batches_are_what_they_were():
    """A run that does not ask for synthesis draws exactly the same batches as before it
    existed, even with region maps present (the shipped models stay reproducible)."""
    a, b = _sampler(0.0), _sampler(0.0, regions=False)
    for _ in range(2):
        x, y = a.draw(), b.draw()
        assert torch.equal(x["image"], y["image"]) and torch.equal(x["label"], y["label"])


def test_synthesis_is_for_segmentation_of_single_slices():
    with pytest.raises(SettingsError, match="share of patches"):
        TrainSettings(task="segment", synthesis=1.5)
    with pytest.raises(SettingsError, match="segmentation without slice context"):
        TrainSettings(task="denoise", synthesis=0.5)
    with pytest.raises(SettingsError, match="segmentation without slice context"):
        TrainSettings(task="segment", synthesis=0.5, slice_context=1)

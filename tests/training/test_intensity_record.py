"""Training and fine-tuning record what the training scans look like after normalisation
(the model's intensity profile, which quality scores compare every scan with)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet.training import finetune, train
from support.synthetic import TINY, blobs, smooth_volume


def _normalised_signal_median(image: np.ndarray) -> float:
    """An independent reading: the median of the voxels above Otsu after 0.5..99.5
    percentile normalisation (scikit-image's threshold)."""
    from skimage.filters import threshold_otsu

    lo, hi = np.percentile(image, [0.5, 99.5])
    x = np.clip((image - lo) / (hi - lo), 0, 1).reshape(-1)
    return float(np.median(x[x > threshold_otsu(x)]))


def test_segmentation_training_records_its_scans_and_classes():
    img, lab = blobs(0)
    model = train(img, lab, iterations=2, **TINY).model
    prof = model.meta.intensity_profile
    assert prof is not None and len(prof.scans) == 1 and prof.noise_added is None
    scan = prof.scans[0]
    assert scan.quantiles[10] == pytest.approx(_normalised_signal_median(img), abs=0.03)
    assert len(scan.classes) == model.task.n_labels  # one quantile list per class
    present = [c for c in range(model.task.n_labels) if scan.classes[c] is not None]
    assert present and all(np.all(np.diff(scan.classes[c]) >= 0) for c in present)


def test_two_scans_two_profiles_and_training_on_from_a_model_keeps_its_scans():
    (a, la), (b, lb) = blobs(1), blobs(2)
    first = train([a], [la], iterations=2, **TINY).model
    assert len(first.meta.intensity_profile.scans) == 1
    second = train([a, b * 3.0 + 100.0], [la, lb], iterations=2, init=first, **TINY).model
    # a is the parent's scan again (kept once); b, rescaled, is a scan of its own
    assert len(second.meta.intensity_profile.scans) == 2


def test_supervised_denoising_records_the_noise_it_learned():
    vol = smooth_volume()
    model = train(vol, task="denoise", noise="gaussian", noise_level=(0.02, 0.08),
                  iterations=2, **TINY).model
    prof = model.meta.intensity_profile
    assert prof.noise_added == (0.02, 0.08)
    # read on the scan with the most noise it added: about that much, never the clean scan's
    assert prof.noise_learned == pytest.approx(0.08, rel=0.3)
    assert prof.noise_learned > 5 * _clean_reading(vol)


def _clean_reading(vol) -> float:
    from napari_unet.model.intensity_profile import noise_level
    from napari_unet.model.normalize import Normalization

    return noise_level(np.asarray(getattr(vol, "array", vol)), Normalization())


def test_fine_tuning_adds_the_corrected_scan_to_what_the_model_learned_from():
    img, lab = blobs(3)
    parent = train(img, lab, iterations=2, **TINY).model
    other = np.sqrt(np.clip(img, 1, None)) * 40  # another contrast (a gamma of 0.5)
    trusted = np.zeros(len(other), bool)
    trusted[[1, 2]] = True
    child = finetune(parent, other, lab, trusted, iterations=2, patch_size=(32, 32),
                     batch_size=2).model
    scans = child.meta.intensity_profile.scans
    assert len(scans) == 2 and scans[0] == parent.meta.intensity_profile.scans[0]
    again = finetune(child, other, lab, trusted, iterations=2, patch_size=(32, 32),
                     batch_size=2).model
    assert len(again.meta.intensity_profile.scans) == 2  # the same scan: not added twice

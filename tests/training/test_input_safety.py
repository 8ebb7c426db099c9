"""Issue 11 for training: hostile label values, boolean arrays and empty images get a
clear error naming the input (or are accepted as what they mean) before any allocation."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from napari_unet.cli.main import main
from napari_unet.errors import SettingsError
from napari_unet.training import train
from support.synthetic import TINY, blobs, falls


def _nifti(path, array):
    nib.save(nib.Nifti1Image(np.ascontiguousarray(array.T), np.eye(4)), str(path))
    return str(path)


def test_a_huge_label_value_is_refused_naming_the_file(tmp_path, capsys):
    img, lab = blobs(0)
    lab = lab.astype(np.int32)
    lab[0, 0, 0] = 10**6
    labels = _nifti(tmp_path / "bad_labels.nii.gz", lab)
    with pytest.raises(SettingsError, match=r"bad_labels.nii.gz: label value 1000000"):
        train(img, labels, iterations=1, **TINY)
    out = tmp_path / "never.safetensors"
    rc = main(["train", "--task", "segment", "--images", _nifti(tmp_path / "scan.nii.gz", img),
               "--labels", labels, "--iterations", "1", "-o", str(out), "-q"])
    assert rc == 2 and not out.exists()
    assert "bad_labels.nii.gz: label value 1000000" in capsys.readouterr().err


def test_class_counts_are_checked_against_memory_before_allocating(monkeypatch):
    img, lab = blobs(1)
    lab = lab.astype(np.int32)
    lab[0, 0, 0] = 60_000  # a valid uint16 label, but 60001 classes of activations
    monkeypatch.setenv("NAPARI_UNET_MAX_BYTES", str(2**30))
    with pytest.raises(SettingsError, match=r"label value 60000 in labels0: training 60001 "
                                            r"classes .* over the limit"):
        train(img, lab, iterations=1, **TINY)
    with pytest.raises(SettingsError, match="--classes: training 50000 classes"):
        train(img, lab, n_classes=50_000, iterations=1, **TINY)
    with pytest.raises(SettingsError, match="70000 classes, over the limit of 65536"):
        train(img, lab, n_classes=70_000, iterations=1, **TINY)


@pytest.mark.parametrize("bad", [-3, 2.5, np.nan])
def test_labels_that_are_not_class_numbers_are_refused(bad):
    img, lab = blobs(2)
    lab = lab.astype(np.float32)
    lab[1, 2, 3] = bad
    with pytest.raises(SettingsError, match="labels0"):
        train(img, lab, iterations=1, **TINY)


def test_boolean_labels_and_images_train_as_zero_and_one():
    img, lab = blobs(3)
    res = train(img, lab > 0, iterations=30, **TINY)
    assert res.model.task.is_binary and falls(res.losses)
    res = train(img > 300, lab > 0, iterations=2, **TINY)
    assert res.iterations == 2


@pytest.mark.parametrize("fill", [np.nan, np.inf, 7.0])
def test_an_image_without_contrast_is_refused_naming_it(tmp_path, fill):
    _, lab = blobs(4)
    empty = _nifti(tmp_path / "empty.nii.gz", np.full(lab.shape, fill, np.float32))
    with pytest.raises(SettingsError, match="empty.nii.gz: .*nothing to learn from"):
        train(empty, lab, iterations=1, **TINY)
    with pytest.raises(SettingsError, match="nothing to learn from"):
        train(np.full(lab.shape, fill, np.float32), task="denoise", iterations=1, **TINY)


def test_scattered_nan_voxels_do_not_poison_training():
    img, lab = blobs(5)
    img[:, :5, :5] = np.nan
    res = train(img, lab, iterations=20, **TINY)
    assert all(np.isfinite(res.losses)) and falls(res.losses)

"""Training from a BIDS dataset: images paired with the dseg of a derivative dataset."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_unet.io.bids import BidsError
from napari_unet.training.bids_pairs import bids_training_pairs
from support.bids_data import T1W, bids_dataset
from support.cli_run import console, load_report


def _labels_dataset(raw: Path, maps: dict[str, str]) -> Path:
    """A derivative dataset of hand-made label maps: its file -> the image it labels."""
    deriv = raw / "derivatives" / "manual"
    deriv.mkdir(parents=True)
    (deriv / "dataset_description.json").write_text(json.dumps(
        {"Name": "manual labels", "BIDSVersion": "1.10.0", "DatasetType": "derivative",
         "GeneratedBy": [{"Name": "Manual"}]}))
    for rel, image in maps.items():
        img = nib.load(raw / f"{image}.nii.gz")
        data = (np.asarray(img.dataobj) > 150).astype(np.uint8)
        data[: data.shape[0] // 2] *= 2
        path = deriv / f"{rel}.nii.gz"
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(data, img.affine, img.header), str(path))
    return deriv


@pytest.fixture
def raw(tmp_path) -> Path:
    return bids_dataset(tmp_path / "raw").resolve()


def test_images_pair_with_the_labels_of_the_same_image(raw):
    deriv = _labels_dataset(raw, {
        "sub-01/anat/sub-01_desc-manual_dseg": "sub-01/anat/sub-01_T1w",
        "sub-02/ses-2/anat/sub-02_ses-2_run-2_space-orig_desc-manual_dseg":
            "sub-02/ses-2/anat/sub-02_ses-2_run-2_T1w",
        # not on the image's grid, or of another run: never paired
        "sub-02/ses-2/anat/sub-02_ses-2_run-1_space-MNI152NLin2009cAsym_dseg":
            "sub-02/ses-2/anat/sub-02_ses-2_run-1_T1w",
        "sub-02/ses-1/anat/sub-02_ses-1_run-3_dseg": "sub-02/ses-1/anat/sub-02_ses-1_T1w",
    })
    pairs = bids_training_pairs(raw, deriv)
    rel = [(Path(i).relative_to(raw).as_posix(), Path(lab).relative_to(deriv).as_posix())
           for i, lab in zip(pairs.images, pairs.labels, strict=True)]
    assert rel == [
        ("sub-01/anat/sub-01_T1w.nii.gz", "sub-01/anat/sub-01_desc-manual_dseg.nii.gz"),
        ("sub-02/ses-2/anat/sub-02_ses-2_run-2_T1w.nii.gz",
         "sub-02/ses-2/anat/sub-02_ses-2_run-2_space-orig_desc-manual_dseg.nii.gz")]
    assert sorted(pairs.unlabelled) == sorted(
        f"{p}.nii.gz" for p in T1W if "sub-01" not in p and "run-2" not in p)
    assert pairs.suffixes == ["T1w"]


def test_two_label_maps_for_one_image_ask_for_a_filter(raw):
    deriv = _labels_dataset(raw, {
        "sub-01/anat/sub-01_desc-manual_dseg": "sub-01/anat/sub-01_T1w",
        "sub-01/anat/sub-01_desc-auto_dseg": "sub-01/anat/sub-01_T1w"})
    with pytest.raises(BidsError, match="2 label maps .* match it .* desc=manual"):
        bids_training_pairs(raw, deriv)
    pairs = bids_training_pairs(raw, deriv, label_filters={"desc": "manual"})
    assert [Path(p).name for p in pairs.labels] == ["sub-01_desc-manual_dseg.nii.gz"]


def test_no_dataset_or_no_match_is_a_usage_error(raw, tmp_path):
    with pytest.raises(BidsError, match="not the root of a BIDS dataset"):
        bids_training_pairs(raw / "sub-01")
    deriv = _labels_dataset(raw, {"sub-01/anat/sub-01_dseg": "sub-01/anat/sub-01_T1w"})
    with pytest.raises(BidsError, match="no dseg label map matches"):
        bids_training_pairs(raw, deriv, filters={"subject": "02"})


@pytest.mark.slow
def test_train_on_bids_then_predict_takes_the_suffix_it_learned_from(raw, tmp_path):
    from napari_unet.model.checkpoint import load_model

    deriv = _labels_dataset(raw, {
        "sub-01/anat/sub-01_desc-manual_dseg": "sub-01/anat/sub-01_T2w",
        "sub-02/ses-1/anat/sub-02_ses-1_desc-manual_dseg": "sub-02/ses-1/anat/sub-02_ses-1_T2w"})
    model = tmp_path / "t2.safetensors"
    proc = console("train", "--task", "segment", "--bids", raw, "--bids-filter", "suffix=T2w",
                   "--bids-labels", deriv, "--classes", "3", "--iterations", "2", "--base",
                   "4", "--patch", "16", "16", "--batch-size", "2", "-q", "-o", model)
    assert proc.returncode == 0, proc.stderr
    assert "BIDS: 2 BIDS images (T2w) with their labels" in proc.stderr
    prov = load_model(model).meta.provenance
    assert prov["bids_suffixes"] == ["T2w"]
    assert sorted(prov["data"]) == ["sub-01_T2w.nii.gz", "sub-02_ses-1_T2w.nii.gz"]
    out = tmp_path / "out"
    proc = console("predict", raw, "-o", out, "--model", model, "--no-qc")
    assert proc.returncode == 0, proc.stderr
    assert sorted(e["name"] for e in load_report(out)["scans"]) == [
        "sub-01_T2w", "sub-02_ses-1_T2w"]

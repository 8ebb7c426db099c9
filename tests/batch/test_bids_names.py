"""Derivative file names from the BIDS schema: entities kept, dropped, added, in order."""

from __future__ import annotations

import pytest

from napari_unet.batch import bids_names as names
from napari_unet.io.bids import BidsImage
from napari_unet.model.tasks import make_task


def image(**entities) -> BidsImage:
    entities = {"datatype": "anat", "extension": ".nii.gz", **entities}
    return BidsImage("/x", "x", tuple(entities.items()))


SEG = make_task("segment", n_classes=3, class_names=["background/CSF", "grey matter",
                                                      "white matter"])


def test_segmentation_outputs_keep_the_source_entities_in_schema_order():
    src = image(subject="01", session="1", run="02", acquisition="mprage", ceagent="gad",
                reconstruction="norm", echo="1", suffix="T1w")
    got = names.output_names(src, SEG, probabilities=True)
    stem = "sub-01_ses-1_acq-mprage_ce-gad_rec-norm_run-02_echo-1_space-orig"
    folder = "sub-01/ses-1/anat"
    assert got == {
        "labels": f"{folder}/{stem}_dseg.nii.gz",
        "tsv": f"{folder}/{stem}_dseg.tsv",
        "probseg:1": f"{folder}/{stem}_label-GreyMatter_probseg.nii.gz",
        "probseg:2": f"{folder}/{stem}_label-WhiteMatter_probseg.nii.gz",
        "uncertainty": f"{folder}/{stem}_uncertainty.nii.gz",
    }


def test_denoised_images_keep_their_suffix_and_get_desc_denoised():
    src = image(subject="7", suffix="T2w", desc="preproc", space="MNI152NLin2009cAsym")
    got = names.output_names(src, make_task("denoise"), probabilities=False)
    assert got == {"image": "sub-7/anat/sub-7_space-MNI152NLin2009cAsym_desc-denoised_T2w"
                            ".nii.gz"}


def test_entities_a_segmentation_may_not_carry_are_dropped_and_named():
    src = image(subject="01", inv="2", suffix="MP2RAGE")
    assert names.output_names(src, SEG, False)["labels"] == \
        "sub-01/anat/sub-01_space-orig_dseg.nii.gz"
    assert names.dropped_entities(src, "dseg") == ["inv"]


def test_a_binary_model_has_one_probability_map_for_its_foreground():
    task = make_task("segment", n_classes=1, class_names=["background", "lesion"])
    got = names.output_names(image(subject="01", suffix="FLAIR"), task, True)
    assert got["probseg:0"] == "sub-01/anat/sub-01_space-orig_label-Lesion_probseg.nii.gz"


@pytest.mark.parametrize(("classes", "labels"), [
    (["background/CSF", "grey matter", "white matter"],
     ["BackgroundCSF", "GreyMatter", "WhiteMatter"]),
    (["a", "", "a", "x-ray 2"], ["A", "class1", "A2", "XRay2"]),
])
def test_class_names_become_bids_labels(classes, labels):
    assert names.class_labels(classes) == labels


def test_figures_and_sidecars_sit_where_bids_expects_them():
    src = image(subject="01", session="2", suffix="T1w")
    primary = "sub-01/ses-2/anat/sub-01_ses-2_space-orig_dseg.nii.gz"
    assert names.figure_name(src, primary) == "sub-01/figures/sub-01_ses-2_space-orig_dseg.png"
    assert names.sidecar(primary) == "sub-01/ses-2/anat/sub-01_ses-2_space-orig_dseg.json"

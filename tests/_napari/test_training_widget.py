"""The training widget as napari opens it: train, plot, keep the model, warn when it is poor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_unet._napari.layers import class_colormap, class_features
from napari_unet._napari.training_widget import class_count, poor_dice_warning
from napari_unet._napari.worker import JobState
from napari_unet.model.checkpoint import load_model
from support import widget_helpers as W
from support.widget_helpers import home_in_tmp, one_torch_thread  # noqa: F401 (autouse)

pytestmark = pytest.mark.gui
NAMES = ["background", "bright block", "dim disc"]


def models_in(home) -> list:
    return sorted((home / "napari-unet" / "models").glob("*.safetensors"))


@pytest.fixture
def layers_viewer(make_napari_viewer):
    """A scan and its named labels, as the reader or the inference widget leave them."""
    viewer = make_napari_viewer()
    image, labels = W.phantom((8, 40, 48))
    viewer.add_image(image, name="scan", scale=W.SCALE)
    viewer.add_labels(labels, name="truth", scale=W.SCALE, features=class_features(NAMES),
                      colormap=class_colormap(3))
    return viewer


def test_training_keeps_the_class_names_saves_in_the_user_folder_and_plots(
        layers_viewer, qtbot, tmp_path):
    home = Path.home()  # the test's own folder (home_in_tmp)
    widget = W.open_widget(layers_viewer, W.TRAINING)
    widget.task.value = "denoise"
    assert not widget.is_shown(widget.classes) and widget.is_shown(widget.noise)
    widget.task.value = "segment"
    assert widget.is_shown(widget.classes) and not widget.is_shown(widget.noise)
    assert widget.class_names.value == ", ".join(NAMES)  # from the labels layer
    assert not widget.save_button.enabled
    widget.base.value, widget.budget.value = 4, 2
    W.click(qtbot, widget.train_button)
    assert W.wait_until_idle(qtbot, widget, 60000) is JobState.DONE, widget.runner.error
    (saved,) = models_in(home)
    assert saved.name.startswith("unet-segment-")
    model = load_model(saved, device="cpu")
    assert list(model.task.class_names) == NAMES and model.task.n_classes == 3
    assert widget.plot.history and widget.plot.loss_ax.lines[0].get_xdata().size >= 1
    assert "iterations" in widget.status.value and str(saved) in widget.status.value
    # Save after the run: to a file of the user's choice, as often as they like; a file
    # there already (the first save, or anyone's) is kept and the next goes beside it
    widget.output.value = tmp_path / "mine.safetensors"
    W.click(qtbot, widget.save_button)
    assert load_model(tmp_path / "mine.safetensors", device="cpu").hash == model.hash
    first = (tmp_path / "mine.safetensors").read_bytes()
    W.click(qtbot, widget.save_button)
    beside = tmp_path / "mine-1.safetensors"
    assert load_model(beside, device="cpu").hash == model.hash
    assert (tmp_path / "mine.safetensors").read_bytes() == first
    assert str(widget.output.value) == str(beside) and str(beside) in widget.status.value


def test_cancel_keeps_the_partial_model_and_offers_to_save_it(layers_viewer, qtbot):
    home = Path.home()
    widget = W.open_widget(layers_viewer, W.TRAINING)
    widget.base.value, widget.budget.value = 4, 600
    W.click(qtbot, widget.train_button)
    qtbot.waitUntil(lambda: widget.runner.panel.bar.value >= 1, timeout=30000)
    W.click(qtbot, widget.cancel_button)
    qtbot.waitUntil(lambda: widget.runner.state is JobState.CANCELLED, timeout=1000)
    W.wait_until_idle(qtbot, widget)
    assert models_in(home) == []  # not saved without asking
    assert "press Save model" in widget.status.value and widget.save_button.enabled
    assert widget.result.stopped_by == "cancelled"
    W.click(qtbot, widget.save_button)
    (saved,) = models_in(home)
    assert load_model(saved, device="cpu").task.n_classes == 3


@pytest.mark.slow  # 2.5 s or more: CI runs it, the quick tier does not
def test_training_again_never_overwrites_a_saved_model(layers_viewer, qtbot, tmp_path):
    """A model saved to a chosen file stays: the next run saves beside it, and says where."""
    widget = W.open_widget(layers_viewer, W.TRAINING)
    widget.base.value, widget.budget.value = 4, 1
    mine = tmp_path / "keep_me.safetensors"
    widget.output.value = mine
    W.click(qtbot, widget.train_button)
    assert W.wait_until_idle(qtbot, widget, 60000) is JobState.DONE, widget.runner.error
    kept = load_model(mine, device="cpu").hash
    widget.task.value = "denoise"
    W.click(qtbot, widget.train_button)
    assert W.wait_until_idle(qtbot, widget, 60000) is JobState.DONE, widget.runner.error
    assert load_model(mine, device="cpu").hash == kept
    beside = tmp_path / "keep_me-1.safetensors"
    assert load_model(beside, device="cpu").task.kind == "denoise"
    assert str(widget.output.value) == str(beside) and str(beside) in widget.status.value


def test_labels_unrelated_to_the_scan_give_a_poor_dice_warning(make_napari_viewer, qtbot):
    notifications = W.notification_log()
    viewer = make_napari_viewer()
    image, _ = W.phantom((10, 32, 32))
    noise = np.random.default_rng(1).integers(0, 3, image.shape).astype(np.uint8)
    viewer.add_image(image, name="scan")
    viewer.add_labels(noise, name="random")
    widget = W.open_widget(viewer, W.TRAINING)
    widget.base.value, widget.budget.value = 4, 1
    W.click(qtbot, widget.train_button)
    assert W.wait_until_idle(qtbot, widget, 60000) is JobState.DONE, widget.runner.error
    assert widget.result.metrics["val_dice"] < 0.5
    assert any("validation Dice" in m for m in W.warnings_shown(notifications()))
    assert "Warning: validation Dice" in widget.status.value


def test_training_from_files(make_napari_viewer, qtbot, tmp_path):
    import nibabel as nib

    image, labels = W.phantom((6, 32, 40))
    for name, data in (("scan.nii.gz", image), ("truth.nii.gz", labels)):
        nib.Nifti1Image(data.transpose(2, 1, 0), np.eye(4)).to_filename(tmp_path / name)
    widget = W.open_widget(make_napari_viewer(), W.TRAINING)
    widget.source.value = "files"
    assert widget.is_shown(widget.image_files) and not widget.is_shown(widget.image)
    widget.image_files.value = [tmp_path / "scan.nii.gz"]
    widget.label_files.value = [tmp_path / "truth.nii.gz"]
    widget.classes.value, widget.base.value, widget.budget.value = 3, 4, 1
    widget.output.value = tmp_path / "from_files.safetensors"
    W.click(qtbot, widget.train_button)
    assert W.wait_until_idle(qtbot, widget, 60000) is JobState.DONE, widget.runner.error
    assert widget.result.model.task.class_names[0] == "background"
    assert "scan.nii.gz" in str(widget.result.model.meta.provenance)
    assert (tmp_path / "from_files.safetensors").is_file()


def test_training_from_a_bids_dataset_and_its_derivative_labels(make_napari_viewer, qtbot,
                                                                tmp_path):
    import json

    import nibabel as nib

    from support.bids_data import bids_dataset

    raw = bids_dataset(tmp_path / "raw", {"sub-01/anat/sub-01_T2w": 1,
                                          "sub-02/anat/sub-02_T2w": 2,
                                          "sub-02/anat/sub-02_T1w": 3})
    deriv = tmp_path / "manual"
    (deriv / "sub-02/anat").mkdir(parents=True)
    (deriv / "dataset_description.json").write_text(json.dumps(
        {"Name": "labels", "BIDSVersion": "1.10.0", "DatasetType": "derivative",
         "GeneratedBy": [{"Name": "Manual"}]}))
    src = nib.load(raw / "sub-02/anat/sub-02_T2w.nii.gz")
    labels = (np.asarray(src.dataobj) > 150).astype(np.uint8)
    nib.save(nib.Nifti1Image(labels, src.affine), str(deriv / "sub-02/anat/sub-02_dseg.nii.gz"))
    widget = W.open_widget(make_napari_viewer(), W.TRAINING)
    widget.source.value = "BIDS dataset"
    assert widget.is_shown(widget.bids_root) and widget.is_shown(widget.bids_labels)
    assert not widget.is_shown(widget.image_files) and not widget.is_shown(widget.image)
    widget.bids_root.value, widget.bids_labels.value = raw, deriv
    widget.bids_suffix.value = "T2w"
    images, pairs = widget.data()  # sub-01 has no labels: left out
    assert [Path(p).name for p in images] == ["sub-02_T2w.nii.gz"]
    assert [Path(p).name for p in pairs] == ["sub-02_dseg.nii.gz"]
    widget.classes.value, widget.base.value, widget.budget.value = 1, 4, 1
    widget.output.value = tmp_path / "from_bids.safetensors"
    W.click(qtbot, widget.train_button)
    assert W.wait_until_idle(qtbot, widget, 60000) is JobState.DONE, widget.runner.error
    assert load_model(tmp_path / "from_bids.safetensors").meta.provenance[
        "bids_suffixes"] == ["T2w"]


def test_the_files_of_a_dicom_series_picked_in_the_dialog_are_one_scan(
        make_napari_viewer, qtbot, tmp_path):
    """A file dialog picks files, not folders: a series' slices stand for their series."""
    from napari_unet.io import read_volume, write_volume
    from support.dicom_factory import write_dicom_series

    image, labels = W.phantom((6, 32, 40))
    slices = write_dicom_series(np.round(image).astype(np.int16), tmp_path / "series",
                                spacing=(2.0, 0.8, 0.9))
    write_volume(labels, tmp_path / "truth.nii.gz", like=read_volume(tmp_path / "series"))
    widget = W.open_widget(make_napari_viewer(), W.TRAINING)
    widget.source.value = "files"
    widget.image_files.value = slices
    widget.label_files.value = [tmp_path / "truth.nii.gz"]
    widget.classes.value, widget.base.value, widget.budget.value = 3, 4, 1
    widget.output.value = tmp_path / "from_dicom.safetensors"
    W.click(qtbot, widget.train_button)
    assert W.wait_until_idle(qtbot, widget, 60000) is JobState.DONE, widget.runner.error
    assert "series" in str(widget.result.model.meta.provenance)


def test_a_2_5d_denoiser_from_the_widget(layers_viewer, qtbot, tmp_path):
    widget = W.open_widget(layers_viewer, W.TRAINING)
    widget.task.value = "denoise"
    widget.self_supervised.value = True
    assert not widget.is_shown(widget.context)  # a blind spot takes no neighbours
    widget.self_supervised.value = False
    assert widget.is_shown(widget.context)
    widget.context.value, widget.base.value, widget.budget.value = 1, 4, 1
    widget.output.value = tmp_path / "den25.safetensors"
    W.click(qtbot, widget.train_button)
    assert W.wait_until_idle(qtbot, widget, 60000) is JobState.DONE, widget.runner.error
    model = load_model(tmp_path / "den25.safetensors", device="cpu")
    assert model.meta.slice_context == 1 and model.meta.architecture.in_channels == 3


def test_class_count_and_dice_words():
    assert class_count([], 2) is None
    assert class_count(["background", "tumour"], 1) == 1  # binary labels, two names
    assert class_count(["background", "a", "b"], 1) == 3  # a class not painted yet
    assert poor_dice_warning({"val_dice": 0.31}).startswith("validation Dice 0.31")
    assert poor_dice_warning({"val_dice": 0.8}) is None
    assert poor_dice_warning({"val_psnr": 30.0}) is None


@pytest.mark.slow  # 2.5 s or more: CI runs it, the quick tier does not
def test_learning_from_all_three_planes(make_napari_viewer, qtbot):
    """The box reaches the model: a scan of cubic voxels is cut along its three planes."""
    viewer = make_napari_viewer()
    image, labels = W.phantom((24, 24, 24))
    viewer.add_image(image, name="scan", scale=(0.8, 0.8, 0.8))
    viewer.add_labels(labels, name="truth", scale=(0.8, 0.8, 0.8),
                      features=class_features(NAMES), colormap=class_colormap(3))
    widget = W.open_widget(viewer, W.TRAINING)
    widget.task.value = "denoise"
    assert not widget.is_shown(widget.all_planes)
    widget.task.value = "segment"
    assert widget.is_shown(widget.all_planes) and not widget.all_planes.value
    widget.all_planes.value = True
    widget.base.value, widget.budget.value = 4, 2
    W.click(qtbot, widget.train_button)
    assert W.wait_until_idle(qtbot, widget, 60000) is JobState.DONE, widget.runner.error
    (saved,) = models_in(Path.home())
    provenance = load_model(saved, device="cpu").meta.provenance
    assert provenance["settings"]["all_planes"] and provenance["planes_per_volume"] == [3]
    assert "main plane only" not in widget.status.value
    for layer in viewer.layers:  # slices 3x as far apart as the pixels: one plane
        layer.scale = (2.4, 0.8, 0.8)
    W.click(qtbot, widget.train_button)
    assert W.wait_until_idle(qtbot, widget, 60000) is JobState.DONE, widget.runner.error
    assert "1 of 1 scans learned from their main plane only" in widget.status.value

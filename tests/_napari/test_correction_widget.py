"""The correction loop in a real viewer: paint, learn, undo, review, cancel, save."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from napari_unet._napari.correction_widget import CorrectionWidget
from napari_unet._napari.inference_widget import InferenceWidget
from napari_unet._napari.model_picker import FILE
from napari_unet.inference.predictor import predict_slices
from napari_unet.model.checkpoint import load_model
from support.widget_helpers import (
    SCALE,
    TRANSLATE,
    add_scan,
    one_torch_thread,  # noqa: F401 (autouse fixture)
    tiny_model_file,
)

pytestmark = pytest.mark.gui


@pytest.fixture
def loop(make_napari_viewer, tmp_path):
    """A viewer with a scan, its segmentation by a tiny model, and the correction widget."""
    viewer = make_napari_viewer()
    add_scan(viewer)
    inference = InferenceWidget(viewer)
    inference.picker.source.value = FILE
    inference.picker.file.value = tiny_model_file(tmp_path)
    inference.device.value = "cpu"
    inference.run_sync()
    widget = CorrectionWidget(viewer)
    widget.budget.value = 1
    return viewer, viewer.layers["scan tiny"], widget


def paint_two_slices(viewer, layer):
    """What a person does with the brush on slice 2 and the fill tool on slice 5."""
    viewer.layers.selection.active = layer
    layer.brush_size = 9
    viewer.dims.set_current_step(0, 2)
    layer.paint((2, 20, 20), (int(layer.data[2, 20, 20]) + 1) % 3)
    viewer.dims.set_current_step(0, 5)
    value = int(layer.data[5, 1, 1])
    layer.fill((5, 1, 1), (value + 1) % 3)
    layer.refresh()


def test_painted_slices_survive_learning_and_the_rest_is_repredicted(loop, qtbot):
    viewer, layer, widget = loop
    assert widget.edited.value.startswith("edited slices: 0")
    paint_two_slices(viewer, layer)
    qtbot.waitUntil(lambda: widget.edited.value.startswith("edited slices: 2"), timeout=3000)
    painted = layer.data[[2, 5]].copy()
    before = layer.data.copy()
    old = widget.session.model
    widget.learn_button.clicked.emit()  # thread path; the sync path is below
    assert widget.job.state == "running" and not widget.learn_button.enabled
    qtbot.waitUntil(lambda: widget.job.state != "running", timeout=60000)
    assert widget.job.state == "done", widget.job.error
    session = widget.session
    assert session.model is not old and session.model.hash != old.hash
    np.testing.assert_array_equal(layer.data[[2, 5]], painted)
    others = [0, 1, 3, 4, 6, 7]
    fresh = predict_slices(session.volume, session.model, others, axis=0, device="cpu")
    np.testing.assert_array_equal(layer.data[others], fresh.labels[others])
    assert "applied to 6 slices" in widget.status.value
    assert widget.undo_button.enabled
    widget.undo_button.clicked.emit()
    np.testing.assert_array_equal(layer.data, before)
    assert widget.session.model is old and not widget.undo_button.enabled


def test_learning_synchronously_from_two_corrected_slices(loop):
    viewer, layer, widget = loop
    paint_two_slices(viewer, layer)
    painted = layer.data[[2, 5]].copy()
    widget.learn(sync=True)
    assert widget.job.state == "done"
    np.testing.assert_array_equal(layer.data[[2, 5]], painted)
    assert widget.edited.value.startswith("edited slices: 2")
    assert widget.session.edited_slices() == [2, 5]


def test_review_next_jumps_to_the_most_uncertain_slice_and_marks_it(loop):
    viewer, layer, widget = loop
    unc = widget.session.slice_uncertainty
    first = widget.review_next()
    assert unc[first] == unc.max()
    assert viewer.dims.current_step[0] == first
    second = widget.review_next()
    assert second != first and unc[second] == np.sort(unc)[-2]
    assert viewer.dims.current_step[0] == second
    marks = viewer.layers["scan tiny reviewed"]
    assert sorted(marks.data[:, 0].astype(int)) == sorted([first, second])
    np.testing.assert_allclose(marks.scale, SCALE)
    assert f"{min(first, second)}, {max(first, second)}" in widget.reviewed.value


def test_cancel_stops_learning_and_leaves_the_labels_alone(loop, qtbot):
    viewer, layer, widget = loop
    widget.budget.value = 60
    paint_two_slices(viewer, layer)
    before = layer.data.copy()
    widget.learn()
    assert widget.cancel_button.enabled
    widget.cancel_button.clicked.emit()
    qtbot.waitUntil(lambda: widget.job.state == "cancelled", timeout=30000)
    np.testing.assert_array_equal(layer.data, before)
    assert not widget.session.can_undo and widget.learn_button.enabled


def test_save_model_and_labels(loop, tmp_path):
    viewer, layer, widget = loop
    paint_two_slices(viewer, layer)
    widget.learn(sync=True)
    widget.model_path.value = tmp_path / "corrected.safetensors"
    widget.save_model_button.clicked.emit()
    prov = load_model(tmp_path / "corrected.safetensors", device="cpu").meta.provenance
    assert prov["parent"]["name"] == "tiny" and prov["corrected_slices"] == 2
    widget.labels_path.value = tmp_path / "labels.nii.gz"
    widget.save_labels_button.clicked.emit()
    saved = nib.load(tmp_path / "labels.nii.gz")
    np.testing.assert_array_equal(np.asarray(saved.dataobj).transpose(2, 1, 0), layer.data)
    from napari_unet.io import read_volume
    from napari_unet.io.geometry import layer_geometry

    back = read_volume(tmp_path / "labels.nii.gz")
    geo = layer_geometry(back.spacing, back.origin, back.direction)
    np.testing.assert_allclose(geo["scale"], SCALE, rtol=1e-5)
    np.testing.assert_allclose(geo["translate"], TRANSLATE, atol=1e-4)

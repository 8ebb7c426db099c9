"""Axial / coronal / sagittal in the widgets follow the scan's direction, not array order."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from napari_unet._napari.planes import AUTO, axis_plane, plane_axis
from napari_unet._napari.progress_panel import clock, progress_text
from napari_unet._napari.worker import JobState
from napari_unet.inference.predictor import resolve_axis
from support import widget_helpers as W
from support.widget_helpers import home_in_tmp, one_torch_thread  # noqa: F401 (autouse)

AXIAL_FIRST = np.eye(3)[:, ::-1]  # array axes (z, y, x) along LPS (S, P, L): an axial scan
SAGITTAL_FIRST = np.eye(3)  # array axis 0 along L: slices stacked left to right


def test_plane_axis_follows_the_direction_cosines():
    assert [plane_axis(p, AXIAL_FIRST) for p in ("axial", "coronal", "sagittal")] == [0, 1, 2]
    assert [plane_axis(p, SAGITTAL_FIRST) for p in ("axial", "coronal", "sagittal")] == \
        [2, 1, 0]
    flipped = AXIAL_FIRST * np.array([-1, 1, -1])  # signs do not change the plane
    assert plane_axis("axial", flipped) == 0 and axis_plane(2, flipped) == "sagittal"
    tilted = AXIAL_FIRST.copy()
    c, s = np.cos(0.3), np.sin(0.3)
    tilted[:, 0] = [0, s, c]  # 17 degrees off axial is still axial
    assert axis_plane(0, tilted) == "axial"
    with pytest.raises(ValueError, match="unknown plane"):
        plane_axis("transverse", AXIAL_FIRST)


def test_progress_words():
    assert progress_text(0, 189, None) == "0/189"
    assert progress_text(60, 189, 13.2) == "60/189, about 0:13 left"
    assert progress_text(60, 189, None, "slices") == "60/189 slices"  # too early to guess
    assert progress_text(37, 200, 13.0, "%") == "18%, about 0:13 left"
    assert clock(3725) == "1:02:05" and clock(59.6) == "1:00"


@pytest.mark.gui
@pytest.mark.parametrize("choice", ["axial", AUTO])
def test_axial_means_axial_for_a_scan_stored_sagittal_first(make_napari_viewer, qtbot,
                                                            tmp_path, choice):
    """A NIfTI whose array runs i -> superior, j -> anterior, k -> right (3 mm axial
    slices): the widget's 'axial' and 'auto' both slice along the superior axis."""
    image, _ = W.phantom((6, 32, 40))  # (i, j, k) as nibabel stores the data
    affine = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [3, 0, 0, 0], [0, 0, 0, 1]], float)
    path = tmp_path / "sagittal_first.nii.gz"
    nib.Nifti1Image(image, affine).to_filename(path)
    viewer = make_napari_viewer()
    (layer,) = viewer.open(path, plugin="napari-unet")
    widget = W.open_widget(viewer, W.INFERENCE)
    W.use_model_file(widget, W.tiny_model_file(tmp_path))
    widget.device.value, widget.plane.value = "cpu", choice
    W.click(qtbot, widget.run_button)
    assert W.wait_until_idle(qtbot, widget) is JobState.DONE, widget.runner.error
    volume = layer.metadata["napari_unet_volume"]
    axial = plane_axis("axial", volume.direction)
    assert volume.spacing[axial] == pytest.approx(3.0)
    assert resolve_axis("auto", volume.spacing, 0) == axial
    result = widget.last_layers[0].metadata["napari_unet_result"]
    assert result["axis"] == axial and "axial slices" in widget.status.value

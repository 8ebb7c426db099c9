"""Continuing from labels saved earlier, when the scan is gantry-tilted: its NIfTI labels
were saved resampled onto an orthogonal grid (ITK refuses shear), and come back onto the
scan's own voxels exactly (run under Xvfb)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet._napari.continued import continue_problem, start_labels
from napari_unet.io import write_volume
from napari_unet.model.tasks import make_task
from support import geometry_cases as cases

pytestmark = pytest.mark.gui

PLUGIN = "napari-unet"


def test_labels_saved_from_a_tilted_scan_continue_on_its_voxels(make_napari_viewer, tmp_path):
    folder = cases.tilted_ct(tmp_path / "ct", shape=(6, 28, 30))
    viewer = make_napari_viewer()
    [scan] = viewer.open(str(folder), plugin=PLUGIN)
    volume = scan.metadata["napari_unet_volume"]
    labels = cases.ball(cases.dicom_voxel_centres(folder))
    labels[2, 3:9, 4:12] = 2  # an edit off the ball, with a label of its own
    with pytest.warns(UserWarning, match="resampled"):
        saved = write_volume(labels, tmp_path / "saved.nii.gz", like=volume,
                             class_names=["background", "ball", "edit"])
    [earlier] = viewer.open(str(saved), plugin=PLUGIN)
    assert earlier.data.shape != labels.shape  # on the orthogonal grid
    task = make_task("segment", n_classes=3)
    assert continue_problem(earlier, scan) is None
    np.testing.assert_array_equal(start_labels(earlier, scan, task), labels)

    earlier.translate = np.add(earlier.translate, (0.0, 5.0, 0.0))  # moved: not this scan's
    assert "do not lie on the voxels of" in continue_problem(earlier, scan)


def test_labels_saved_on_even_slices_continue_on_the_scans_uneven_ones(make_napari_viewer,
                                                                       tmp_path):
    """A CT in zones of 1 and 2.5 mm slices: its NIfTI labels are saved on even 1 mm
    slices (the mean spacing misplaced them) and come back onto its own slices exactly."""
    folder = cases.zoned_ct(tmp_path / "ct", steps=(1.0,) * 4 + (2.5,) * 3, shape=(24, 26))
    viewer = make_napari_viewer()
    [scan] = viewer.open(str(folder), plugin=PLUGIN)
    volume = scan.metadata["napari_unet_volume"]
    labels = cases.ball(cases.dicom_voxel_centres(folder))
    labels[5, 3:9, 4:12] = 2  # an edit on a slice of the 2.5 mm zone
    with pytest.warns(UserWarning, match="evenly spaced"):
        saved = write_volume(labels, tmp_path / "saved.nii.gz", like=volume,
                             class_names=["background", "ball", "edit"])
    [earlier] = viewer.open(str(saved), plugin=PLUGIN)
    assert earlier.data.shape[0] == 13 != labels.shape[0]  # 11.5 mm: 12 steps, none over 1 mm
    task = make_task("segment", n_classes=3)
    assert continue_problem(earlier, scan) is None
    np.testing.assert_array_equal(start_labels(earlier, scan, task), labels)

    earlier.translate = np.add(earlier.translate, (0.0, 5.0, 0.0))  # moved: not this scan's
    assert "do not lie on the voxels of" in continue_problem(earlier, scan)

"""Radiological display in a real viewer: which anatomical corner lands at the screen's top
left, for NIfTI in RAS, LPS, oblique and sagittal orientations and a DICOM series.

Each phantom voxel carries the side of the scan it lies on (``support.phantoms``); the
test renders the canvas, reads the four quadrants of the picture and decodes them.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from napari_unet.io import Volume, geometry, read_volume
from support.dicom_factory import AXIAL, write_dicom_series
from support.phantoms import (
    ANTERIOR,
    RIGHT,
    SUPERIOR,
    decode,
    phantom_values,
    scan_picture,
    write_phantom_nifti,
)

pytestmark = pytest.mark.gui

PLUGIN = "napari-unet"
S, P, L = "I→S", "A→P", "R→L"
# view: (axis not shown, vertical axis, horizontal axis) and what the four quadrants of
# the picture must hold, as (bits checked, top-left, top-right, bottom-left, bottom-right)
VIEWS = {
    "axial": ((S, P, L), RIGHT | ANTERIOR, (3, 1, 2, 0)),      # anterior up, right on left
    "coronal": ((P, S, L), SUPERIOR | RIGHT, (6, 4, 2, 0)),    # superior up, right on left
    "sagittal": ((L, S, P), SUPERIOR | ANTERIOR, (5, 4, 1, 0)),  # superior up, anterior left
}


def show(viewer, layer, view: str) -> None:
    """Roll/transpose the dims the way a user does to reach ``view`` (through the middle)."""
    axes = [list(layer.axis_labels).index(label) for label in VIEWS[view][0]]
    viewer.dims.order = tuple(axes)
    centre = np.asarray(layer.extent.world).mean(axis=0)
    viewer.dims.set_point(axes[0], centre[axes[0]])
    viewer.reset_view()


def quadrants(viewer) -> list[int]:
    """Codes at the centres of the four quadrants of the rendered scan (TL, TR, BL, BR)."""
    picture = scan_picture(viewer)  # the scan alone, without the letters at the edges
    rows, cols = np.nonzero(picture > 15)
    top, bottom, left, right = rows.min(), rows.max(), cols.min(), cols.max()
    out = []
    for fy in (0.25, 0.75):
        for fx in (0.25, 0.75):
            y, x = int(top + fy * (bottom - top)), int(left + fx * (right - left))
            out.append(decode(np.median(picture[y - 1:y + 2, x - 1:x + 2])))
    return out


def assert_radiological(viewer, layer, views=VIEWS) -> None:
    layer.colormap, layer.contrast_limits, layer.interpolation2d = "gray", (0, 255), "nearest"
    for view in views:
        show(viewer, layer, view)
        _, bits, expected = VIEWS[view]
        seen = [code & bits for code in quadrants(viewer)]
        wanted = [code & bits for code in expected]
        assert seen == wanted, f"{layer.name} {view}: quadrants {seen}, expected {wanted}"


@pytest.mark.parametrize("orientation", ["ras", "lps", "oblique", "sagittal"])
def test_nifti_phantoms_show_radiologically(make_napari_viewer, tmp_path, orientation):
    path = write_phantom_nifti(tmp_path / f"{orientation}.nii.gz", orientation)
    viewer = make_napari_viewer(show=True)
    [layer] = viewer.open(str(path), plugin=PLUGIN)
    assert sorted(layer.axis_labels) == sorted((S, P, L))
    assert viewer.dims.axis_labels == layer.axis_labels
    assert [str(u) for u in layer.units] == ["millimeter"] * 3
    if orientation == "sagittal":  # opens in its acquisition plane, superior up
        assert viewer.dims.axis_labels[viewer.dims.displayed[0]] == S
        assert viewer.camera.orientation2d[0] == "up"
    assert_radiological(viewer, layer)


def test_dicom_phantom_shows_radiologically(make_napari_viewer, tmp_path):
    spacing, origin = (2.0, 0.9, 0.8), (-12.0, -10.0, 30.0)
    shape = (12, 22, 26)
    affine = Volume(np.zeros(shape), spacing, origin, AXIAL).affine
    write_dicom_series(phantom_values(shape, affine), tmp_path / "ct", spacing=spacing,
                       origin=origin, direction=AXIAL, modality="CT")
    viewer = make_napari_viewer(show=True)
    [layer] = viewer.open(str(tmp_path / "ct"), plugin=PLUGIN)
    assert_radiological(viewer, layer)


def test_camera_follows_rolls_and_leaves_other_layers_alone(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer(show=True)
    [layer] = viewer.open(str(write_phantom_nifti(tmp_path / "a.nii.gz", "ras")),
                          plugin=PLUGIN)
    assert viewer.camera.orientation2d == ("down", "right")
    viewer.dims.roll()  # napari's own "roll dimensions" button
    vertical = viewer.dims.axis_labels[viewer.dims.displayed[0]]
    assert viewer.camera.orientation2d[0] == ("up" if vertical == S else "down")
    viewer.dims.transpose()
    vertical = viewer.dims.axis_labels[viewer.dims.displayed[0]]
    assert viewer.camera.orientation2d[0] == ("up" if vertical == S else "down")
    viewer.dims.order = (0, 1, 2)
    assert viewer.camera.orientation2d == ("down", "right")

    viewer.layers.remove(layer)  # a plain 3D image: napari's labels, the user's camera
    viewer.add_image(np.zeros((4, 5, 6)))
    viewer.dims.axis_labels = ("0", "1", "2")
    viewer.camera.orientation2d = ("up", "left")
    viewer.dims.roll()
    assert viewer.camera.orientation2d == ("up", "left")


def status_numbers(layer, world) -> np.ndarray:
    coords = layer.get_status(np.asarray(world), world=True)["coords"]
    return np.array([float(v) for v in re.findall(r"-?\d+(?:\.\d+)?", coords)][-3:])


@pytest.mark.parametrize("orientation", ["ras", "oblique", "sagittal"])
def test_mouse_over_coordinates_are_lps_millimetres(make_napari_viewer, tmp_path, orientation):
    """The status bar shows each voxel's LPS position, axis by axis as labelled."""
    path = write_phantom_nifti(tmp_path / "p.nii.gz", orientation)
    volume = read_volume(path)
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(path), plugin=PLUGIN)
    pick = [geometry.LPS_AXIS_LABELS.index(label) for label in layer.axis_labels]
    for index in [(0, 0, 0), (15, 19, 23), (3, 11, 7)]:
        lps = (volume.affine @ [*index, 1])[:3]
        world = np.asarray(layer.data_to_world(index), float)
        np.testing.assert_allclose(world, lps[pick], atol=1e-4)
        np.testing.assert_allclose(status_numbers(layer, world), lps[pick], atol=0.06)

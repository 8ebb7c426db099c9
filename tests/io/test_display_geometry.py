"""The display geometry of napari layers (io.geometry's napari part): LPS millimetres per
axis, anatomical labels, flips as negative scales, and nothing lost on the way back."""

from __future__ import annotations

import numpy as np
import pytest
from napari.utils.transforms import CompositeAffine

from napari_unet.io import geometry
from napari_unet.io.volume import Volume
from support.phantoms import NIFTI_AFFINES, rotation_x


def data_to_world(kw: dict) -> np.ndarray:
    m = CompositeAffine(scale=kw["scale"], translate=kw["translate"], ndim=3).affine_matrix
    return np.asarray(kw.get("affine", np.eye(4))) @ m


@pytest.mark.parametrize("orientation", sorted(NIFTI_AFFINES))
def test_layer_geometry_is_lps_per_axis_and_invertible(orientation):
    affine = geometry.volume_affine_from_nifti(NIFTI_AFFINES[orientation])
    spacing, origin, direction = geometry.geometry_from_affine(affine)
    kw = geometry.layer_geometry(spacing, origin, direction)
    w = geometry.anatomical_axes(direction)
    np.testing.assert_allclose(data_to_world(kw)[:3], w @ affine[:3], atol=1e-9)
    assert kw["units"] == ("mm",) * 3
    assert geometry.axes_from_labels(kw["axis_labels"]).tolist() == w.tolist()
    back = geometry.geometry_from_layer(data_to_world(kw), w)
    np.testing.assert_allclose(Volume(np.zeros((1, 1, 1)), *back).affine, affine, atol=1e-9)
    rotation = np.asarray(kw.get("affine", np.eye(4)))[:3, :3]
    assert np.all(np.diag(rotation) > 0.9)  # flips are in the scale, not the affine


def test_expected_labels_and_flips():
    ras = geometry.geometry_from_affine(geometry.volume_affine_from_nifti(NIFTI_AFFINES["ras"]))
    kw = geometry.layer_geometry(*ras)
    assert kw["axis_labels"] == ("I→S", "A→P", "R→L")
    assert np.sign(kw["scale"]).tolist() == [1, -1, -1]  # rows go anterior, columns right
    assert "affine" not in kw
    sag = geometry.geometry_from_affine(
        geometry.volume_affine_from_nifti(NIFTI_AFFINES["sagittal"]))
    assert geometry.layer_geometry(*sag)["axis_labels"] == ("R→L", "I→S", "A→P")


def test_axes_are_paired_as_a_whole_for_45_degree_scans():
    direction = rotation_x(45) @ np.eye(3)[:, ::-1]
    w = geometry.anatomical_axes(direction)
    assert sorted(np.argmax(w, axis=1)) == [0, 1, 2]
    assert geometry.axes_from_labels(("I→S", "I→S", "R→L")) is None
    assert geometry.axes_from_labels(("0", "1", "2")) is None

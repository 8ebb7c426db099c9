"""The patient's sides at the canvas edges and the slice position in mm, in a real viewer.

The letters are checked against the picture: each phantom voxel carries the side of the
scan it lies on (``support.phantoms``, from its true LPS position), so the voxels drawn
just inside each edge say which letter belongs there. The slice position is checked
against nibabel's affine.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from napari_unet._napari.canvas_orientation import KEY, edge_letters, slice_position
from support.phantoms import (
    ANTERIOR,
    RIGHT,
    SUPERIOR,
    decode,
    scan_picture,
    write_phantom_nifti,
)

pytestmark = pytest.mark.gui

PLUGIN = "napari-unet"
S, P, L = "I→S", "A→P", "R→L"
VIEWS = {"axial": (S, P, L), "coronal": (P, S, L), "sagittal": (L, S, P)}
BIT = {"A": ANTERIOR, "P": ANTERIOR, "R": RIGHT, "L": RIGHT, "S": SUPERIOR, "I": SUPERIOR}
EDGES = ("top", "bottom", "left", "right")


def show(viewer, layer, view: str) -> None:
    """Roll/transpose the dims the way a user does to reach ``view`` (through the middle)."""
    axes = [list(layer.axis_labels).index(label) for label in VIEWS[view]]
    viewer.dims.order = tuple(axes)
    centre = np.asarray(layer.extent.world).mean(axis=0)
    viewer.dims.set_point(axes[0], centre[axes[0]])
    viewer.reset_view()


def overlay(viewer, name: str):
    return viewer.canvas.overlays[KEY.format(name)]


def letters_on_canvas(viewer) -> dict[str, str]:
    out = {}
    for edge in EDGES:
        ov = overlay(viewer, edge)
        assert ov.visible, edge
        out[edge] = ov.text
    return out


def codes_at_edges(viewer) -> dict[str, int]:
    """Phantom codes drawn just inside the middle of each edge of the picture."""
    picture = scan_picture(viewer)  # the scan alone: the letters are bright too
    rows, cols = np.nonzero(picture > 15)
    cy, cx = (rows.min() + rows.max()) // 2, (cols.min() + cols.max()) // 2
    across, down = np.flatnonzero(picture[cy] > 15), np.flatnonzero(picture[:, cx] > 15)
    inward = 4  # px inside the first voxel drawn from the edge along the middle line
    at = {"top": (down[0] + inward, cx), "bottom": (down[-1] - inward, cx),
          "left": (cy, across[0] + inward), "right": (cy, across[-1] - inward)}
    return {e: decode(np.median(picture[y - 1:y + 2, x - 1:x + 2])) for e, (y, x) in at.items()}


def assert_letters_match_picture(viewer, where: str) -> None:
    letters, codes = letters_on_canvas(viewer), codes_at_edges(viewer)
    for edge in EDGES:
        letter, code = letters[edge], codes[edge]
        assert bool(code & BIT[letter]) == (letter in "ARS"), (
            f"{where}: {letter!r} at the {edge} edge over voxels coded {code}")
    assert {letters["top"], letters["bottom"]} in ({"A", "P"}, {"S", "I"}, {"R", "L"})
    assert {letters["left"], letters["right"]} in ({"A", "P"}, {"S", "I"}, {"R", "L"})


@pytest.mark.slow
@pytest.mark.parametrize("orientation", ["ras", "lps", "oblique", "sagittal"])
def test_letters_at_the_edges_match_the_anatomy_in_every_plane_and_flip(
        make_napari_viewer, tmp_path, orientation):
    path = write_phantom_nifti(tmp_path / f"{orientation}.nii.gz", orientation)
    viewer = make_napari_viewer(show=True)
    [layer] = viewer.open(str(path), plugin=PLUGIN)
    layer.colormap, layer.contrast_limits, layer.interpolation2d = "gray", (0, 255), "nearest"
    for view in VIEWS:
        show(viewer, layer, view)
        assert_letters_match_picture(viewer, f"{orientation} {view}")
        assert overlay(viewer, "slice").text.startswith(f"{view} ")
        vertical, horizontal = (str(o.value) for o in viewer.camera.orientation2d)
        flipped = ("up" if vertical == "down" else "down",
                   "left" if horizontal == "right" else "right")
        viewer.camera.orientation2d = flipped  # the user flips the view both ways
        assert_letters_match_picture(viewer, f"{orientation} {view} flipped")
    viewer.dims.ndisplay = 3  # no edges in 3D: no letters
    assert not any(overlay(viewer, e).visible for e in (*EDGES, "slice"))


def test_slice_position_in_mm_agrees_with_nibabel(make_napari_viewer, tmp_path):
    path = write_phantom_nifti(tmp_path / "ras.nii.gz", "ras")
    affine = nib.load(path).affine  # voxel (i, j, k) to RAS; LPS z = RAS z
    viewer = make_napari_viewer(show=True)
    [layer] = viewer.open(str(path), plugin=PLUGIN)
    axis = list(layer.axis_labels).index(S)
    assert viewer.dims.not_displayed == (axis,)  # opens axial
    for k in (0, 3, 6, 11, 15):  # slices-first: array axis 0 is nibabel's k
        world = np.asarray(layer.data_to_world([k, 0, 0]))
        viewer.dims.set_point(axis, float(world[axis]))
        z = float(affine[2] @ [0, 0, k, 1])
        side = "S" if z >= 0 else "I"
        assert overlay(viewer, "slice").text == f"axial {side} {abs(z):.1f} mm", k
    viewer.layers.clear()  # nothing shown: nothing said
    assert not overlay(viewer, "slice").visible and not overlay(viewer, "top").visible


def test_words_for_views_without_a_viewer():
    assert edge_letters((S, P, L), (1, 2), ("down", "right")) == {
        "top": "A", "bottom": "P", "left": "R", "right": "L"}
    assert edge_letters((P, S, L), (1, 2), ("up", "left")) == {
        "top": "S", "bottom": "I", "left": "L", "right": "R"}
    assert edge_letters(("0", "1", "2"), (1, 2), ("down", "right")) is None
    assert slice_position((S, P, L), (0,), (-12.25, 0, 0)) == "axial I 12.2 mm"
    assert slice_position((L, S, P), (0,), (3.0, 0, 0)) == "sagittal L 3.0 mm"
    assert slice_position(("t", S, P, L), (0, 1), (4, 0.0, 0, 0)) == "axial S 0.0 mm"

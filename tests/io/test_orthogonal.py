"""The orthogonal grid results of sheared scans are written on, and the resampling onto
it, against scipy's ``map_coordinates`` fed with coordinates computed here from the two
affines."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from napari_unet.errors import VolumeWriteError
from napari_unet.io.geometry import SHEAR_NOISE_VOXELS, stacking_from_positions
from napari_unet.io.orthogonal import along_slices, even_stack, output_grid, resample

SHAPE = (7, 19, 23)


def affine(spacing=(2.5, 0.8, 0.7), tilt_deg=15.0, in_plane_shear=0.0, roll_deg=20.0):
    """Slices-first index -> LPS: rows and columns rotated by ``roll_deg``, the slice axis
    tilted by ``tilt_deg`` towards the rows (gantry tilt), columns sheared towards the
    rows by ``in_plane_shear``."""
    r = np.deg2rad(roll_deg)
    rot = np.array([[1, 0, 0], [0, np.cos(r), -np.sin(r)], [0, np.sin(r), np.cos(r)]])
    normal, rows, cols = rot[:, 2], rot[:, 1], rot[:, 0]
    t = np.deg2rad(tilt_deg)
    out = np.eye(4)
    out[:3, 0] = spacing[0] * (np.cos(t) * normal + np.sin(t) * rows) / np.cos(t)
    out[:3, 1] = spacing[1] * rows
    out[:3, 2] = spacing[2] * (cols + in_plane_shear * rows)
    out[:3, 3] = (-12.0, 30.5, 7.25)
    return out


def reference(data: np.ndarray, source: np.ndarray, grid, order: int, fill: float):
    """Each grid voxel's value by scipy, at its centre's data index (inverse affine)."""
    index = np.stack(np.meshgrid(*[np.arange(n) for n in grid.shape], indexing="ij"), -1)
    world = index.reshape(-1, 3) @ grid.affine[:3, :3].T + grid.affine[:3, 3]
    at = np.linalg.solve(source[:3, :3], (world - source[:3, 3]).T)
    np.testing.assert_allclose(at[0], np.rint(at[0]), atol=1e-6)  # on the slice planes
    values = ndimage.map_coordinates(data.astype(float), at, order=order, mode="nearest")
    size = np.asarray(data.shape, float)[:, None]
    inside = np.all((at[1:] >= -0.5 - 1e-6) & (at[1:] <= size[1:] - 0.5 + 1e-6), axis=0)
    return np.where(inside, values, fill).reshape(grid.shape)


@pytest.mark.parametrize("shear", [0.0, 0.3], ids=["tilt", "tilt+in-plane-shear"])
def test_resampling_matches_scipy_on_the_scans_slice_planes(shear):
    source = affine(in_plane_shear=shear)
    data = np.random.default_rng(0).normal(size=SHAPE).astype(np.float32)
    grid = output_grid(source, SHAPE)
    assert grid.resampled and grid.shape[0] == SHAPE[0]
    lin = grid.affine[:3, :3]
    gram = lin.T @ lin
    np.testing.assert_allclose(gram, np.diag(np.diag(gram)), atol=1e-9)  # orthogonal
    linear = resample(data, source, grid, nearest=False)
    np.testing.assert_allclose(linear, reference(data, source, grid, 1, data.min()), atol=1e-5)
    labels = (data > 0).astype(np.uint8) + (data > 1)
    nearest = resample(labels, source, grid, nearest=True)
    expected = reference(labels, source, grid, 0, 0)
    assert (nearest != expected).sum() <= 2  # a half-way tie may round either way
    assert set(np.unique(nearest)) <= {0, 1, 2}
    # every voxel of the scan is held: each label keeps (nearly) its share
    for value in (1, 2):
        count = (labels == value).sum()
        assert abs((nearest == value).sum() - count) <= 0.1 * count


def test_channels_resample_each_and_integers_round():
    source = affine()
    grid = output_grid(source, SHAPE)
    data = np.random.default_rng(1).integers(-1000, 1000, (*SHAPE, 2)).astype(np.int16)
    out = resample(data, source, grid, nearest=False)
    assert out.dtype == np.int16 and out.shape == (*grid.shape, 2)
    for c in range(2):
        expected = reference(data[..., c], source, grid, 1, data[..., c].min())
        assert np.abs(out[..., c] - expected).max() <= 0.5 + 1e-6


@pytest.mark.parametrize(("fraction", "resampled"), [(0.9, False), (1.1, True)])
def test_shear_under_a_tenth_of_a_voxel_is_written_on_the_scans_own_voxels(fraction,
                                                                          resampled):
    """Making the axes orthogonal about the centre may move a voxel by up to a tenth of
    the smallest spacing; beyond it the results are resampled."""
    spacing = (2.5, 0.8, 0.7)
    moved = fraction * SHEAR_NOISE_VOXELS * min(spacing)
    # the end slices move furthest: (n - 1) / 2 steps aside from the centre
    step_aside = moved / ((SHAPE[0] - 1) / 2)
    tilt = np.degrees(np.arctan(step_aside / spacing[0]))
    source = affine(spacing, tilt_deg=tilt)
    grid = output_grid(source, SHAPE)
    assert grid.resampled is resampled
    assert grid.moved_mm == pytest.approx(moved, rel=1e-6)
    if not resampled:
        assert grid.shape == SHAPE
        centre = np.r_[(np.asarray(SHAPE) - 1) / 2, 1]
        np.testing.assert_allclose(grid.affine @ centre, source @ centre, atol=1e-9)


def test_orthogonal_grids_are_kept_exactly():
    source = affine(tilt_deg=0.0)
    grid = output_grid(source, SHAPE)
    assert not grid.resampled and grid.moved_mm == 0
    np.testing.assert_array_equal(grid.affine, source)


def test_degenerate_axes_are_refused():
    source = affine()
    source[:3, 0] = source[:3, 1]
    with pytest.raises(VolumeWriteError, match="degenerate"):
        output_grid(source, SHAPE)


# --- reading: rounding-level shear in DICOM positions ----------------------------------------

AXIAL = np.eye(3)[:, ::-1]  # array axes (z, y, x) along LPS (S, P, L)


def positions(n=20, step=(0.0, 0.0, 3.0), start=(-100.3, 20.1, 40.0)):
    return np.asarray(start) + np.arange(n)[:, None] * np.asarray(step)


@pytest.mark.parametrize(("rounding_step", "straight"), [(0.1, True), (0.001, False)])
def test_positions_off_a_straight_stack_by_their_rounding_read_straight(rounding_step,
                                                                        straight):
    """0.3 mm aside over the stack is what rounding to 0.1 mm can do (sqrt(3) x 0.1 =
    0.17 mm either way of the mean), not what rounding to 0.001 mm can."""
    pos = positions()
    pos[::2, 1] += 0.15  # every other slice 0.15 mm aside: (below the mean by 0.075)
    spacing, origin, direction, tilt = stacking_from_positions(
        (3.0, 0.5, 0.5), tuple(pos[0]), AXIAL, pos, rounding_step)
    if straight:
        assert tilt is None
        np.testing.assert_allclose(direction, AXIAL, atol=1e-12)
        np.testing.assert_allclose(origin, pos[0] + [0, -0.075, 0], atol=1e-9)
        assert spacing[0] == pytest.approx(3.0)
    else:
        assert tilt is not None


def test_a_tilt_far_below_a_voxel_reads_straight_a_real_one_does_not():
    pos = positions(n=2, step=(0.0, 0.0157, 3.0))  # nibabel's Siemens pair: 0.3 degrees
    assert stacking_from_positions((3.0, 1.8, 1.8), tuple(pos[0]), AXIAL, pos, 1e-6)[3] is None
    pos = positions(n=40, step=(0.0, 0.0157, 3.0))  # 40 slices: 0.3 mm aside at the ends
    tilt = stacking_from_positions((3.0, 1.8, 1.8), tuple(pos[0]), AXIAL, pos, 1e-6)[3]
    assert tilt == pytest.approx(0.3, abs=0.01)


def test_uneven_slices_go_onto_even_ones_through_their_own_places():
    """Slices at 0, 1, 2, 4.5 and 7 mm (mean spacing 1.75): even slices every 1 mm (the
    smallest gap), the first and last where they were; by hand, new slice j lies at
    fractional scan slice [0, 1, 2, 2.4, 2.8, 3.2, 3.6, 4]."""
    source = affine(spacing=(1.75, 0.8, 0.7), tilt_deg=0.0)
    out, shape, at = even_stack(source, (5, 3, 4), [0.0, 1.0, 2.0, 4.5, 7.0])
    assert shape == (8, 3, 4)
    np.testing.assert_allclose(at, [0, 1, 2, 2.4, 2.8, 3.2, 3.6, 4])
    unit = source[:3, 0] / 1.75
    np.testing.assert_allclose(out[:3, 0], unit)  # 1 mm steps along the same axis
    np.testing.assert_allclose(out[:3, 1:], source[:3, 1:])
    data = np.arange(5, dtype=np.int16)[:, None, None] * np.ones((5, 3, 4), np.int16) * 10
    np.testing.assert_array_equal(along_slices(data, at, nearest=True)[:, 0, 0],
                                  [0, 10, 20, 20, 30, 30, 40, 40])
    np.testing.assert_array_equal(along_slices(data, at, nearest=False)[:, 0, 0],
                                  [0, 10, 20, 24, 28, 32, 36, 40])
    channels = np.stack([data, -data], axis=-1).astype(np.float32)
    assert along_slices(channels, at, nearest=False)[3, 0, 0].tolist() == [24.0, -24.0]

"""NIfTI outputs on an orthogonal grid, the only kind ITK reads.

ITK (so ITK-SNAP, 3D Slicer, ANTs, TorchIO, SimpleITK) refuses a NIfTI file whose voxel
axes are not orthogonal ("ITK only supports orthonormal direction cosines"), and with
``ITK_NIFTI_SFORM_PERMISSIVE`` it drops the shear and puts voxels elsewhere than nibabel
does. A scan whose voxel axes are sheared (slices stacked obliquely: gantry tilt; a
sheared sform) therefore has its results written on an orthogonal grid (``output_grid``):

- **noise** (making the axes orthogonal, about the volume's centre, moves no voxel centre
  by more than ``geometry.shear_noise_mm``, a tenth of a voxel): the same voxels are
  written with the orthogonal affine;
- **real shear**: resampled (``resample``) onto an orthogonal grid whose slices are the
  scan's own slice planes, so each slice only moves within its plane, as dcm2niix's
  ``_Tilt`` files: nearest neighbour for labels (a round trip is exact), linear for
  images. The grid grows to hold every voxel of the scan; new voxels get the background
  (0 for labels, the lowest value for images).

The orthogonal axes come from the scan's by Gram-Schmidt, fastest first (columns, rows,
then the slice axis), so the in-plane axes keep their directions and the slice axis
becomes the planes' normal, at the spacing between the planes.

A DICOM series whose slices are unevenly spaced (zones of different spacing, slices
missing at no whole step) cannot be one NIfTI grid either: at the mean spacing its
slices would sit millimetres from their ImagePositionPatient. Its results are first put
on evenly spaced slices at the scan's own places (``even_stack``, ``along_slices``), as
dcm2niix's ``_Eq`` files: the nearest slice for labels, linear between the two around
it for images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import VolumeWriteError
from ..limits import check_allocation
from .geometry import shear_noise_mm

# axes this close to orthogonal are written as they are (float32 headers hold no more)
ORTHOGONAL_TOLERANCE = 1e-6


@dataclass(frozen=True)
class OutputGrid:
    """Where a result is written: ``affine`` (array index to LPS mm, orthogonal axes) and
    ``shape``; ``resampled`` when its voxels are not the scan's."""

    affine: np.ndarray
    shape: tuple[int, ...]
    resampled: bool = False
    shear_degrees: float = 0.0  # the largest angle an axis of the scan was turned by
    moved_mm: float = 0.0  # how far writing the scan's voxels orthogonal would move one
    even_slices: bool = False  # the scan's uneven slices put on even ones (``even_stack``)

    def describe(self) -> dict:
        """The report's ``resampled`` note."""
        spacing = np.linalg.norm(self.affine[:3, :3], axis=0)
        return {"shear_degrees": round(self.shear_degrees, 2),
                "even_slices": self.even_slices,
                "shape": [int(v) for v in self.shape],
                "spacing": [round(float(v), 6) for v in spacing],
                "interpolation": {"labels": "nearest", "images": "linear"}}


def orthogonal_axes(lin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(unit axes U, spacings s) with ``U`` orthonormal: Gram-Schmidt on the columns of
    ``lin`` (array axes 0, 1, 2), fastest axis first; ``s[a]`` is column a's length along
    ``U[:, a]`` (for the slice axis: the spacing between the slice planes)."""
    lin = np.asarray(lin, float)
    units = np.zeros((3, 3))
    scale = np.abs(lin).max() if np.all(np.isfinite(lin)) else 0.0
    for a in (2, 1, 0):
        v = lin[:, a] - sum(np.dot(lin[:, a], units[:, b]) * units[:, b] for b in range(a + 1, 3))
        norm = np.linalg.norm(v)
        if not norm > 1e-9 * scale:
            raise VolumeWriteError("the scan's voxel axes are degenerate or not finite "
                                   f"({np.round(lin, 4).tolist()}); no grid can hold them")
        units[:, a] = v / norm
    spacing = np.einsum("ia,ia->a", lin, units)
    return units, spacing


def output_grid(affine: np.ndarray, shape) -> OutputGrid:
    """The orthogonal grid a result on the grid (``affine``, ``shape``) is written on
    (see the module docstring)."""
    affine = np.asarray(affine, float)
    shape = tuple(int(n) for n in shape[:3])
    lin, origin = affine[:3, :3], affine[:3, 3]
    units, spacing = orthogonal_axes(lin)
    ortho = units * spacing[None, :]
    degrees = _largest_turn(lin, units)
    if np.abs(ortho - lin).max() <= ORTHOGONAL_TOLERANCE * np.abs(lin).max():
        return OutputGrid(affine, shape)
    centre = (np.asarray(shape, float) - 1) / 2
    corners = np.array([[c * (n - 1) for c, n in zip(bits, shape, strict=True)]
                        for bits in np.ndindex(2, 2, 2)], float)
    moved = float(np.linalg.norm((lin - ortho) @ (corners - centre).T, axis=0).max())
    if moved <= shear_noise_mm(np.linalg.norm(lin, axis=0)):
        out = np.eye(4)
        out[:3, :3], out[:3, 3] = ortho, origin + (lin - ortho) @ centre
        return OutputGrid(out, shape, False, degrees, moved)
    # the scan's voxels in grid indices: the slice index stays, rows and columns shift
    to_grid = np.linalg.solve(ortho, lin)
    box = to_grid @ corners.T
    low = np.floor(box.min(axis=1) + 1e-6)
    high = np.ceil(box.max(axis=1) - 1e-6)
    low[0], high[0] = 0, shape[0] - 1
    out = np.eye(4)
    out[:3, :3], out[:3, 3] = ortho, origin + ortho @ low
    grid_shape = tuple(int(v) for v in high - low + 1)
    return OutputGrid(out, grid_shape, True, degrees, moved)


def _largest_turn(lin: np.ndarray, units: np.ndarray) -> float:
    cosines = np.einsum("ia,ia->a", lin, units) / np.linalg.norm(lin, axis=0)
    return float(np.degrees(np.arccos(np.clip(cosines, -1.0, 1.0))).max())


def resample(data: np.ndarray, affine: np.ndarray, grid: OutputGrid, nearest: bool,
             fill=None, label: str = "result") -> np.ndarray:
    """``data`` (slices-first on the grid ``affine``, optional trailing channels) on
    ``grid``: slice by slice, since each grid slice is a slice plane of the data.

    ``nearest`` for labels (values kept, never mixed), else linear (integer images are
    rounded back to their type). Grid voxels off the data's pixels get ``fill``
    (default: 0 for labels, each channel's lowest value for images).
    """
    data = np.asarray(data)
    channels = data.shape[3:]
    out_shape = (*grid.shape, *channels)
    check_allocation(math.prod(out_shape) * data.dtype.itemsize,
                     f"{label}: resampling onto an orthogonal grid {out_shape}", VolumeWriteError)
    out = np.empty(out_shape, data.dtype).reshape(*grid.shape, -1)
    flat = data.reshape(*data.shape[:3], -1)
    if fill is None:
        fill = [0] * flat.shape[3] if nearest else flat.min(axis=(0, 1, 2))
    fills = np.broadcast_to(np.asarray(fill, float), (flat.shape[3],))
    # grid index -> data index; each grid slice is the data slice of the same index
    to_data = np.linalg.solve(np.asarray(affine, float), grid.affine)
    in_plane, shift = to_data[1:3, 1:3], to_data[1:3, 3]
    plane = _shifted if np.allclose(in_plane, np.eye(2), atol=1e-9) else _mapped
    for k in range(grid.shape[0]):
        offset = shift + to_data[1:3, 0] * k
        for c in range(flat.shape[3]):
            values = plane(flat[k, :, :, c], in_plane, offset, grid.shape[1:], nearest,
                           fills[c])
            if data.dtype.kind in "iub":
                values = np.rint(values)
            out[k, :, :, c] = values.astype(data.dtype)
    return out.reshape(out_shape)


def _shifted(plane: np.ndarray, _in_plane, offset, shape, nearest: bool, fill) -> np.ndarray:
    """``plane`` at (row + offset[0], column + offset[1]) for every grid (row, column):
    a slice that only moved within its plane (gantry tilt), one axis at a time."""
    at = [np.arange(n) + o for n, o in zip(shape, offset, strict=True)]
    inside = [(a >= -0.5 - 1e-6) & (a <= n - 0.5 + 1e-6) for a, n in zip(at, plane.shape,
                                                                       strict=True)]
    out = np.full(shape, fill, np.float64)
    if not (inside[0].any() and inside[1].any()):
        return out
    at = [a[i] for a, i in zip(at, inside, strict=True)]
    box = np.ix_(*inside)
    if nearest:
        index = [np.clip(np.rint(a), 0, n - 1).astype(int) for a, n in zip(at, plane.shape,
                                                                          strict=True)]
        out[box] = plane[np.ix_(*index)]
        return out
    low = [np.floor(a) for a in at]
    frac = [a - lo for a, lo in zip(at, low, strict=True)]
    # neighbours past the edge repeat it (the outer half pixel takes the edge's value)
    lo = [np.clip(lo, 0, n - 1).astype(int) for lo, n in zip(low, plane.shape, strict=True)]
    hi = [np.clip(lo + 1, 0, n - 1).astype(int) for lo, n in zip(low, plane.shape, strict=True)]
    p = plane.astype(np.float64)
    fr, fc = frac[0][:, None], frac[1][None, :]
    top = p[np.ix_(lo[0], lo[1])] * (1 - fc) + p[np.ix_(lo[0], hi[1])] * fc
    bottom = p[np.ix_(hi[0], lo[1])] * (1 - fc) + p[np.ix_(hi[0], hi[1])] * fc
    out[box] = top * (1 - fr) + bottom * fr
    return out


def _mapped(plane: np.ndarray, in_plane, offset, shape, nearest: bool, fill) -> np.ndarray:
    """``plane`` at ``in_plane @ (row, column) + offset``: axes sheared within the plane."""
    from scipy import ndimage

    rows, cols = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    at = in_plane @ np.stack([rows.ravel(), cols.ravel()]) + np.asarray(offset)[:, None]
    size = np.asarray(plane.shape, float)[:, None]
    inside = np.all((at >= -0.5 - 1e-6) & (at <= size - 0.5 + 1e-6), axis=0)
    values = ndimage.map_coordinates(plane.astype(np.float64), at, order=0 if nearest else 1,
                                     mode="nearest")
    return np.where(inside, values, fill).reshape(shape)


# --- unevenly spaced slices ------------------------------------------------------------------


def even_stack(affine: np.ndarray, shape, along) -> tuple[np.ndarray, tuple, np.ndarray]:
    """(affine, shape, at) of evenly spaced slices through the scan's own: ``along`` gives
    each scan slice's distance (mm, increasing) from the first along the slice axis of
    ``affine``; ``at[j]`` is where new slice j lies among the scan's slices (a fractional
    index). The step is the smallest gap (at most 4 slices per usual gap), fitted so that
    the first and last slices stay where they are."""
    along = np.asarray(along, float)
    gaps = np.diff(along)
    smallest = max(float(gaps.min()), float(np.median(gaps)) / 4)
    n = max(int(math.ceil(along[-1] / smallest - 1e-6)), 1)
    step = along[-1] / n
    at = np.interp(np.arange(n + 1) * step, along, np.arange(len(along), dtype=float))
    out = np.array(affine, float)
    out[:3, 0] *= step / np.linalg.norm(out[:3, 0])
    return out, (n + 1, *(int(v) for v in shape[1:3])), at


def along_slices(data: np.ndarray, at: np.ndarray, nearest: bool,
                 label: str = "result") -> np.ndarray:
    """``data``'s slices at the fractional slice indices ``at``: the nearest slice (labels:
    values kept) or linear between the two around it (integer images rounded back)."""
    data = np.asarray(data)
    check_allocation(len(at) * math.prod(data.shape[1:]) * data.dtype.itemsize,
                     f"{label}: resampling onto evenly spaced slices", VolumeWriteError)
    if nearest:
        return data[np.rint(at).astype(int)]
    low = np.clip(np.floor(at).astype(int), 0, len(data) - 1)
    high = np.clip(low + 1, 0, len(data) - 1)
    frac = (at - low).reshape(-1, *[1] * (data.ndim - 1))
    out = data[low] * (1 - frac) + data[high] * frac
    return (np.rint(out) if data.dtype.kind in "iub" else out).astype(data.dtype)

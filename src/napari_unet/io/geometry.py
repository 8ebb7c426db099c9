"""All conversions between the Volume geometry and other conventions, in one place.

World convention: **LPS millimetres** (x grows to the patient's Left, y to Posterior, z to
Superior), as in DICOM and ITK/SimpleITK. ``Volume.affine`` maps array indices (slices-first,
as ``sitk.GetArrayFromImage`` orders them: (z, y, x) for an axial scan) to LPS points;
``Volume.origin`` is the LPS point (x, y, z order) of voxel (0, 0, 0), ``Volume.spacing``
the step along each array axis and ``Volume.direction[:, a]`` the LPS unit vector of array
axis a.

- SimpleITK orders axes fastest-first (x, y, z), so array axis a is ITK axis 2 - a.
- NIfTI (nibabel) stores data (i, j, k) fastest-first and its affine maps (i, j, k) to RAS;
  our array is the data transposed to (k, j, i) and LPS = diag(-1, -1, 1) @ RAS.
- napari: layers use array-index order; world coordinates are LPS millimetres, each napari
  axis one LPS axis (``anatomical_axes``), scale negative where an array axis runs against
  it, so scans show radiologically; oblique scans keep the remaining rotation as the
  layer ``affine``. Display never changes what is written: writers use the source geometry.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

# index (a0, a1, a2) -> (a2, a1, a0): swaps array order and fastest-first order
_REVERSE = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=float)
_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
# napari world axes for layers without a source: (S, P, L), i.e. SimpleITK's default
# identity direction seen in array order
DEFAULT_WORLD = np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0]], dtype=float)


def geometry_from_affine(affine: np.ndarray) -> tuple[tuple, tuple, np.ndarray]:
    """(spacing, origin, direction) such that ``Volume.affine`` gives ``affine`` back.

    Direction columns are unit vectors; a sheared affine keeps its shear in ``direction``
    (then not orthogonal), so the matrix is reproduced exactly.
    """
    affine = np.asarray(affine, float)
    lin = affine[:3, :3]
    spacing = np.linalg.norm(lin, axis=0)
    if np.any(spacing == 0):
        raise ValueError("affine has a zero-length axis")
    return tuple(spacing), tuple(affine[:3, 3]), lin / spacing[None, :]


# --- slices stacked obliquely (gantry tilt) -------------------------------------------------

# how far (mm) float arithmetic alone may put a slice from where its header says
STACKING_TOLERANCE_MM = 0.01
# a shear that moves no voxel centre by more than this fraction of the smallest voxel
# spacing is geometry noise (``shear_noise_mm``)
SHEAR_NOISE_VOXELS = 0.1
# positions are taken to be written to 0.1 mm or finer: whole numbers are exact values
COARSEST_ROUNDING_MM = 0.1


def rounding_mm(step: float | None) -> float:
    """The furthest apart rounding to a decimal ``step`` puts two points that should
    coincide (each coordinate off by up to step / 2: each point by sqrt(3) step / 2).

    Scanners write positions to 0.1 mm or finer, so a coarser step (positions that are
    all whole millimetres) counts as ``COARSEST_ROUNDING_MM``."""
    return math.sqrt(3) * min(step, COARSEST_ROUNDING_MM) if step else 0.0


def shear_noise_mm(spacing, rounding_step: float | None = None) -> float:
    """How far (mm) voxel centres may sit off an orthogonal grid for its shear to count
    as noise: written orthogonal, not resampled.

    The larger of what rounding the positions to their decimal ``rounding_step`` can do
    (``rounding_mm``: 0.17 mm for positions written to 0.1 mm) and a tenth of the
    smallest voxel spacing (``SHEAR_NOISE_VOXELS``: below what viewers and resamplers
    resolve, a fifth of the half voxel that outputs promise; dcm2niix ignores far more,
    any angle under 0.8 degrees whatever the stack's length); never over half a voxel.
    """
    voxel = float(min(spacing))
    noise = max(SHEAR_NOISE_VOXELS * voxel, rounding_mm(rounding_step), STACKING_TOLERANCE_MM)
    return min(noise, 0.5 * voxel)


def stacking_from_positions(
    spacing, origin, direction, positions: np.ndarray, rounding_step: float | None = None
) -> tuple[tuple, tuple, np.ndarray, float | None]:
    """(spacing, origin, direction, tilt in degrees or None) placing array slice k at
    ``positions[k]`` (its ImagePositionPatient, written to the decimal ``rounding_step``).

    GDCM stacks slices along the normal of their planes, at its own spacing. When the
    slices sit off that straight stack within their planes by no more than
    ``shear_noise_mm`` (rounding, or a shear far below a voxel), the stack is straight:
    the normal through their mean in-plane place, at the mean step along it. Otherwise
    (gantry tilt, sheared stacking) the slice axis becomes the mean step between the
    first and last slice, so ``direction`` is no longer orthogonal (a shear), and the
    tilt is the angle between that step and the normal.
    """
    direction = np.asarray(direction, float)
    positions = np.asarray(positions, float)
    n = len(positions)
    step = (positions[-1] - positions[0]) / max(n - 1, 1)
    if n < 2 or np.linalg.norm(step) < 1e-6:
        return spacing, origin, direction, None
    normal = direction[:, 0] / np.linalg.norm(direction[:, 0])
    rel = positions - positions[0]
    along = rel @ normal
    if abs(along[-1] - along[0]) < 1e-6:  # no step along the normal: nothing to stack
        return spacing, origin, direction, None
    aside = rel - np.outer(along, normal)  # each slice's offset within its plane
    moved = float(np.linalg.norm(aside - aside.mean(axis=0), axis=1).max())
    if moved <= shear_noise_mm(spacing, rounding_step):
        out = direction.copy()
        out[:, 0] = normal * np.sign(along[-1] - along[0])
        spacing = (float(abs(along[-1] - along[0])) / (n - 1), *spacing[1:])
        return spacing, tuple(positions[0] + aside.mean(axis=0)), out, None
    out = direction.copy()
    out[:, 0] = step / np.linalg.norm(step)
    spacing = (float(np.linalg.norm(step)), *spacing[1:])
    along_step = abs(float(np.dot(step, normal))) / np.linalg.norm(step)
    return spacing, tuple(positions[0]), out, float(np.degrees(np.arccos(min(along_step, 1.0))))


# --- SimpleITK -----------------------------------------------------------------------------


def geometry_from_sitk(image) -> tuple[tuple, tuple, np.ndarray]:
    """Array-order (spacing, origin, direction) of a 3D SimpleITK image."""
    d = np.asarray(image.GetDirection(), float).reshape(3, 3)
    return tuple(image.GetSpacing()[::-1]), tuple(image.GetOrigin()), d[:, ::-1]


def set_sitk_geometry(image, spacing, origin, direction) -> None:
    """Give a SimpleITK image (built from a slices-first array) the Volume geometry."""
    d = np.asarray(direction, float).reshape(3, 3)
    image.SetSpacing([float(s) for s in spacing][::-1])
    image.SetOrigin([float(o) for o in origin])
    image.SetDirection([float(v) for v in d[:, ::-1].ravel()])


# --- NIfTI ---------------------------------------------------------------------------------


def volume_affine_from_nifti(nifti_affine: np.ndarray) -> np.ndarray:
    """Index-to-LPS affine of the transposed (slices-first) array of a NIfTI image."""
    return _RAS_TO_LPS @ np.asarray(nifti_affine, float) @ _REVERSE


def nifti_affine_from_volume(volume_affine: np.ndarray) -> np.ndarray:
    """NIfTI (voxel i, j, k to RAS) affine for data written as the array transposed."""
    return _RAS_TO_LPS @ np.asarray(volume_affine, float) @ _REVERSE


# --- napari --------------------------------------------------------------------------------
#
# napari world coordinates are LPS millimetres: each napari axis is one LPS axis (the one
# nearest to that array axis), never negated, so the status bar reads the same numbers as
# a DICOM viewer. Axes that run against their LPS axis get a negative scale, which
# flips them on screen: with napari's default camera (values grow down and to the right)
# an axial slice then shows anterior up and the patient's right on the screen's left.
# Superior-up coronal and sagittal views need the camera flipped
# (``_napari.radiological``), which the axis labels below drive.

# the direction in which LPS x, y and z grow: the axis labels napari shows
LPS_AXIS_LABELS = ("R→L", "A→P", "I→S")
MM = "mm"


def anatomical_axes(direction: np.ndarray) -> np.ndarray:
    """Permutation W (3x3, no signs): row a picks the LPS axis nearest to array axis a.

    napari world coordinates are ``W @ LPS``. The axes are paired as a whole (the
    permutation with the largest total alignment), so a 45-degree oblique scan still gets
    three distinct axes.
    """
    d = np.abs(np.asarray(direction, float).reshape(3, 3))
    best = max(itertools.permutations(range(3)),
               key=lambda p: sum(d[p[a], a] for a in range(3)))
    w = np.zeros((3, 3))
    for a, lps in enumerate(best):
        w[a, lps] = 1.0
    return w


def axis_labels(direction: np.ndarray) -> tuple[str, str, str]:
    """Anatomical label of each napari axis ("I→S": grows toward superior)."""
    w = anatomical_axes(direction)
    return tuple(LPS_AXIS_LABELS[int(np.argmax(row))] for row in w)


def axes_from_labels(labels) -> np.ndarray | None:
    """The W of ``anatomical_axes`` back from a layer's axis labels (None if they are
    not three distinct anatomical labels)."""
    labels = tuple(labels or ())[-3:]
    if len(labels) != 3 or sorted(labels) != sorted(LPS_AXIS_LABELS):
        return None
    w = np.zeros((3, 3))
    for a, label in enumerate(labels):
        w[a, LPS_AXIS_LABELS.index(label)] = 1.0
    return w


def layer_geometry(spacing, origin, direction, atol: float = 1e-6) -> dict:
    """napari layer kwargs placing a Volume in LPS millimetres (see the comment above).

    ``scale`` is the spacing, negative along array axes that run against their LPS axis;
    ``translate`` the origin. Axis-aligned scans need nothing else; oblique ones keep
    their exact geometry through the residual rotation R as ``affine``:
    ``world = R @ (scale * index + translate)``.
    """
    w = anatomical_axes(direction)
    r = w @ np.asarray(direction, float).reshape(3, 3)
    signs = np.where(np.diag(r) < 0, -1.0, 1.0)
    rotation = r * signs[None, :]
    t = w @ np.asarray(origin, float)
    out = {"scale": tuple(float(s) for s in np.asarray(spacing, float) * signs),
           "axis_labels": axis_labels(direction), "units": (MM, MM, MM)}
    if np.allclose(rotation, np.eye(3), atol=atol):
        out["translate"] = tuple(float(v) for v in t)
        return out
    aff = np.eye(4)
    aff[:3, :3] = rotation
    out["translate"] = tuple(float(v) for v in np.linalg.solve(rotation, t))
    out["affine"] = aff
    return out


def geometry_from_layer(data_to_world: np.ndarray, world_axes: np.ndarray | None = None):
    """(spacing, origin, direction) from a 3D layer's 4x4 data-to-world matrix.

    ``world_axes`` is the W of ``anatomical_axes`` for the layer's source; without a
    source, napari world axes are taken as (S, P, L), SimpleITK's default orientation.
    """
    m = DEFAULT_WORLD if world_axes is None else np.asarray(world_axes, float)
    lift = np.eye(4)
    lift[:3, :3] = m.T
    return geometry_from_affine(lift @ np.asarray(data_to_world, float))


# --- slice planes in a clinician's words --------------------------------------------------

PLANES = ("axial", "coronal", "sagittal")
ISOTROPY = 1.1  # largest over smallest voxel spacing for voxels to count as near cubic


def near_cubic(spacing) -> bool:
    """Whether a scan's voxels are close enough to cubes that every plane shows its
    anatomy unstretched (no spacing, as for a plain array: taken as cubic)."""
    return spacing is None or max(spacing[:3]) <= ISOTROPY * min(spacing[:3])


_PLANE_NORMAL = {"sagittal": 0, "coronal": 1, "axial": 2}  # LPS axis the slices stack along


def plane_axis(plane: str, direction: np.ndarray) -> int:
    """Array axis whose slices lie in ``plane`` for a scan with these direction cosines."""
    if plane not in _PLANE_NORMAL:
        raise ValueError(f"unknown plane {plane!r}: use one of {', '.join(PLANES)}")
    nearest = anatomical_axes(direction)  # row a: the LPS axis nearest array axis a
    return int(np.argmax(nearest[:, _PLANE_NORMAL[plane]]))


def axis_plane(axis: int, direction: np.ndarray) -> str:
    """The plane (axial, coronal, sagittal) of the slices along array ``axis``."""
    return next(p for p in PLANES if plane_axis(p, direction) == int(axis) % 3)

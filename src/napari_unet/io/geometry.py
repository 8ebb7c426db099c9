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
- napari: layers use array-index order; for scans whose axes are (signed) world axes,
  scale/translate make napari's world coordinates physical millimetres along the array
  axes; oblique scans get the remaining rotation as the layer ``affine``.
"""

from __future__ import annotations

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


def nearest_axes(direction: np.ndarray) -> np.ndarray:
    """Signed permutation M (3x3) whose row a is the world axis closest to array axis a.

    napari world coordinates are ``M @ LPS``: physical millimetres along the scan's own
    (nearest principal) axes, so an axial scan shows axial slices and keeps its mm units.
    """
    d = np.asarray(direction, float).reshape(3, 3)
    m = np.zeros((3, 3))
    for a in range(3):
        w = int(np.argmax(np.abs(d[:, a])))
        m[a, w] = np.sign(d[w, a])
    if np.any(np.abs(m).sum(axis=0) != 1):  # two axes nearest the same world axis
        return DEFAULT_WORLD.copy()
    return m


def layer_geometry(spacing, origin, direction, atol: float = 1e-6) -> dict:
    """napari layer kwargs (``scale``, ``translate``, maybe ``affine``) for a Volume geometry.

    Axis-aligned scans: ``world = scale * index + translate`` (no affine). Oblique ones:
    ``world = R @ (scale * index + translate)`` with the residual rotation R as ``affine``.
    """
    m = nearest_axes(direction)
    r = m @ np.asarray(direction, float).reshape(3, 3)
    t = m @ np.asarray(origin, float)
    out = {"scale": tuple(float(s) for s in spacing)}
    if np.allclose(r, np.eye(3), atol=atol):
        out["translate"] = tuple(float(v) for v in t)
        return out
    aff = np.eye(4)
    aff[:3, :3] = r
    out["translate"] = tuple(float(v) for v in np.linalg.solve(r, t))
    out["affine"] = aff
    return out


def geometry_from_layer(data_to_world: np.ndarray, world_axes: np.ndarray | None = None):
    """(spacing, origin, direction) from a 3D layer's 4x4 data-to-world matrix.

    ``world_axes`` is the M of ``nearest_axes`` for the layer's source; without a source,
    napari world axes are taken as (S, P, L), SimpleITK's default orientation.
    """
    m = DEFAULT_WORLD if world_axes is None else np.asarray(world_axes, float)
    lift = np.eye(4)
    lift[:3, :3] = m.T
    return geometry_from_affine(lift @ np.asarray(data_to_world, float))

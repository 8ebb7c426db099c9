"""Anatomically asymmetric phantoms: each voxel says on which side of the scan's centre it
lies (superior or not, right or not, anterior or not), computed from its real LPS
position, so a picture of any view tells which anatomical corner landed where."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from napari_unet.io import geometry

SUPERIOR, RIGHT, ANTERIOR = 4, 2, 1  # bits of the code
BASE, STEP = 30, 30  # value = BASE + STEP * code: 30..240, never the black background


def codes(shape, volume_affine) -> np.ndarray:
    """Code of every voxel of a slices-first array with index-to-LPS ``volume_affine``."""
    idx = np.indices(shape).reshape(3, -1).astype(float)
    lps = volume_affine[:3, :3] @ idx + volume_affine[:3, 3:]
    x, y, z = lps - lps.mean(axis=1, keepdims=True)  # LPS: x grows left, y posterior
    code = SUPERIOR * (z > 0) + RIGHT * (x < 0) + ANTERIOR * (y < 0)
    return code.reshape(shape)


def phantom_values(shape, volume_affine) -> np.ndarray:
    return (BASE + STEP * codes(shape, volume_affine)).astype(np.int16)


def decode(value: float) -> int:
    return int(round((float(value) - BASE) / STEP))


def rotation_x(deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    return np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])


# NIfTI affines (voxel i, j, k to RAS) of the orientations a user meets
NIFTI_AFFINES = {
    # i toward the patient's right, j anterior, k superior (MNI, most NIfTI tools)
    "ras": np.array([[1.5, 0, 0, -20], [0, 1.25, 0, -18], [0, 0, 2.0, -12], [0, 0, 0, 1]]),
    # i toward the left, j posterior (what ITK/DICOM converters often write)
    "lps": np.array([[-1.5, 0, 0, 20], [0, -1.25, 0, 18], [0, 0, 2.0, -12], [0, 0, 0, 1]]),
    # axial, tilted by 20 degrees about the left-right axis
    "oblique": np.vstack([np.hstack([rotation_x(20) @ np.diag([1.5, 1.25, 2.0]),
                                     [[-20], [-18], [-12]]]), [0, 0, 0, 1]]),
    # sagittal acquisition: i anterior, j superior, slices (k) toward the left
    "sagittal": np.array([[0, 0, -2.0, 12], [1.25, 0, 0, -18], [0, 1.5, 0, -15],
                          [0, 0, 0, 1]]),
}
SHAPE_XYZ = (24, 20, 16)  # nibabel (i, j, k)


def write_phantom_nifti(path: str | Path, orientation: str) -> Path:
    """A phantom NIfTI file in one of ``NIFTI_AFFINES``' orientations."""
    nifti_affine = NIFTI_AFFINES[orientation]
    shape = SHAPE_XYZ[::-1]  # slices-first
    values = phantom_values(shape, geometry.volume_affine_from_nifti(nifti_affine))
    nib.Nifti1Image(values.T, nifti_affine).to_filename(str(path))
    return Path(path)


def scan_picture(viewer) -> np.ndarray:
    """The canvas's red channel with the scan alone: napari-unet's orientation letters and
    slice position (bright text at the edges) hidden while it is taken."""
    from napari_unet._napari.canvas_orientation import KEY

    ours = [ov for name, ov in viewer.canvas.overlays.items()
            if name.startswith(KEY.format("")) and ov.visible]
    for ov in ours:
        ov.visible = False
    try:
        return viewer.screenshot(canvas_only=True, flash=False)[..., 0].astype(float)
    finally:
        for ov in ours:
            ov.visible = True


def label_blobs(shape) -> np.ndarray:
    """A small label map: a block of class 1 and a bar of class 2 on one slice."""
    labels = np.zeros(shape, np.uint8)
    labels[1:4, 2:6, 3:8] = 1
    labels[2, 7:10, 1:4] = 2
    return labels

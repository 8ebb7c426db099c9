"""A written NIfTI as the next tool reads it: SimpleITK (ITK: ITK-SNAP, Slicer, ANTs,
TorchIO) and nibabel (FSL, nilearn), each placing every voxel centre in LPS millimetres.

``assert_nifti_agrees`` is the check every I/O test runs on what napari-unet wrote:
both open it, both set qform and sform alike, both read the same values and put every
voxel centre at the same place (0.1 mm), and, given an independent reference (voxel
centres computed by hand from the DICOM headers, or the source NIfTI's affine as
nibabel reads it), within half a voxel of it.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import nibabel as nib
import numpy as np
import SimpleITK as sitk

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
AGREEMENT_MM = 0.1


@dataclass
class Reading:
    """What one tool read: values (slices-first, channels last) and every voxel's LPS
    centre (slices x rows x columns x 3)."""

    values: np.ndarray
    centres: np.ndarray


def itk_affine(image) -> np.ndarray:
    """ITK's index (i, j, k) to LPS 4x4 (the first three axes of a 4D image)."""
    dim = image.GetDimension()
    direction = np.asarray(image.GetDirection(), float).reshape(dim, dim)[:3, :3]
    out = np.eye(4)
    out[:3, :3] = direction * np.asarray(image.GetSpacing()[:3])[None, :]
    out[:3, 3] = image.GetOrigin()[:3]
    return out


def centres(affine_ijk: np.ndarray, shape_ijk) -> np.ndarray:
    """LPS centre of every voxel, slices-first (k, j, i, 3), of an index (i, j, k) to LPS
    affine."""
    i, j, k = np.meshgrid(*[np.arange(n) for n in shape_ijk[:3]], indexing="ij")
    ijk = np.stack([i, j, k, np.ones_like(i)], axis=-1).astype(float)
    return (ijk @ affine_ijk.T)[..., :3].transpose(2, 1, 0, 3)


@contextlib.contextmanager
def _environment(**values):
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update({k: v for k, v in values.items() if v is not None})
    for k, v in values.items():
        if v is None:
            os.environ.pop(k, None)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def read_itk(path, permissive: bool = False) -> Reading:
    """SimpleITK's reading (raises RuntimeError where ITK refuses the file);
    ``permissive``: with ITK_NIFTI_SFORM_PERMISSIVE set, as some users run it."""
    with _environment(ITK_NIFTI_SFORM_PERMISSIVE="YES" if permissive else None):
        image = sitk.ReadImage(str(path))
    values = sitk.GetArrayFromImage(image)
    if image.GetDimension() == 4:  # (c, k, j, i) -> channels last
        values = np.moveaxis(values, 0, -1)
    return Reading(values, centres(itk_affine(image), image.GetSize()))


def read_nibabel(path) -> Reading:
    img = nib.load(str(path))
    data = np.asarray(img.dataobj)
    if data.ndim == 2:
        data = data[:, :, None]
    values = data.transpose(2, 1, 0, *range(3, data.ndim))
    return Reading(values, centres(RAS_TO_LPS @ img.affine, data.shape))


def distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b), axis=-1).max())


def smallest_spacing(path) -> float:
    return float(min(nib.load(str(path)).header.get_zooms()[:3]))


def source_centres(reference, shape) -> np.ndarray:
    """Voxel centres of an independent reference: an array (k, j, i, 3) as it is, or a
    NIfTI source's nibabel (RAS) affine."""
    reference = np.asarray(reference, float)
    if reference.shape == (4, 4):
        return centres(RAS_TO_LPS @ reference, shape[::-1])
    return reference


def assert_nifti_agrees(path, reference=None, agreement_mm: float = AGREEMENT_MM,
                        source_mm: float | None = None) -> dict:
    """SimpleITK and nibabel both open ``path`` and agree on it; return the distances.

    ``reference``: where the source puts each voxel centre (see ``source_centres``);
    every voxel of the output must be within ``source_mm`` (default: half the smallest
    voxel spacing) of it, for both tools.
    """
    hdr = nib.load(str(path)).header
    assert int(hdr["sform_code"]) > 0 and int(hdr["qform_code"]) > 0, \
        f"{path}: sform_code {hdr['sform_code']}, qform_code {hdr['qform_code']}"
    np.testing.assert_allclose(hdr.get_qform(), hdr.get_sform(), atol=1e-3,
                               err_msg=f"{path}: qform and sform differ")
    itk, nibabel = read_itk(path), read_nibabel(path)
    np.testing.assert_array_equal(itk.values, nibabel.values)
    measured = {"itk_vs_nibabel_mm": distance(itk.centres, nibabel.centres)}
    assert measured["itk_vs_nibabel_mm"] <= agreement_mm, (path, measured)
    if reference is not None:
        expected = source_centres(reference, nibabel.values.shape[:3])
        assert expected.shape == nibabel.centres.shape, \
            f"{path}: {nibabel.centres.shape[:3]} voxels, the source has {expected.shape[:3]}"
        limit = 0.5 * smallest_spacing(path) if source_mm is None else source_mm
        measured["nibabel_vs_source_mm"] = distance(nibabel.centres, expected)
        measured["itk_vs_source_mm"] = distance(itk.centres, expected)
        assert max(measured["nibabel_vs_source_mm"], measured["itk_vs_source_mm"]) <= limit, \
            (path, measured, limit)
    return measured


def assert_content_in_place(path, series, truth, labels: bool, tolerance: float = 0.5
                            ) -> dict:
    """Every voxel of ``path`` (where ITK puts it) holds what the DICOM ``series`` has
    there: ``truth`` at that point for voxels on the series' pixels (labels: unless the
    point is within half a pixel of where ``truth`` changes; images: within
    ``tolerance``, the half unit the stored integers round to), the background where the
    series has no pixel.

    ``truth`` (LPS points -> values) and ``background`` come from ``support
    .geometry_cases``; where the series is, is computed by hand from its headers.
    """
    from .geometry_cases import dicom_pixel_coordinates

    itk = read_itk(path)
    pts = itk.centres.reshape(-1, 3)
    got = itk.values.reshape(len(pts), -1)[:, 0].astype(float)
    k, rc, off_plane, size = dicom_pixel_coordinates(series, pts)
    assert off_plane.max() < 1e-3, f"{path}: voxels off the slice planes by {off_plane.max()}"
    on = np.all((rc >= 0) & (rc <= size - 1), axis=1)  # between four pixel centres
    off = np.any((rc < -0.5 - 1e-3) | (rc > size - 0.5 + 1e-3), axis=1)
    expected = truth(pts)
    if labels:
        from .geometry_cases import ball_edge_mm

        near_edge = ball_edge_mm(pts) <= 0.5 * np.hypot(*series_pixel(series)) + 1e-3
        wrong = on & ~near_edge & (got != expected)
        assert not wrong.any(), f"{path}: {wrong.sum()} voxels hold the wrong label"
        assert not (off & (got != 0)).any(), f"{path}: labels outside the scan"
        return {"voxels_checked": int((on & ~near_edge).sum())}
    error = np.abs(got - expected)[on]
    assert error.max() <= tolerance + 1e-3, f"{path}: values off by up to {error.max()}"
    background = got[off]
    assert background.size == 0 or np.ptp(background) == 0, f"{path}: uneven background"
    return {"voxels_checked": int(on.sum()), "max_value_error": float(error.max())}


def series_pixel(series) -> tuple[float, float]:
    from .geometry_cases import dicom_slices

    return tuple(float(v) for v in dicom_slices(series)[0].PixelSpacing)

"""Every NIfTI we write opens in SimpleITK (ITK) and nibabel, both put each voxel at the
same place, and that place is where the source puts it: a gantry-tilted CT (resampled
onto an orthogonal grid), an oblique MR with positions rounded to 0.1 mm and nibabel's
Siemens pair (rounding-level shear: written orthogonal), and NIfTI sources whose
headers ITK and nibabel read differently."""

from __future__ import annotations

import warnings

import nibabel as nib
import numpy as np
import pytest

from napari_unet.io import ScanWarning, read_volume, write_volume
from napari_unet.io.write import ResampledWarning
from support import geometry_cases as cases
from support.nifti_checks import (
    RAS_TO_LPS,
    assert_content_in_place,
    assert_nifti_agrees,
    read_itk,
    read_nibabel,
)


def read_noting(path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        vol = read_volume(path)
    return vol, [str(w.message) for w in caught if issubclass(w.category, ScanWarning)]


def write_noting(data, path, like, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = write_volume(data, path, like=like, **kwargs)
    return out, [w for w in caught if issubclass(w.category, ResampledWarning)]


@pytest.fixture(scope="module")
def tilted(tmp_path_factory):
    """A 15-degree gantry-tilted head CT holding a ball, and one holding a ramp."""
    base = tmp_path_factory.mktemp("tilted")
    return {"ball": cases.tilted_ct(base / "ball"),
            "ramp": cases.tilted_ct(base / "ramp", content="ramp")}


def test_tilted_ct_labels_are_resampled_where_itk_and_nibabel_agree(tmp_path, tilted):
    vol, notes = read_noting(tilted["ball"])
    assert any("15.0 degrees" in n and "resampled" in n for n in notes), notes
    labels = (vol.array > 0).astype(np.uint8)
    np.testing.assert_array_equal(labels, cases.ball(cases.dicom_voxel_centres(tilted["ball"])))
    out, warned = write_noting(labels, tmp_path / "labels.nii.gz", vol,
                               class_names=["background", "ball"])
    assert len(warned) == 1 and "15.0 degrees" in str(warned[0].message)
    assert_nifti_agrees(out)
    checked = assert_content_in_place(out, tilted["ball"], cases.ball, labels=True)
    assert checked["voxels_checked"] > 0.8 * labels.size
    back = read_volume(out)  # our own reader opens it, on the grid ITK and nibabel read
    np.testing.assert_allclose(back.affine, RAS_TO_LPS @ nib.load(out).affine
                               @ np.eye(4)[[2, 1, 0, 3]], atol=1e-4)
    np.testing.assert_array_equal(back.array, read_itk(out).values)
    assert set(np.unique(back.array)) == {0, 1}


def test_tilted_ct_images_are_resampled_linearly(tmp_path, tilted):
    vol, _ = read_noting(tilted["ramp"])
    out, warned = write_noting(vol.array.astype(np.float32), tmp_path / "image.nii.gz", vol)
    assert warned
    assert_nifti_agrees(out)
    assert_content_in_place(out, tilted["ramp"], cases.ramp, labels=False)
    assert nib.load(out).get_data_dtype() == np.float32


def test_tilted_ct_probabilities_keep_their_channels(tmp_path, tilted):
    vol, _ = read_noting(tilted["ball"])
    ball = (vol.array > 0).astype(np.float32)
    probs = np.stack([1 - ball, ball], axis=-1)
    out, _ = write_noting(probs, tmp_path / "probabilities.nii.gz", vol)
    assert_nifti_agrees(out)
    itk = read_itk(out)
    assert itk.values.shape[-1] == 2
    covered = itk.values.sum(axis=-1) > 0  # the scan's pixels: probabilities sum to one
    np.testing.assert_allclose(itk.values.sum(axis=-1)[covered], 1.0, atol=1e-6)
    assert read_volume(out).array.shape[-1] == 2


@pytest.mark.parametrize("case", ["rounded_mr", "siemens_pair"])
def test_rounding_level_shear_is_written_orthogonal_on_the_scans_own_voxels(tmp_path, case):
    folder = (cases.rounded_oblique_mr if case == "rounded_mr" else cases.siemens_pair)(
        tmp_path / case)
    vol, notes = read_noting(folder)
    assert not notes, notes  # neither "stacked obliquely" nor "uneven slice spacing"
    np.testing.assert_allclose(vol.direction.T @ vol.direction, np.eye(3), atol=1e-9)
    reference = cases.dicom_voxel_centres(folder)
    labels = (vol.array > np.median(vol.array)).astype(np.uint8)
    for data, name in ((labels, "labels.nii.gz"), (vol.array.astype(np.float32), "i.nii.gz")):
        out, warned = write_noting(data, tmp_path / name, vol)
        assert not warned
        measured = assert_nifti_agrees(out, reference)
        assert measured["itk_vs_nibabel_mm"] < 1e-3
        np.testing.assert_array_equal(read_nibabel(out).values, data)


# --- NIfTI sources ----------------------------------------------------------------------------

ROTATED = np.array([[0.9, 0.0, 0.0, -40.0], [0.0, 1.1 * np.cos(0.4), -2.5 * np.sin(0.4), 25.5],
                    [0.0, 1.1 * np.sin(0.4), 2.5 * np.cos(0.4), 12.25], [0, 0, 0, 1]])


def nifti_source(path, affine, sform=1, qform=1, qform_affine=None, zooms=None):
    data = (np.random.default_rng(3).random((11, 9, 7)) * 1000).astype(np.int16)
    img = nib.Nifti1Image(data, affine)
    img.set_sform(affine, code=sform)
    img.set_qform(affine if qform_affine is None else qform_affine, code=qform)
    if zooms is not None:  # pixdim that disagrees with the sform ("unexpected scales")
        img.header["pixdim"][1:4] = zooms
    img.to_filename(str(path))
    return path


def sheared(amount: float) -> np.ndarray:
    out = ROTATED.copy()
    out[:3, 2] += amount * ROTATED[:3, 1] / np.linalg.norm(ROTATED[:3, 1])  # k steps aside
    return out


@pytest.mark.parametrize("variant", ["sform_aligned_qform_scanner", "pixdim_disagrees",
                                     "tiny_shear", "qform_only"])
def test_nifti_sources_that_itk_and_nibabel_read_differently(tmp_path, variant):
    """nibabel reads the sform; ITK a qform unlike it, or pixdim for voxel sizes: the
    outputs hold one geometry, nibabel's reading of the source."""
    other = ROTATED.copy()
    other[:3, 3] += [5.0, -3.0, 2.0]
    kwargs = {"sform_aligned_qform_scanner": {"sform": 2, "qform_affine": other},
              "pixdim_disagrees": {"zooms": [1.0, 1.0, 1.0]},
              "tiny_shear": {"qform": 0},
              "qform_only": {"sform": 0}}[variant]
    affine = sheared(0.004) if variant == "tiny_shear" else ROTATED
    src = nifti_source(tmp_path / "src.nii.gz", affine, **kwargs)
    vol = read_volume(src)
    out, warned = write_noting((vol.array > 500).astype(np.uint8), tmp_path / "l.nii.gz", vol)
    assert not warned
    assert_nifti_agrees(out, nib.load(src).affine)


def test_sheared_nifti_source_is_resampled_nearest_for_labels(tmp_path):
    src = nifti_source(tmp_path / "src.nii.gz", sheared(0.8), qform=0)
    source_img = nib.load(src)
    vol = read_volume(src)
    labels = (vol.array // 250).astype(np.uint8)  # labels 0..3
    out, warned = write_noting(labels, tmp_path / "l.nii.gz", vol, class_names=list("abcd"))
    assert len(warned) == 1
    assert_nifti_agrees(out)
    itk = read_itk(out)
    # by hand: each output voxel's centre in the source's voxel indices (nibabel affine)
    pts = itk.centres.reshape(-1, 3)
    ijk = (np.linalg.inv(RAS_TO_LPS @ source_img.affine) @ np.c_[pts, np.ones(len(pts))].T)[:3]
    nearest = np.rint(ijk).astype(int)
    shape = np.array(source_img.shape)[:, None]
    inside = np.all((nearest >= 0) & (nearest < shape), axis=0)
    np.testing.assert_allclose(ijk[2], np.rint(ijk[2]), atol=1e-4)  # on the slice planes
    expected = labels.T[tuple(nearest[:, inside])]
    got = itk.values.reshape(-1)
    np.testing.assert_array_equal(got[inside], expected)
    assert not got[~inside].any()


def test_read_volume_opens_sheared_files_that_itk_refuses(tmp_path):
    src = nifti_source(tmp_path / "src.nii.gz", sheared(0.8), qform=0)
    with pytest.raises(RuntimeError, match="orthonormal"):
        read_itk(src)
    vol = read_volume(src)  # nibabel reads it: so do we, shear kept
    np.testing.assert_allclose(vol.affine @ [1, 2, 3, 1],
                               RAS_TO_LPS @ nib.load(src).affine @ [3, 2, 1, 1], atol=1e-4)

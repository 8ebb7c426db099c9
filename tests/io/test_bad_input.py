"""Every kind of broken input gives one VolumeReadError naming the file and the reason."""

from __future__ import annotations

import gzip
import shutil

import nibabel as nib
import numpy as np
import pytest
from pydicom.data import get_testdata_file

from napari_unet.errors import VolumeReadError
from napari_unet.io import read_volume
from support.dicom_factory import write_dicom_series


def listing(folder):
    return sorted((p.relative_to(folder), p.stat().st_size) for p in folder.rglob("*"))


def expect_error(path, *patterns):
    """read_volume must raise VolumeReadError naming ``path`` and writing nothing."""
    root = path if path.is_dir() else path.parent
    before = listing(root)
    with pytest.raises(VolumeReadError) as err:
        read_volume(path)
    message = str(err.value)
    assert path.name in message
    for pattern in patterns:
        assert pattern in message, message
    assert listing(root) == before
    return message


def small_nifti(path, shape=(6, 5, 4)):
    nib.Nifti1Image(np.arange(np.prod(shape), dtype=np.float32).reshape(shape),
                    np.eye(4)).to_filename(str(path))
    return path


@pytest.mark.parametrize("name", ["empty.nii.gz", "empty.nii", "empty.dcm"])
def test_zero_byte_file(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"")
    expect_error(path, "empty")


def test_truncated_gzip(tmp_path):
    full = small_nifti(tmp_path / "full.nii.gz", shape=(40, 40, 20)).read_bytes()
    path = tmp_path / "cut.nii.gz"
    path.write_bytes(full[: len(full) // 2])
    expect_error(path, "truncated")


def test_truncated_uncompressed_nifti(tmp_path):
    full = small_nifti(tmp_path / "full.nii").read_bytes()
    path = tmp_path / "cut.nii"
    path.write_bytes(full[:400])
    expect_error(path, "truncated", "480 bytes of image data", "holds 400 bytes")


@pytest.mark.parametrize(("name", "reason"), [("noise.nii", "not a NIfTI file"),
                                            ("noise.nii.gz", "cannot read")])
def test_random_bytes_named_nifti(tmp_path, name, reason):
    path = tmp_path / name
    path.write_bytes(np.random.default_rng(0).bytes(5000))
    expect_error(path, reason)


def test_gzip_of_garbage(tmp_path):
    path = tmp_path / "garbage.nii.gz"
    path.write_bytes(gzip.compress(b"no header here" * 10))
    expect_error(path, "not a NIfTI file")


def test_truncated_dicom_from_pydicom(tmp_path):
    path = tmp_path / "MR_truncated.dcm"
    shutil.copy(get_testdata_file("MR_truncated.dcm"), path)
    expect_error(path, "pixel data")


def test_truncated_slice_in_series_is_left_out_with_a_warning(tmp_path):
    """The README's promise: a malformed slice is left out of its series, with a warning
    naming it; the other slices keep their places (a blank stands in for it)."""
    from napari_unet.io.source import ScanWarning

    data = np.arange(6 * 16 * 16).reshape(6, 16, 16)
    files = write_dicom_series(data, tmp_path / "series")
    files[2].write_bytes(files[2].read_bytes()[:-200])
    with pytest.warns(ScanWarning, match=rf"{files[2].name} left out of this series "
                      r"\(malformed pixel data: truncated"):
        volume = read_volume(tmp_path / "series")
    assert volume.array.shape == data.shape
    np.testing.assert_array_equal(volume.array[[0, 1, 3, 4, 5]], data[[0, 1, 3, 4, 5]])
    assert not volume.array[2].any()  # the blank: the series' lowest value


def test_truncated_single_file_fails_naming_it(tmp_path):
    files = write_dicom_series(np.ones((1, 16, 16)), tmp_path / "one")
    files[0].write_bytes(files[0].read_bytes()[:-200])
    expect_error(files[0], "malformed pixel data: truncated")


def test_random_bytes_named_dcm(tmp_path):
    path = tmp_path / "noise.dcm"
    path.write_bytes(np.random.default_rng(1).bytes(3000))
    expect_error(path, "not a DICOM file")


def test_folder_without_images(tmp_path):
    folder = tmp_path / "reports"
    folder.mkdir()
    expect_error(folder, "no DICOM image series")
    (folder / "readme.txt").write_text("nothing to see")
    shutil.copy(get_testdata_file("rtstruct.dcm"), folder / "rtstruct.dcm")
    message = expect_error(folder, "no DICOM image series", "RTSTRUCT", "not a DICOM file")
    assert "2 files skipped" in message


def test_series_with_mixed_sizes(tmp_path):
    folder = tmp_path / "mixed"
    uid = "1.2.826.0.1.3680043.8.498.1"
    write_dicom_series(np.ones((3, 16, 16)), folder, series_uid=uid, prefix="a")
    write_dicom_series(np.ones((2, 12, 16)), folder, series_uid=uid, prefix="b",
                       origin=(0.0, 0.0, 10.0))
    expect_error(folder, "different sizes", "(12, 16)", "(16, 16)")


def test_series_with_repeated_positions(tmp_path):
    folder = tmp_path / "echoes"
    uid = "1.2.826.0.1.3680043.8.498.2"
    write_dicom_series(np.ones((3, 8, 8)), folder, series_uid=uid, prefix="e1")
    write_dicom_series(np.ones((3, 8, 8)), folder, series_uid=uid, prefix="e2")
    expect_error(folder, "share a position")


def test_5d_nifti(tmp_path):
    path = tmp_path / "five.nii.gz"
    nib.Nifti1Image(np.zeros((4, 4, 3, 2, 3), np.float32), np.eye(4)).to_filename(str(path))
    expect_error(path, "5D", "not supported")


def test_missing_path(tmp_path):
    with pytest.raises(VolumeReadError, match="nowhere.nii.gz: no such file"):
        read_volume(tmp_path / "nowhere.nii.gz")
    assert not list(tmp_path.iterdir())

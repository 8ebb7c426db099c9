"""NIfTI headers that lie (sizes, offsets, orientation) and gzip streams that end early or
never: each is refused before memory is spent, or read from what is really there."""

from __future__ import annotations

import gzip
import warnings
import zlib

import nibabel as nib
import numpy as np
import pytest

from napari_unet.errors import VolumeReadError
from napari_unet.io import ScanWarning, read_volume, write_volume
from napari_unet.io.geometry import volume_affine_from_nifti
from support.hostile import gzip_bytes, peak_rss_of_read, set_fields, small_header, write_nifti
from support.nifti_checks import assert_nifti_agrees

GB = 2**30


def refused(path, *patterns) -> str:
    with pytest.raises(VolumeReadError) as err:
        read_volume(path)
    message = str(err.value)
    assert str(path) in message
    for pattern in patterns:
        assert pattern in message, message
    return message


@pytest.mark.parametrize("name", ["huge.nii", "huge.nii.gz"])
def test_header_claiming_30000_cubed_is_refused_before_reading(tmp_path, name):
    path = write_nifti(tmp_path / name, set_fields(small_header(), dim=[3, 30000, 30000,
                                                                   30000, 1, 1, 1, 1]),
                       data=b"\0" * 1000)
    message = refused(path, "30000 x 30000 x 30000 int16", "TB of memory", "over the limit")
    assert "MemoryError" not in message


def test_limit_comes_from_the_environment(tmp_path, monkeypatch):
    path = write_nifti(tmp_path / "scan.nii.gz", small_header((64, 64, 64)))
    assert read_volume(path).array.shape == (64, 64, 64)
    monkeypatch.setenv("NAPARI_UNET_MAX_BYTES", "100000")
    refused(path, "64 x 64 x 64", "512.0 KB", "limit of 97.7 KB", "NAPARI_UNET_MAX_BYTES")


@pytest.mark.slow
def test_short_stream_costs_only_what_it_holds(tmp_path):
    """The issue's 3 MB file that took 3.4 GB: a header claiming 1 GB, a stream of 128 MB
    of zeros (128 KB compressed). Allowed by the limit, it must fail as truncated having
    used about what the stream held, not what the header claimed."""
    hdr = small_header((1024, 1024, 1024), np.uint8)
    path = tmp_path / "bomb.nii.gz"
    path.write_bytes(gzip_bytes(hdr.binaryblock + b"\0" * 4, zeros=128 * 2**20))
    assert path.stat().st_size < 2**20
    result = peak_rss_of_read(path, env={"NAPARI_UNET_MAX_BYTES": str(4 * GB)})
    assert "truncated" in result["error"] and "1,073,741,824 bytes" in result["error"]
    assert result["grew_mb"] < 128 + 100, result


def test_stream_past_the_image_is_never_decompressed(tmp_path):
    """A gzip stream that goes on after the image (here into garbage that no inflater
    accepts): the image is read, the rest is never touched."""
    hdr = small_header((8, 8, 8), np.uint8)
    image = np.random.default_rng(0).integers(0, 255, 512, dtype=np.uint8).tobytes()
    path = tmp_path / "endless.nii.gz"
    path.write_bytes(gzip_bytes(hdr.binaryblock + b"\0" * 4 + image, zeros=8 * 2**20,
                                tail=b"\xff" * 4096, finish=False))
    with pytest.raises((zlib.error, gzip.BadGzipFile, EOFError)):
        gzip.decompress(path.read_bytes())  # the stream really is broken further on
    vol = read_volume(path)
    expected = np.frombuffer(image, np.uint8).reshape((8, 8, 8), order="F").T
    np.testing.assert_array_equal(vol.array, expected)


@pytest.mark.parametrize("name", ["short.nii", "short.nii.gz"])
def test_truncated_data_names_sizes(tmp_path, name):
    path = write_nifti(tmp_path / name, small_header((32, 32, 32)), data=b"\1" * 1000)
    refused(path, "truncated", "65,536 bytes")


@pytest.mark.parametrize(("fields", "patterns"), [
    ({"vox_offset": 3e9}, ["vox_offset", "header extensions"]),
    ({"vox_offset": np.nan}, ["vox_offset"]),
    ({"vox_offset": -np.inf}, ["invalid vox_offset"]),  # fuzzer: nibabel's OverflowError
    ({"dim": [1, 60, 1, 1, 1, 1, 1, 1]}, ["1D NIfTI"]),  # fuzzer: was an IndexError
    ({"dim": [3, 4, 0, 4, 1, 1, 1, 1]}, ["empty axis"]),
    ({"datatype": 32, "bitpix": 64}, ["complex"]),
    ({"dim": [9, 2, 2, 2, 2, 2, 2, 2]}, []),
    ({"datatype": 999}, []),
])
def test_impossible_header_fields(tmp_path, fields, patterns):
    path = write_nifti(tmp_path / "bad.nii.gz", set_fields(small_header(), **fields),
                       data=b"\0" * 4096)
    refused(path, *patterns)


def read_with_notes(path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        vol = read_volume(path)
    return vol, [str(w.message) for w in caught if issubclass(w.category, ScanWarning)]


QFORM = np.array([[0.0, 0, 3, -10], [-2, 0, 0, 20], [0, 2, 0, 5], [0, 0, 0, 1]])


@pytest.mark.parametrize(("srows", "problem"), [
    ({"srow_x": [np.nan, 0, 0, 0]}, "non-finite"),
    ({"srow_x": [0] * 4, "srow_y": [0] * 4, "srow_z": [0] * 4}, "all zeros"),
    ({"srow_y": QFORM[0]}, "degenerate (rank 2 of 3"),
    ({"srow_z": [np.inf, 1, 1, 1]}, "non-finite"),
])
def test_broken_sform_falls_back_to_a_good_qform(tmp_path, srows, problem):
    path = write_nifti(tmp_path / "scan.nii.gz", set_fields(small_header(affine=QFORM),
                                                            **srows))
    vol, notes = read_with_notes(path)
    np.testing.assert_allclose(vol.affine, volume_affine_from_nifti(QFORM), atol=1e-5)
    assert len(notes) == 1 and str(path) in notes[0] and problem in notes[0]
    assert "qform is used" in notes[0] and vol.source.warnings == tuple(notes)
    out = write_volume(np.zeros(vol.spatial_shape, np.uint8), tmp_path / "out.nii.gz",
                       like=vol)
    written = nib.load(str(out))  # outputs hold the good qform, as sform and qform alike
    assert int(written.header["sform_code"]) == int(written.header["qform_code"]) == 1
    np.testing.assert_allclose(written.affine, QFORM, atol=1e-5)
    assert_nifti_agrees(out, reference=QFORM)


@pytest.mark.parametrize(("fields", "patterns"), [
    ({"pixdim": [1, np.nan, 2, 3, 1, 1, 1, 1], "sform_code": 0}, ["qform", "non-finite"]),
    ({"srow_x": [0] * 4, "srow_y": [0] * 4, "srow_z": [0] * 4, "qform_code": 0},
     ["sform is all zeros"]),
    ({"srow_x": [np.nan] * 4, "pixdim": [1, np.nan, 2, 3, 1, 1, 1, 1]},
     ["sform holds non-finite", "qform holds non-finite"]),
])
def test_no_usable_orientation_is_one_clear_error(tmp_path, fields, patterns):
    path = write_nifti(tmp_path / "scan.nii", set_fields(small_header(), **fields))
    message = refused(path, "no usable orientation", *patterns)
    assert "IndexError" not in message


def test_zero_pixdim_is_read_as_1mm_with_a_warning(tmp_path):
    """nibabel's rule (and what nibabel users get); said, not silent."""
    path = write_nifti(tmp_path / "scan.nii", set_fields(small_header(), sform_code=0,
                                                         pixdim=[1, 0, 2, 0, 1, 1, 1, 1]))
    vol, notes = read_with_notes(path)
    assert vol.spacing == (1.0, 2.0, 1.0)
    assert len(notes) == 1 and str(path) in notes[0] and "setting 0 dims to 1" in notes[0]
    assert vol.source.warnings == tuple(notes)


def test_nan_pixdim_does_not_matter_when_the_sform_holds(tmp_path):
    path = write_nifti(tmp_path / "scan.nii", set_fields(small_header(affine=QFORM),
                                                         pixdim=[1, np.nan, 2, 3, 1, 1, 1,
                                                                 1]))
    vol, notes = read_with_notes(path)  # nibabel uses the sform: so do we, silently
    np.testing.assert_allclose(vol.affine, volume_affine_from_nifti(QFORM), atol=1e-5)
    assert notes == []


@pytest.mark.parametrize("value", ["abc", "-5", "inf", "0"])
def test_a_bad_limit_setting_is_a_settings_error(tmp_path, monkeypatch, value):
    from napari_unet.errors import SettingsError

    path = write_nifti(tmp_path / "scan.nii.gz", small_header())
    monkeypatch.setenv("NAPARI_UNET_MAX_BYTES", value)
    with pytest.raises(SettingsError, match="NAPARI_UNET_MAX_BYTES"):
        read_volume(path)

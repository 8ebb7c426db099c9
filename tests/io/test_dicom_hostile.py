"""DICOM files whose headers lie or are broken: one bad file fails only itself, sizes are
checked before GDCM allocates, assumed geometry is said, never silent."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from napari_unet.errors import VolumeReadError
from napari_unet.io import ScanWarning, list_series, read_volume
from napari_unet.io.dicom import read_all_series
from support.dicom_factory import write_dicom_series
from support.hostile import edit_dicom, peak_rss_of_read


def read_with_notes(path, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        vol = read_volume(path, **kwargs)
    return vol, [str(w.message) for w in caught if issubclass(w.category, ScanWarning)]


def two_series(folder: Path):
    a = write_dicom_series(np.arange(4 * 64).reshape(4, 8, 8), folder / "a", series_number=1,
                           spacing=(2.0, 1.0, 1.0))
    b = write_dicom_series(np.ones((5, 8, 8)), folder / "b", series_number=2, prefix="b")
    return a, b


MALFORMED = [
    ("NumberOfFrames", b"1A", "NumberOfFrames '1A'"),
    ("NumberOfFrames", b"inf", "NumberOfFrames 'inf'"),  # fuzzer: was an OverflowError
    ("Rows", b"\0\0", "Rows 0"),
    ("Rows", b"", "Rows is empty"),  # found by the fuzzer: was a TypeError
    ("BitsAllocated", b"\x0c\0", "BitsAllocated 12"),
    ("ImagePositionPatient", b"nan\\0\\0", "ImagePositionPatient"),
    ("ImageOrientationPatient", b"1\\0\\0\\1\\0\\0", "not two perpendicular unit vectors"),
    ("RescaleSlope", b"abc", "RescaleSlope 'abc'"),
]


@pytest.mark.parametrize(("keyword", "value", "reason"), MALFORMED,
                         ids=[f"{k}={v!r}" for k, v, _ in MALFORMED])
def test_one_malformed_slice_fails_only_itself(tmp_path, keyword, value, reason):
    """Issue case 10: the good series beside it, and its own series, are still read."""
    a, b = two_series(tmp_path / "study")
    edit_dicom(a[1], **{keyword: value})
    listing = list_series(tmp_path / "study")
    assert [s.n_slices for s in listing] == [3, 5]
    [(skipped, why)] = listing.skipped
    assert skipped == str(a[1]) and reason in why
    with pytest.warns(ScanWarning):  # the slice left out, then the gap it leaves
        results = read_all_series(tmp_path / "study")
    assert [v.array.shape for _, v in results] == [(3, 8, 8), (5, 8, 8)]
    vol, notes = read_with_notes(tmp_path / "study", series=0)
    np.testing.assert_array_equal(vol.array, np.arange(4 * 64).reshape(4, 8, 8)[[0, 2, 3]])
    assert any(a[1].name in n and reason in n for n in notes), notes
    assert set(vol.source.warnings) >= set(notes)
    clean, notes_b = read_with_notes(tmp_path / "study", series=1)
    assert notes_b == [] and clean.source.warnings == ()
    with pytest.raises(VolumeReadError, match=reason.split("'")[0]):  # alone: refused
        read_volume(a[1])


def test_series_of_only_malformed_files_is_skipped_with_reasons(tmp_path):
    a, b = two_series(tmp_path / "study")
    for f in a:
        edit_dicom(f, NumberOfFrames=b"x")
    listing = list_series(tmp_path / "study")
    assert len(listing) == 1 and len(listing.skipped) == 4
    assert read_volume(tmp_path / "study").array.shape == (5, 8, 8)
    with pytest.raises(VolumeReadError, match="4 files skipped: malformed"):
        read_volume(tmp_path / "study" / "a")


@pytest.mark.parametrize(("value", "problem"), [
    (None, "no PixelSpacing"),
    (b"0\\0", "PixelSpacing [0.0, 0.0] is not positive"),
    (b"abc", "malformed PixelSpacing 'abc'"),
])
def test_assumed_pixel_spacing_is_a_warning(tmp_path, value, problem):
    """Issue case 15: GDCM silently takes 1 mm; we take it too, and say so."""
    files = write_dicom_series(np.ones((3, 6, 6)), tmp_path / "s", spacing=(2.0, 0.5, 0.5))
    for f in files:
        edit_dicom(f, PixelSpacing=value)
    vol, notes = read_with_notes(tmp_path / "s")
    assert vol.spacing == (2.0, 1.0, 1.0)
    assert len(notes) == 1 and problem in notes[0] and "1 x 1 mm assumed" in notes[0]
    assert str(tmp_path / "s") in notes[0] and vol.source.warnings == tuple(notes)
    single, notes = read_with_notes(files[0])
    assert problem in notes[0] and single.source.warnings == tuple(notes)


def test_good_spacing_gives_no_warning(tmp_path):
    write_dicom_series(np.ones((3, 6, 6)), tmp_path / "s", spacing=(2.0, 0.5, 0.5))
    vol, notes = read_with_notes(tmp_path / "s")
    assert notes == [] and vol.spacing == (2.0, 0.5, 0.5)


def test_files_without_series_uid_form_distinct_series(tmp_path):
    """Issue case 15: 16 files without SeriesInstanceUID were 16 entries with one name."""
    folder = tmp_path / "nouid"
    t1 = write_dicom_series(np.zeros((8, 4, 4)), folder, series_number=3, prefix="t1")
    t2 = write_dicom_series(np.ones((8, 4, 4)), folder, series_number=4, prefix="t2")
    write_dicom_series(np.full((2, 4, 4), 7), folder / "with_uid", series_number=5)
    for f in t1 + t2:
        edit_dicom(f, SeriesInstanceUID=None)
    listing = list_series(folder)
    assert [s.n_slices for s in listing] == [8, 8, 2]
    assert len({s.uid_hash for s in listing}) == 3
    for info, value in zip(listing, (0, 1, 7), strict=True):
        vol, notes = read_with_notes(folder, series=info.uid_hash)
        assert np.all(vol.array == value)
        no_uid = [n for n in notes if "no SeriesInstanceUID" in n]
        assert len(no_uid) == (0 if value == 7 else 1)
        assert vol.source.series_uid == ("" if no_uid else listing[2].uid)


def test_header_asking_for_too_much_is_refused_before_gdcm(tmp_path):
    """Compressed data cannot be measured against the header before decoding: the memory
    the header asks for is checked against the limit instead."""
    path = tmp_path / "huge.dcm"
    shutil.copy(get_testdata_file("MR_small_RLE.dcm"), path)
    edit_dicom(path, Rows=b"\xff\xff", Columns=b"\xff\xff", NumberOfFrames=b"100000")
    with pytest.raises(VolumeReadError, match="pixel samples would need .* over the limit"):
        read_volume(path)


def test_uncompressed_pixels_the_header_overstates_are_refused_before_gdcm(tmp_path):
    path = tmp_path / "huge.dcm"
    shutil.copy(get_testdata_file("CT_small.dcm"), path)
    edit_dicom(path, Rows=b"\xff\xff", Columns=b"\xff\xff", NumberOfFrames=b"100000")
    with pytest.raises(VolumeReadError, match=r"malformed pixel data: it holds 32,768 bytes, "
                       r"but Rows 65535 x Columns 65535 x 100000 frame\(s\)"):
        read_volume(path)


def test_uncompressed_pixels_must_fit_in_the_file(tmp_path):
    path = tmp_path / "short.dcm"
    shutil.copy(get_testdata_file("CT_small.dcm"), path)
    edit_dicom(path, Rows=b"\x00\x04", Columns=b"\x00\x04")  # 1024 x 1024 on 128 x 128 data
    with pytest.raises(VolumeReadError, match="malformed pixel data: it holds 32,768 bytes, "
                       "but Rows 1024 x Columns 1024 .* need 2,097,152: the header does "
                       "not match the data"):
        read_volume(path)


@pytest.mark.slow
def test_sc_rgb_jpeg_reads_in_little_memory():
    """Issue case 18: a 4.4 KB file took 1.4 GB inside GDCM. Its data set is implicit VR
    under an explicit-VR transfer syntax, so GDCM read the text 'DERI' (of ImageType's
    'DERIVED') as a 1.2 GB length. Re-encoded first, it decodes like pydicom does it."""
    path = get_testdata_file("SC_rgb_jpeg.dcm")
    result = peak_rss_of_read(Path(path))
    assert result["error"] is None and result["shape"] == [1, 256, 256, 3]
    assert result["grew_mb"] < 100, result
    vol, notes = read_with_notes(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = pydicom.dcmread(path).pixel_array
    np.testing.assert_array_equal(vol.array[0], expected)
    assert "re-encoded" in notes[0]
    assert "no PixelSpacing" in notes[1]  # secondary capture: true, and said


def test_explicit_data_under_implicit_syntax_is_re_encoded(tmp_path):
    raw = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    path = tmp_path / "mislabelled.dcm"
    path.write_bytes(raw.replace(b"1.2.840.10008.1.2.1\0", b"1.2.840.10008.1.2\0\0\0", 1))
    vol, notes = read_with_notes(path)
    np.testing.assert_array_equal(vol.array, read_volume(get_testdata_file("CT_small.dcm"))
                                  .array)
    assert "re-encoded" in notes[0] and vol.source.files == (str(path.resolve()),)

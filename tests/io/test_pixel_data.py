"""The pixel data check (``io.pixel_data``): what the header announces against what the
file holds, before anything is decoded; quick, in process."""

from __future__ import annotations

import glob
import os
import shutil
import warnings

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate

from napari_unet.io.dicom_header import parse_header
from support.dicom_factory import write_dicom_series


def test_every_sound_file_pydicom_ships_passes_and_its_truncated_one_does_not():
    """pydicom's own test files are the reference: the one pydicom cannot decode for
    lack of bytes (MR_truncated.dcm) is the one flagged."""
    folder = os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files")
    flagged = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in sorted(glob.glob(folder + "/**/*.dcm", recursive=True)):
            _, reason = parse_header(path)
            if reason and "pixel data" in reason:
                flagged[os.path.basename(path)] = reason
    assert list(flagged) == ["MR_truncated.dcm"], flagged
    with pytest.raises(ValueError, match="less than expected"):
        pydicom.dcmread(get_testdata_file("MR_truncated.dcm")).pixel_array  # noqa: B018


@pytest.mark.parametrize(("cut", "expected"), [
    (100, "malformed pixel data: truncated (the file ends 100 bytes short of the 512 bytes "
          "its header announces)"),
    (515, "malformed pixel data: truncated (the file ends inside"),  # in its own header
])
def test_uncompressed_slices_cut_short(tmp_path, cut, expected):
    (path,) = write_dicom_series(np.ones((1, 16, 16)), tmp_path)
    path.write_bytes(path.read_bytes()[:-cut])
    _, reason = parse_header(path)
    assert reason is not None and reason.startswith(expected), reason


def test_compressed_data_cut_inside_a_fragment_or_before_its_delimiter(tmp_path):
    src = get_testdata_file("MR_small_RLE.dcm")
    shutil.copy(src, tmp_path / "a.dcm")
    raw = (tmp_path / "a.dcm").read_bytes()
    delimiter = raw.rindex(b"\xfe\xff\xdd\xe0")  # (FFFE,E0DD); other elements follow it
    for name, data in (("inside.dcm", raw[:delimiter - 1000]),
                       ("delimiter.dcm", raw[:delimiter])):
        (tmp_path / name).write_bytes(data)
    assert parse_header(tmp_path / "a.dcm")[1] is None
    assert "short of a compressed fragment" in parse_header(tmp_path / "inside.dcm")[1]
    assert "ends before its delimiter" in parse_header(tmp_path / "delimiter.dcm")[1]


def test_garbage_compressed_frames_pass_the_check_and_are_left_to_the_decoder(tmp_path):
    """Noise in a well-formed fragment cannot be told without decoding: GDCM decides."""
    ds = pydicom.dcmread(get_testdata_file("JPEG2000.dcm"))
    ds.PixelData = encapsulate([b"\x01" * 200])
    ds.save_as(tmp_path / "j2k.dcm")
    assert parse_header(tmp_path / "j2k.dcm")[1] is None

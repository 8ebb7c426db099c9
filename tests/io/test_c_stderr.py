"""What C libraries print on file descriptor 2 is caught into our messages
(``io.c_stderr``), and a GDCM failure quotes its decoder (issue 25, row 10)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate

from napari_unet.errors import VolumeReadError
from napari_unet.io import read_volume
from napari_unet.io.c_stderr import captured


def test_lines_written_to_fd_2_are_caught_and_fd_2_is_restored():
    with captured() as printed:
        os.write(2, b"Stream too short\nStream too short\nsecond\n")
    assert printed.lines == ["Stream too short", "Stream too short", "second"]
    assert printed.summary() == "Stream too short; second"
    code = ("import os; from napari_unet.io.c_stderr import captured\n"
            "with captured() as c: os.write(2, b'hidden')\n"
            "os.write(2, b'shown:' + c.lines[0].encode())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stderr == "shown:hidden"


@pytest.mark.parametrize("name", ["JPEG2000.dcm", "JPEGLSNearLossless_16.dcm",
                                  "MR_small_RLE.dcm"])
def test_garbage_compressed_data_fails_in_our_words_only(tmp_path, name):
    """In a fresh process, so that fd 2 is what the test reads."""
    ds = pydicom.dcmread(get_testdata_file(name))
    ds.PixelData = encapsulate([np.random.default_rng(2).bytes(200)])
    ds.save_as(tmp_path / name)
    code = ("import sys\nfrom napari_unet.io import read_volume\n"
            f"try:\n    read_volume({str(tmp_path / name)!r})\n"
            "except Exception as e:\n    print(type(e).__name__, e)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.stderr == "", done.stderr
    assert done.stdout.startswith("VolumeReadError ") and name in done.stdout
    assert "SimpleITK/GDCM cannot read the pixel data" in done.stdout


def test_the_decoder_s_words_are_quoted_in_the_error(tmp_path):
    ds = pydicom.dcmread(get_testdata_file("JPEG2000.dcm"))
    ds.PixelData = encapsulate([np.random.default_rng(2).bytes(200)])
    ds.save_as(tmp_path / "j2k.dcm")
    with pytest.raises(VolumeReadError, match="the image decoder said: Expected a SOC marker"):
        read_volume(tmp_path / "j2k.dcm")

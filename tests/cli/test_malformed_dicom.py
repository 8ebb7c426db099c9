"""Malformed DICOM slices and undecodable compressed data through the installed
``napari-unet`` (issue 25, rows 4 and 10): a malformed slice is left out of its series
with a warning naming it, the series fails only when nothing is left; a decoder's raw
lines never reach the console."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate

from support.batch_data import dicom_series, tiny_model
from support.cli_run import console, load_report

pytestmark = pytest.mark.slow  # each runs the installed command; tests/io/ hold quick ones


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("model") / "m.safetensors")


def _rows(path, rows: int) -> None:
    ds = pydicom.dcmread(path)
    ds.Rows = rows
    ds.save_as(path)


def _cut(path, n: int = 500) -> None:
    path.write_bytes(path.read_bytes()[:-n])


def _rle_garbage(path) -> None:
    """Replace an RLE slice's one fragment by random bytes."""
    ds = pydicom.dcmread(path)
    ds.PixelData = encapsulate([np.random.default_rng(0).bytes(300)])
    ds.save_as(path)


def _rle(path) -> None:
    from pydicom.uid import RLELossless

    ds = pydicom.dcmread(path)
    ds.compress(RLELossless)
    ds.save_as(path)


CASES = {
    "pixel data cut short": (_cut, "malformed pixel data: truncated (the file ends 500 bytes "
                                   "short of the 2,560 bytes its header announces)"),
    "Rows larger than its data": (lambda p: _rows(p, 33), "malformed pixel data: it holds "
                                  "2,560 bytes, but Rows 33 x Columns 40"),
    "Rows smaller than its data": (lambda p: _rows(p, 30), "Rows x Columns 30 x 40; the "
                                   "series' other 5 slices are 32 x 40"),
    "compressed data no decoder reads": (_rle_garbage, "GDCM cannot decode its pixel data"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_malformed_slice_is_left_out_of_its_series_with_a_warning(tmp_path, model, case):
    damage, why = CASES[case]
    paths = dicom_series(tmp_path / "in", seed=2, number=4, description="t1")
    if case.startswith("compressed"):
        for p in paths:
            _rle(p)
    damage(paths[3])
    proc = console("predict", tmp_path / "in", "-o", tmp_path / "out", "--model", model,
                   "--no-qc")
    assert proc.returncode == 0, proc.stderr
    (scan,) = load_report(tmp_path / "out")["scans"]
    assert scan["status"] == "ok"
    note = next(w for w in scan["warnings"] if "left out of this series" in w)
    assert f"{paths[3].name} left out of this series (" in note and why in note
    assert f"warning: {scan['name']}: " in proc.stderr and paths[3].name in proc.stderr
    assert any("blank slices stand in" in w for w in scan["warnings"])
    labels = nib.load(tmp_path / "out" / scan["outputs"][0])
    assert labels.shape[2] == len(paths)  # every slice keeps its place


def test_a_series_with_nothing_left_fails_naming_why(tmp_path, model):
    paths = dicom_series(tmp_path / "in", seed=3, number=5, description="t1")
    for p in paths:
        _cut(p)
    proc = console("predict", tmp_path / "in", "-o", tmp_path / "out", "--model", model,
                   "--no-qc")
    assert proc.returncode == 1
    (scan,) = load_report(tmp_path / "out")["scans"]
    assert scan["status"] == "failed" and "malformed pixel data: truncated" in scan["error"]


def _garbage(name: str, folder):
    """pydicom's compressed test file ``name`` with every frame replaced by noise."""
    ds = pydicom.dcmread(get_testdata_file(name))
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    rng = np.random.default_rng(1)
    ds.PixelData = encapsulate([rng.bytes(200) for _ in range(frames)])
    folder.mkdir(exist_ok=True)
    ds.save_as(folder / name)
    return folder / name


def test_compressed_garbage_fails_cleanly_without_decoder_lines_on_stderr(tmp_path, model):
    inputs = [_garbage(n, tmp_path / "in") for n in
              ("JPEG2000.dcm", "JPEGLSNearLossless_16.dcm", "MR_small_RLE.dcm")]
    proc = console("predict", *inputs, "-o", tmp_path / "out", "--model", model, "--no-qc")
    assert proc.returncode == 1 and proc.stdout == ""
    report = load_report(tmp_path / "out")
    assert [e["status"] for e in report["scans"]] == ["failed"] * 3
    lines = proc.stderr.splitlines()
    assert lines[-1].startswith("0 ok, 3 failed, 0 skipped")
    # every line is ours: a scan's failure or warning, or the summary; no decoder's words
    assert all(line.startswith(("failed: ", "warning: ")) for line in lines[:-1]), lines
    assert sum(line.startswith("failed: ") for line in lines) == 3
    j2k = next(e for e in report["scans"] if e["name"].startswith("NM_"))
    assert "SimpleITK/GDCM cannot read the pixel data" in j2k["error"]
    assert "the image decoder said: Expected a SOC marker" in j2k["error"]

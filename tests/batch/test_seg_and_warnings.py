"""A DICOM SEG that cannot be written keeps the NIfTI; assumed geometry is reported."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from support.batch_data import rtdose, series_with_a_gap, tiny_model
from support.cli_run import load_report, run_cli


@pytest.mark.parametrize("fmt", ["both", "dicom-seg"])
def test_a_seg_that_cannot_be_written_keeps_the_labels_as_nifti(tmp_path, fmt):
    folder = rtdose(tmp_path / "in")  # multi-frame RTDOSE: no source for a SEG
    model = tiny_model(tmp_path / "m.safetensors")
    args = ("predict", folder, "-o", tmp_path / "out", "--model", model, "--format", fmt)
    code, log = run_cli(*args)
    assert code == 1
    (e,) = load_report(tmp_path / "out")["scans"]
    labels = f"{e['name']}_labels.nii.gz"
    assert e["status"] == "failed" and e["outputs"] == [labels]
    assert e["error"].startswith("DICOM SEG not written (")
    assert e["error"].endswith(f"the labels are kept as NIfTI ({labels})")
    assert f"failed: {e['name']}: DICOM SEG not written" in log
    data = np.asarray(nib.load(tmp_path / "out" / labels).dataobj)
    assert data.shape == (10, 10, 15) and set(np.unique(data)) <= {0, 1, 2}
    assert not list((tmp_path / "out").glob("*_seg.dcm"))
    code, _ = run_cli(*args)  # not finished: redone, its own NIfTI replaced without complaint
    assert code == 1 and load_report(tmp_path / "out")["scans"][0]["error"] == e["error"]


def test_assumed_geometry_is_a_warning_in_the_report_and_on_stderr(tmp_path):
    folder = series_with_a_gap(tmp_path / "in")
    model = tiny_model(tmp_path / "m.safetensors")
    code, log = run_cli("predict", folder, "-o", tmp_path / "out", "--model", model)
    assert code == 0
    (e,) = load_report(tmp_path / "out")["scans"]
    assert e["status"] == "ok"
    (warning,) = [w for w in e["warnings"] if "missing slice" in w]
    assert warning.startswith(f"{e['name']} (series ")  # named by the scan, not its folder
    assert str(tmp_path) not in warning
    assert f"warning: {e['name']}: {warning}" in log
    assert "1 ok, 0 failed, 0 skipped (1 with warnings)" in log
    assert warning in (tmp_path / "out" / "index.html").read_text()

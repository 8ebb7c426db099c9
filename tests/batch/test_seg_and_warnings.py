"""A DICOM SEG that cannot be written keeps the NIfTI; assumed geometry is reported."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from support.batch_data import dicom_series, rtdose, series_with_a_gap, tiny_model
from support.cli_run import load_report, run_cli


@pytest.mark.parametrize("fmt", ["both", "dicom-seg", "dicom"])
def test_a_seg_the_source_cannot_carry_keeps_the_labels_as_nifti_with_a_warning(tmp_path, fmt):
    """RT Dose is a legacy multi-frame object: no frames a SEG could reference. Nothing
    the user can fix: the scan is ok, exit 0, the labels NIfTI stands in."""
    folder = rtdose(tmp_path / "in")
    model = tiny_model(tmp_path / "m.safetensors")
    args = ("predict", folder, "-o", tmp_path / "out", "--model", model, "--format", fmt)
    code, log = run_cli(*args)
    assert code == 0, log
    (e,) = load_report(tmp_path / "out")["scans"]
    labels = f"{e['name']}_labels.nii.gz"
    assert e["status"] == "ok" and e["outputs"] == [labels] and e["error"] is None
    (warning,) = [w for w in e["warnings"] if w.startswith("DICOM SEG not written (")]
    assert "legacy multi-frame" in warning
    assert warning.endswith(f"the labels are kept as NIfTI ({labels})")
    assert f"warning: {e['name']}: DICOM SEG not written" in log
    assert "1 ok, 0 failed, 0 skipped (1 with warnings)" in log
    data = np.asarray(nib.load(tmp_path / "out" / labels).dataobj)
    assert data.shape == (10, 10, 15) and set(np.unique(data)) <= {0, 1, 2}
    assert not list((tmp_path / "out").glob("*_seg.dcm"))
    code, _ = run_cli(*args)  # finished as far as it can be: resumed
    assert code == 0 and load_report(tmp_path / "out")["scans"][0]["status"] == "skipped"


def test_a_seg_whose_sources_vanished_fails_the_scan_and_keeps_the_labels(tmp_path,
                                                                           monkeypatch):
    """Source files moved away while the model ran: the user can fix that (exit 1)."""
    import shutil

    from napari_unet.batch import scan_job

    folder = tmp_path / "in"
    dicom_series(folder, seed=3, number=4, description="t1")
    model = tiny_model(tmp_path / "m.safetensors")
    real = scan_job._write_outputs

    def sources_moved(*args):
        shutil.move(folder, tmp_path / "moved")
        return real(*args)

    monkeypatch.setattr(scan_job, "_write_outputs", sources_moved)
    code, log = run_cli("predict", folder, "-o", tmp_path / "out", "--model", model,
                        "--format", "dicom")
    assert code == 1
    (e,) = load_report(tmp_path / "out")["scans"]
    labels = f"{e['name']}_labels.nii.gz"
    assert e["status"] == "failed" and e["outputs"] == [labels]
    assert e["error"].startswith("DICOM SEG not written (") and "cannot be read" in e["error"]
    assert f"failed: {e['name']}: DICOM SEG not written" in log


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


def test_a_derived_series_the_source_cannot_carry_keeps_the_denoised_nifti(tmp_path):
    folder = rtdose(tmp_path / "in")
    model = tiny_model(tmp_path / "d.safetensors", "denoise")
    code, log = run_cli("predict", folder, "-o", tmp_path / "out", "--model", model,
                        "--format", "dicom")
    assert code == 0, log
    (e,) = load_report(tmp_path / "out")["scans"]
    kept = f"{e['name']}_denoised.nii.gz"
    assert e["status"] == "ok" and e["outputs"] == [kept]
    (warning,) = [w for w in e["warnings"] if w.startswith("derived DICOM series not written")]
    assert "legacy multi-frame" in warning
    assert warning.endswith(f"the denoised image is kept as NIfTI ({kept})")
    assert nib.load(tmp_path / "out" / kept).shape == (10, 10, 15)

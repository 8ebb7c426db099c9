"""Resume skips a scan only when its outputs are really there: complete, from the same
model and settings (outputs checked by nibabel and gzip, not by napari-unet's reader)."""

from __future__ import annotations

import gzip
import os
import zlib

import nibabel as nib
import numpy as np
import pytest

from support.batch_data import nifti_scan, tiny_model
from support.cli_run import by_name, console, load_report

pytestmark = pytest.mark.slow  # two runs of the installed command


def test_an_output_cut_short_or_a_missing_picture_is_not_taken_as_finished(tmp_path):
    for i, name in enumerate(("cut", "nopic", "edited")):
        nifti_scan(tmp_path / "in" / f"{name}.nii.gz", seed=i)
    model = tiny_model(tmp_path / "seg.safetensors")
    out = tmp_path / "out"
    args = ("predict", tmp_path / "in", "-o", out, "--model", model, "--quiet")
    assert console(*args).returncode == 0

    cut = out / "cut_labels.nii.gz"  # an interrupted copy: the gzip stream ends early
    whole = cut.read_bytes()
    cut.write_bytes(whole[: len(whole) - 12])
    with pytest.raises((EOFError, zlib.error, OSError)):
        gzip.decompress(cut.read_bytes())
    damaged = cut.read_bytes()
    (out / "qc" / "nopic.png").unlink()
    edited = out / "edited_labels.nii.gz"  # a person's correction: whole, and kept
    img = nib.load(edited)
    data = np.asarray(img.dataobj).copy()
    data[0, 0, 0] = 1 if data[0, 0, 0] != 1 else 2
    nib.save(nib.Nifti1Image(data, img.affine, img.header), edited)
    correction = edited.read_bytes()

    proc = console(*args)
    assert proc.returncode == 1, proc.stderr
    scans = by_name(load_report(out))
    assert scans["cut"]["status"] == "failed"  # not skipped as if finished, not replaced
    assert "cut_labels.nii.gz in the output folder was changed after napari-unet wrote it " \
           "and cannot be read whole (cut short?)" in scans["cut"]["error"]
    assert cut.read_bytes() == damaged
    assert scans["nopic"]["status"] == "ok"  # redone: its picture is back
    assert (out / "qc" / "nopic.png").is_file()
    assert nib.load(out / "nopic_labels.nii.gz").shape == nib.load(
        tmp_path / "in" / "nopic.nii.gz").shape
    assert scans["edited"]["status"] == "skipped"
    assert edited.read_bytes() == correction
    assert any("edited_labels.nii.gz was changed after napari-unet wrote it" in w
               for w in scans["edited"]["warnings"])

    cut.unlink()  # moved away: the scan is redone
    assert console(*args).returncode == 0
    assert by_name(load_report(out))["cut"]["status"] == "ok"
    assert gzip.decompress(cut.read_bytes())
    assert np.asarray(nib.load(cut).dataobj).shape == (40, 32, 6)


def test_a_dicom_seg_cut_short_is_not_taken_as_finished(tmp_path):
    """A SEG cut before its pixel data still parses (pydicom stops early): not whole."""
    import pydicom

    from support.batch_data import dicom_series

    dicom_series(tmp_path / "dicom" / "t1", seed=0, number=2, description="T1")
    model = tiny_model(tmp_path / "seg.safetensors")
    out = tmp_path / "out"
    args = ("predict", tmp_path / "dicom", "-o", out, "--model", model, "--format", "both",
            "--no-qc")
    assert console(*args).returncode == 0
    (seg,) = out.glob("*_seg.dcm")
    whole = seg.read_bytes()
    seg.write_bytes(whole[: len(whole) // 2])
    assert "PixelData" not in pydicom.dcmread(seg)
    proc = console(*args)
    assert proc.returncode == 1
    (entry,) = load_report(out)["scans"]
    assert entry["status"] == "failed" and "cannot be read whole (cut short?)" in entry["error"]
    assert seg.read_bytes() == whole[: len(whole) // 2]


def test_a_rerun_that_asks_for_pictures_makes_them(tmp_path):
    """After a run with --no-qc, the same command without it skipped every scan and the
    QC page had no picture to show."""
    from PIL import Image

    nifti_scan(tmp_path / "in" / "one.nii.gz")
    model = tiny_model(tmp_path / "seg.safetensors")
    out = tmp_path / "out"
    args = ("predict", tmp_path / "in", "-o", out, "--model", model, "--quiet")
    assert console(*args, "--no-qc").returncode == 0
    assert not (out / "qc" / "one.png").exists()
    assert console(*args).returncode == 0
    entry = by_name(load_report(out))["one"]
    assert entry["status"] == "ok" and entry["qc"] == "qc/one.png"
    with Image.open(out / "qc" / "one.png") as picture:
        picture.verify()
    assert 'src="qc/one.png"' in (out / "index.html").read_text()
    assert console(*args).returncode == 0  # now it is finished
    assert by_name(load_report(out))["one"]["status"] == "skipped"
    os.utime(out / "one_labels.nii.gz", ns=(1, 1))  # touched, not changed: read, and kept
    assert console(*args).returncode == 0
    entry = by_name(load_report(out))["one"]
    assert entry["status"] == "skipped" and entry["warnings"] == []


def test_a_dicom_series_whose_slices_changed_is_redone(tmp_path):
    """A series still arriving at the first run (a PACS transfer): the rerun skipped it,
    keeping labels of 5 of its 6 slices."""
    import shutil

    from support.batch_data import dicom_series

    files = dicom_series(tmp_path / "dicom" / "t1", seed=0, number=2, description="T1")
    held = tmp_path / "held.dcm"
    shutil.move(files[-1], held)
    model = tiny_model(tmp_path / "seg.safetensors")
    out = tmp_path / "out"
    args = ("predict", tmp_path / "dicom", "-o", out, "--model", model, "--no-qc", "--quiet")
    assert console(*args).returncode == 0
    (labels,) = out.glob("*_labels.nii.gz")
    assert nib.load(labels).shape[2] == len(files) - 1
    shutil.move(held, files[-1])  # the last slice arrives
    assert console(*args).returncode == 0
    (entry,) = load_report(out)["scans"]
    assert entry["status"] == "ok"
    assert nib.load(out / entry["outputs"][0]).shape[2] == len(files)
    assert console(*args).returncode == 0
    assert load_report(out)["scans"][0]["status"] == "skipped"

"""``napari-unet predict`` on hostile input: corrupt DICOM slices, unsupported formats,
files given twice, usage errors that must leave nothing behind, earlier runs' entries."""

from __future__ import annotations

import os
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from support.batch_data import dicom_series, nifti_scan, tiny_model
from support.cli_run import by_name, console, load_report, run_cli


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("model") / "m.safetensors")


def test_a_corrupt_slice_fails_on_its_own_and_its_series_says_it_may_miss_it(tmp_path, model):
    """A slice that keeps its 'DICM' preamble but holds junk after it is unreadable, not a
    non-image object; the series read without it warns of the gap (never silent)."""
    paths = dicom_series(tmp_path / "in", seed=3, number=1, description="t1")
    paths[2].write_bytes(paths[2].read_bytes()[:132] + b"\x01" * 200)
    code, log = run_cli("predict", tmp_path / "in", "-o", tmp_path / "out", "--model", model)
    assert code == 1
    scans = by_name(load_report(tmp_path / "out"))
    bad = scans[paths[2].stem]
    assert bad["status"] == "failed" and bad["reason"] is None
    assert bad["error"] == (f"{paths[2].stem}: unreadable DICOM file: it has a DICOM preamble "
                            "('DICM') but no readable tag after it (corrupt)")
    assert f"failed: {bad['error']}\n" in log  # the error names the scan: once, not twice
    assert f"{paths[2].stem}: {paths[2].stem}" not in log
    (series,) = [e for e in scans.values() if e["name"].startswith("MR_s001_t1_")]
    assert series["status"] == "ok"
    assert any(f"{paths[2].name} beside this series could not be read" in w
               for w in series["warnings"])
    assert any("missing slice(s)" in w for w in series["warnings"])
    assert "non-image" not in log and "0 skipped" in log


def test_a_slice_without_pixel_data_is_left_out_named_so_not_truncated(tmp_path, model):
    """A malformed slice is left out of its series with a warning naming it (README)."""
    import pydicom

    paths = dicom_series(tmp_path / "in", seed=4, number=1, description="t1")
    ds = pydicom.dcmread(paths[3])
    del ds.PixelData
    ds.save_as(paths[3])
    code, log = run_cli("predict", tmp_path / "in", "-o", tmp_path / "out", "--model", model)
    assert code == 0, log
    (e,) = load_report(tmp_path / "out")["scans"]
    assert e["status"] == "ok"
    note = (f"{paths[3].name} left out of this series (malformed pixel data: none at all (the "
            "header describes an image but the file has no PixelData element))")
    assert any(note in w for w in e["warnings"]) and "truncated" not in log
    assert f"warning: {e['name']}: " in log and note in log


@pytest.mark.parametrize(("suffix", "what"), [(".mgz", "FreeSurfer MGH/MGZ"),
                                              (".img", "Analyze 7.5 (.hdr/.img)")])
def test_an_unsupported_format_is_named_in_the_error(tmp_path, model, suffix, what):
    data = np.ones((8, 8, 4), np.float32)
    if suffix == ".mgz":
        nib.save(nib.MGHImage(data, np.eye(4)), tmp_path / "brain.mgz")
    else:
        nib.save(nib.AnalyzeImage(data, np.eye(4)), tmp_path / "brain.img")
    code, log = run_cli("predict", tmp_path / f"brain{suffix}", "-o", tmp_path / "out",
                        "--model", model)
    assert code == 1
    (e,) = load_report(tmp_path / "out")["scans"]
    assert e["error"] == (f"brain: {what} files are not supported; napari-unet reads NIfTI "
                          "(.nii, .nii.gz) and DICOM: convert it to NIfTI first.")
    assert "not a DICOM file" not in log


def test_a_pytorch_file_as_model_points_to_napari_unet_import(tmp_path):
    import torch

    scan = nifti_scan(tmp_path / "scan.nii.gz")
    weights = tmp_path / "unet.pth"
    torch.save({"inc.conv.conv.0.weight": torch.zeros(4, 1, 3, 3)}, weights)
    code, log = run_cli("predict", scan, "-o", tmp_path / "out", "--model", weights)
    assert code == 2 and len(log.splitlines()) == 1
    assert log == (f"napari-unet predict: error: {weights}: a PyTorch weights file, not a "
                   "napari-unet model (.safetensors); convert it with: napari-unet import "
                   f"{weights} -o model.safetensors --task segment|denoise --in-channels C\n")
    assert not (tmp_path / "out").exists()


def test_a_file_given_twice_or_through_a_link_is_predicted_once(tmp_path, model):
    scan = nifti_scan(tmp_path / "in" / "head.nii.gz")
    (tmp_path / "link.nii.gz").symlink_to(scan)
    code, log = run_cli("predict", scan, tmp_path / "in", tmp_path / "link.nii.gz", "-o",
                        tmp_path / "out", "--model", model)
    assert code == 0
    (e,) = load_report(tmp_path / "out")["scans"]
    note = ("the same file was given 3 times (directly, in a folder or through a link); "
            "predicted once")
    assert e["name"] == "head" and e["status"] == "ok" and e["warnings"] == [note]
    assert log.count(note) == 1 and "1 ok, 0 failed, 0 skipped (1 with warnings)" in log


@pytest.mark.slow  # a run of the installed command
def test_a_hard_link_is_the_same_scan_predicted_once(tmp_path, model):
    """A hard link (the same file under another name) was predicted twice."""
    scans = tmp_path / "in"
    nifti_scan(scans / "a.nii.gz", seed=1)
    os.link(scans / "a.nii.gz", scans / "b_hardlink.nii.gz")
    proc = console("predict", scans, "-o", tmp_path / "out", "--model", model, "--no-qc")
    assert proc.returncode == 0, proc.stderr
    (entry,) = load_report(tmp_path / "out")["scans"]
    assert entry["input"] == str(scans / "a.nii.gz") and entry["status"] == "ok"
    assert entry["warnings"] == ["the same file was given 2 times (directly, in a folder or "
                                 "through a link); predicted once"]
    assert [p.name for p in (tmp_path / "out").glob("*.nii.gz")] == ["a_labels.nii.gz"]
    labels = nib.load(tmp_path / "out" / "a_labels.nii.gz")
    assert labels.shape == nib.load(scans / "a.nii.gz").shape


@pytest.mark.slow  # a run of the installed command
def test_names_differing_only_in_case_get_outputs_distinct_on_any_disk(tmp_path, model):
    """``A.nii.gz`` and ``a.nii.gz`` (two folders) got ``A_labels.nii.gz`` and
    ``a_labels.nii.gz``: one file on a case-insensitive disk (macOS, Windows)."""
    upper = nifti_scan(tmp_path / "x" / "A.nii.gz", seed=1)
    lower = nifti_scan(tmp_path / "y" / "a.nii.gz", seed=2, shape=(36, 32, 5))
    proc = console("predict", upper, lower, "-o", tmp_path / "out", "--model", model, "--no-qc")
    assert proc.returncode == 0, proc.stderr
    report = load_report(tmp_path / "out")
    outputs = [e["outputs"][0] for e in report["scans"]]
    assert len({o.casefold() for o in outputs}) == 2
    for entry, rel in zip(report["scans"], outputs, strict=True):
        assert nib.load(tmp_path / "out" / rel).shape == nib.load(entry["input"]).shape


def test_a_series_matching_nothing_is_refused_beside_nifti_inputs(tmp_path, model):
    scan = nifti_scan(tmp_path / "scan.nii.gz")
    dicom_series(tmp_path / "dcm", seed=5, number=1, description="t1")
    message = "napari-unet predict: error: no DICOM series matching --series 1.2.3 found " \
              "in the inputs\n"
    for inputs in ((tmp_path / "dcm",), (scan, tmp_path / "dcm")):
        code, log = run_cli("predict", *inputs, "-o", tmp_path / "out", "--model", model,
                            "--series", "1.2.3")
        assert (code, log) == (2, message)
        assert not (tmp_path / "out").exists()


def test_a_scheduler_address_without_port_is_one_line_and_exit_2_at_once(tmp_path, model):
    scan = nifti_scan(tmp_path / "scan.nii.gz")
    start = time.monotonic()
    proc = console("predict", scan, "-o", tmp_path / "out", "--model", model,
                   "--scheduler", "foo", timeout=60)
    assert time.monotonic() - start < 15  # no 20 s wait on a half-made Dask client
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == ("napari-unet predict: error: --scheduler 'foo' is not a Dask "
                           "scheduler address; expected e.g. tcp://HOST:8786 (schemes: tcp, "
                           "tls, ucx, ws, wss, inproc)\n")
    assert not (tmp_path / "out").exists()


def test_an_earlier_runs_outputs_keep_their_entry_under_another_model(tmp_path, model):
    scan = nifti_scan(tmp_path / "in" / "a.nii.gz")
    denoiser = tiny_model(tmp_path / "d.safetensors", "denoise")
    out = tmp_path / "out"
    assert run_cli("predict", scan, "-o", out, "--model", model, "--quiet")[0] == 0
    for _ in range(2):  # a second run resumes: the earlier entry stays all the same
        assert run_cli("predict", scan, "-o", out, "--model", denoiser, "--quiet")[0] == 0
        report = load_report(out)
        assert [(e["name"], e["outputs"]) for e in report["scans"]] == \
            [("a", ["a_denoised.nii.gz"])]
        (earlier,) = report["earlier_scans"]
        assert (earlier["name"], earlier["outputs"]) == ("a", ["a_labels.nii.gz"])
        assert earlier["model"]["name"] == "tiny-segment" and earlier["input"] == str(scan)
        index = (out / "index.html").read_text()
        assert "from earlier runs into this folder (1)" in index
        assert 'href="a_labels.nii.gz"' in index
    assert run_cli("predict", scan, "-o", out, "--model", model, "--quiet")[0] == 0
    report = load_report(out)  # back to the first model: its entry is current, not earlier
    assert [e["outputs"] for e in report["scans"]] == [["a_labels.nii.gz"]]
    assert [e["outputs"] for e in report["earlier_scans"]] == [["a_denoised.nii.gz"]]


def test_a_label_map_given_as_scan_is_predicted_with_a_warning(tmp_path, model):
    """As the inference widget warns: a label map is rarely what one means to segment."""
    scan = nifti_scan(tmp_path / "in" / "scan.nii.gz")
    img = nib.load(scan)
    labels = (np.asarray(img.dataobj) > 150).astype(np.uint8) * 2
    nib.save(nib.Nifti1Image(labels, img.affine), str(tmp_path / "in" / "mask.nii.gz"))
    code, _ = run_cli("predict", tmp_path / "in", "-o", tmp_path / "out", "--model", model)
    assert code == 0
    scans = by_name(load_report(tmp_path / "out"))
    assert any("looks like a label map" in w for w in scans["mask"]["warnings"])
    assert not any("label map" in w for w in scans["scan"]["warnings"])


def test_a_2d_nifti_gives_a_2d_result_on_the_same_grid(tmp_path, model):
    rng = np.random.default_rng(0)
    affine = np.diag([0.7, 0.8, 3.0, 1.0])
    affine[:3, 3] = (10.0, -5.0, 2.0)
    nib.save(nib.Nifti1Image(rng.normal(100, 20, (40, 36)).astype(np.float32), affine),
             str(tmp_path / "flat.nii.gz"))
    code, _ = run_cli("predict", tmp_path / "flat.nii.gz", "-o", tmp_path / "out", "--model",
                      model)
    assert code == 0
    (result,) = (tmp_path / "out").glob("flat_*.nii.gz")
    out = nib.load(result)
    assert out.shape == (40, 36) and np.allclose(out.affine, affine)


def test_a_series_spread_over_subfolders_is_one_scan(tmp_path, model):
    """PACS exports often split a series over folders: one scan of all its slices, as
    read_volume reads it, never one scan per folder."""
    paths = dicom_series(tmp_path / "in", seed=4, number=2, description="split")
    for k, path in enumerate(paths):
        sub = tmp_path / "in" / f"part{k % 3}" / ("deeper" if k % 2 else "")
        sub.mkdir(parents=True, exist_ok=True)
        path.rename(sub / path.name)
    code, _ = run_cli("predict", tmp_path / "in", "-o", tmp_path / "out", "--model", model)
    assert code == 0
    (scan,) = load_report(tmp_path / "out")["scans"]
    (labels,) = [o for o in scan["outputs"] if o.endswith(".nii.gz")]
    assert nib.load(tmp_path / "out" / labels).shape[2] == len(paths)


def test_a_series_with_a_missing_slice_gives_outputs_at_each_slice_s_own_place(tmp_path,
                                                                               model):
    """NIfTI and DICOM SEG agree: a blank slice stands in for the missing one, so no slice
    is moved (the mean spacing moved them), and the SEG references only real slices."""
    import pydicom

    from napari_unet.io import read_volume
    from napari_unet.io.labels import read_dicom_seg

    paths = dicom_series(tmp_path / "in", seed=5, number=3, description="gap")
    paths[2].unlink()
    code, _ = run_cli("predict", tmp_path / "in", "-o", tmp_path / "out", "--model", model,
                      "--format", "both")
    assert code == 0
    (scan,) = load_report(tmp_path / "out")["scans"]
    assert any("blank slices stand in" in w for w in scan["warnings"])
    (nifti,) = [o for o in scan["outputs"] if o.endswith(".nii.gz")]
    (seg,) = [o for o in scan["outputs"] if o.endswith(".dcm")]
    out = nib.load(tmp_path / "out" / nifti)
    assert out.shape[2] == len(paths)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ out.affine  # nibabel's RAS -> DICOM's LPS
    kept = [p for p in paths if p.exists()]
    for k in (0, 1, 3, 4, 5):
        ipp = np.asarray(pydicom.dcmread(kept[[0, 1, 3, 4, 5].index(k)]).ImagePositionPatient)
        np.testing.assert_allclose((lps @ [0, 0, k, 1])[:3], ipp, atol=1e-3)
    refs = pydicom.dcmread(tmp_path / "out" / seg).ReferencedSeriesSequence[0]
    assert len(refs.ReferencedInstanceSequence) == len(kept)
    scan_volume = read_volume(tmp_path / "in")
    back = read_dicom_seg(tmp_path / "out" / seg, scan_volume).volume
    assert back.source is scan_volume.source  # placed on the scan's own slices
    labels = np.asarray(out.dataobj).transpose(2, 1, 0)
    np.testing.assert_array_equal(back.array[[0, 1, 3, 4, 5]], labels[[0, 1, 3, 4, 5]])
    assert not back.array[2].any()  # the stand-in slice has no source, so no SEG frame
    assert not labels[2].any()  # nor labels: there is no data there to label


def test_an_earlier_output_folder_under_the_input_is_skipped_not_predicted(tmp_path, model):
    """scans/ -o scans/run1, then scans/ -o scans/run2: run1's labels are results, not scans."""
    nifti_scan(tmp_path / "scans" / "a.nii.gz")
    assert run_cli("predict", tmp_path / "scans", "-o", tmp_path / "scans" / "run1",
                   "--model", model, "--quiet")[0] == 0
    code, log = run_cli("predict", tmp_path / "scans", "-o", tmp_path / "scans" / "run2",
                        "--model", model)
    assert code == 0
    scans = by_name(load_report(tmp_path / "scans" / "run2"))
    assert sorted(scans) == ["a", "run1"]
    assert scans["run1"]["status"] == "skipped" and scans["run1"]["outputs"] == []
    assert scans["run1"]["reason"].startswith("the output folder of another napari-unet run")
    assert f"skipped: run1: {scans['run1']['reason']}" in log
    assert not (tmp_path / "scans" / "run2" / "a_labels_labels.nii.gz").exists()
    code, _ = run_cli("predict", tmp_path / "scans" / "run1", "-o", tmp_path / "seg2",
                      "--model", model, "--quiet")  # given as an input: its files are used
    assert code == 0 and "a_labels" in by_name(load_report(tmp_path / "seg2"))


@pytest.mark.slow
def test_a_dicomdir_is_skipped_as_an_index_and_its_series_predicted(tmp_path, model):
    """A CD or PACS export: a DICOMDIR (no SOP class, no modality of its own) beside the
    series it lists is an index, not a corrupt file that fails the run."""
    import pydicom
    from pydicom.fileset import FileSet

    from support.clean_dicom import write_clean_series
    from support.geometry_cases import dicom_voxel_centres
    from support.nifti_checks import assert_nifti_agrees

    fileset = FileSet()
    for path in write_clean_series(np.full((4, 10, 12), 300.0), tmp_path / "files"):
        fileset.add(pydicom.dcmread(path))
    fileset.write(tmp_path / "cd")
    images = [p for p in (tmp_path / "cd").rglob("*") if p.is_file() and p.name != "DICOMDIR"]
    done = console("predict", tmp_path / "cd", "-o", tmp_path / "out", "--model", model,
                   "--format", "both", "--no-qc")
    assert done.returncode == 0, done.stdout + done.stderr
    series, index = sorted(load_report(tmp_path / "out")["scans"], key=lambda e: e["status"])
    assert index["status"] == "skipped" and "DICOMDIR" in index["reason"], index
    assert series["status"] == "ok" and "corrupt" not in done.stdout + done.stderr
    labels = next(o for o in series["outputs"] if o.endswith(".nii.gz"))
    for image in images:  # dicom_voxel_centres reads *.dcm
        image.rename(image.with_name(image.name + ".dcm"))
    assert_nifti_agrees(tmp_path / "out" / labels, dicom_voxel_centres(tmp_path / "cd"))
    seg = pydicom.dcmread(tmp_path / "out" / next(o for o in series["outputs"]
                                                  if o.endswith("_seg.dcm")))
    referenced = {r.ReferencedSOPInstanceUID
                  for r in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert referenced == {pydicom.dcmread(p).SOPInstanceUID for p in
                          (tmp_path / "cd").rglob("*.dcm")}


@pytest.mark.slow
def test_a_second_copy_of_each_slice_is_left_out_not_taken_for_echoes(tmp_path, model):
    """An export that holds each instance twice (the same SOPInstanceUID: copied twice, or
    a compressed twin): one volume of the instances, each copy named in a warning. It
    failed as 'several slices share a position (echoes or time points ...)'."""
    import shutil

    import pydicom
    from pydicom.uid import RLELossless

    from support.clean_dicom import write_clean_series
    from support.geometry_cases import dicom_voxel_centres
    from support.nifti_checks import assert_nifti_agrees

    paths = write_clean_series(np.full((4, 10, 12), 300.0), tmp_path / "export" / "a")
    shutil.copytree(tmp_path / "export" / "a", tmp_path / "copy")
    for path in (tmp_path / "copy").iterdir():
        ds = pydicom.dcmread(path)
        ds.compress(RLELossless, generate_instance_uid=False)
        ds.save_as(path)
    shutil.move(tmp_path / "copy", tmp_path / "export" / "b")
    done = console("predict", tmp_path / "export", "-o", tmp_path / "out", "--model", model,
                   "--format", "both", "--no-qc")
    assert done.returncode == 0, done.stdout + done.stderr
    (entry,) = load_report(tmp_path / "out")["scans"]
    for path in paths:
        assert any(f"{path.name} left out of this series (a copy of {path.name} (the same "
                   "SOPInstanceUID))" in w for w in entry["warnings"]), entry["warnings"]
    labels = next(o for o in entry["outputs"] if o.endswith(".nii.gz"))
    assert_nifti_agrees(tmp_path / "out" / labels, dicom_voxel_centres(tmp_path / "export" / "a"))
    seg = pydicom.dcmread(tmp_path / "out" / next(o for o in entry["outputs"]
                                                  if o.endswith("_seg.dcm")))
    referenced = [r.ReferencedSOPInstanceUID
                  for r in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence]
    assert sorted(referenced) == sorted(pydicom.dcmread(p).SOPInstanceUID for p in paths)


@pytest.mark.slow  # two runs of the installed command
def test_inputs_and_outputs_in_one_folder_skip_no_subfolder_for_its_name(tmp_path, model):
    """With -o the input folder, a person's scans in a subfolder named qc/ or ending in
    _denoised (a vendor's denoised series) were skipped without a report entry, for the
    folder's name; now only what the folder's manifests record as napari-unet's is left
    out there (a file named like an output beside the inputs stays out, as before)."""
    folder = tmp_path / "scans"
    nifti_scan(folder / "head.nii.gz", seed=1)
    nifti_scan(folder / "head_labels.nii.gz", seed=4)  # ground truth: not an input
    nifti_scan(folder / "qc" / "phantom.nii.gz", seed=2)
    nifti_scan(folder / "T1_denoised" / "vendor.nii.gz", seed=3)
    args = ("predict", folder, "-o", folder, "--model", model)
    proc = console(*args)
    assert proc.returncode == 1, proc.stderr  # head's labels: the ground truth is in the way
    report = load_report(folder)
    assert sorted((e["name"], e["status"]) for e in report["scans"]) == [
        ("head", "failed"), ("phantom", "ok"), ("vendor", "ok")]
    for e in report["scans"][1:]:
        assert nib.load(folder / e["outputs"][0]).shape == nib.load(e["input"]).shape
    (folder / "head_labels.nii.gz").rename(tmp_path / "truth.nii.gz")
    assert console(*args).returncode == 0
    proc = console(*args)  # its own outputs (labels, pictures) are not scans of the rerun
    assert proc.returncode == 0, proc.stderr
    assert sorted((e["name"], e["status"]) for e in load_report(folder)["scans"]) == [
        ("head", "skipped"), ("phantom", "skipped"), ("vendor", "skipped")]


@pytest.mark.slow  # one run of the installed command
def test_scans_in_formats_not_read_are_reported_not_passed_over(tmp_path, model):
    """A folder with an MGZ, an Analyze pair and a MetaImage beside a NIfTI: they were
    left out without a word; each is now a skipped entry naming its format."""
    folder = tmp_path / "scans"
    nifti_scan(folder / "t1.nii.gz", seed=1)
    for name in ("aseg.mgz", "old.hdr", "old.img", "ct.mha"):
        (folder / name).write_bytes(b"\0" * 64)
    (folder / "notes.txt").write_text("not a scan")
    proc = console("predict", folder, "-o", tmp_path / "out", "--model", model)
    assert proc.returncode == 0, proc.stderr
    entries = {Path(e["input"]).name: e for e in load_report(tmp_path / "out")["scans"]}
    assert sorted(entries) == ["aseg.mgz", "ct.mha", "old.hdr", "old.img", "t1.nii.gz"]
    assert entries["t1.nii.gz"]["status"] == "ok"
    for name, fmt in [("aseg.mgz", "MGH/MGZ"), ("old.hdr", "Analyze"), ("old.img", "Analyze"),
                      ("ct.mha", "MetaImage")]:
        assert entries[name]["status"] == "skipped" and fmt in entries[name]["reason"]
        assert "convert it to NIfTI" in entries[name]["reason"]
    assert sorted(p.name for p in (tmp_path / "out").glob("*.nii.gz")) == ["t1_labels.nii.gz"]

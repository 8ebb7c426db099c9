"""``napari-unet predict``: single scans for every task, formats, flags and usage errors."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from napari_unet.cli.main import main
from support.batch_data import dicom_series, nifti_scan, tiny_model
from support.cli_run import by_name, load_report, run_cli


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    return nifti_scan(tmp_path_factory.mktemp("scan") / "head_01.nii.gz", seed=7)


@pytest.mark.parametrize(("kind", "n_classes", "suffix", "dtype", "values"), [
    ("segment", 3, "_labels.nii.gz", np.uint8, {0, 1, 2}),
    ("segment", 1, "_labels.nii.gz", np.uint8, {0, 1}),
    ("denoise", 0, "_denoised.nii.gz", np.float32, None),
])
def test_single_scan_writes_the_task_output_in_the_input_geometry(
        tmp_path, scan, kind, n_classes, suffix, dtype, values):
    model = tiny_model(tmp_path / "m.safetensors", kind, n_classes)
    code, _ = run_cli("predict", scan, "-o", tmp_path / "out", "--model", model, "--quiet")
    assert code == 0
    out = nib.load(tmp_path / "out" / f"head_01{suffix}")
    src = nib.load(scan)
    assert out.shape == src.shape and np.allclose(out.affine, src.affine)
    data = np.asarray(out.dataobj)
    assert data.dtype == dtype
    if values is None:  # denoised intensities on the scan's scale, not [0, 1]
        assert np.isfinite(data).all() and data.max() > 1.5
    else:
        assert set(np.unique(data)) <= values
    report = load_report(tmp_path / "out")
    assert report["model"]["name"] == f"tiny-{kind}"
    assert [(e["status"], e["outputs"]) for e in report["scans"]] == \
        [("ok", [f"head_01{suffix}"])]


def test_labels_carry_the_model_class_names_and_reopen_as_labels(tmp_path, scan):
    from napari_unet.io import read_volume
    from napari_unet.io.labels import nifti_label_map

    model = tiny_model(tmp_path / "m.safetensors", "segment", 3)
    assert run_cli("predict", scan, "-o", tmp_path / "out", "--model", model, "--quiet")[0] == 0
    path = tmp_path / "out" / "head_01_labels.nii.gz"
    label_map = nifti_label_map(read_volume(path), path)
    assert label_map is not None and label_map.class_names == ("background", "grey", "white")


def test_probabilities_and_uncertainty_maps(tmp_path, scan):
    model = tiny_model(tmp_path / "m.safetensors")
    code, _ = run_cli("predict", scan, "-o", tmp_path, "--model", model, "--quiet",
                      "--probabilities", "--axis", "2", "--roi", "16", "16",
                      "--batch-size", "3", "--overlap", "0.5")
    assert code == 0
    probs = np.asarray(nib.load(tmp_path / "head_01_probabilities.nii.gz").dataobj)
    unc = np.asarray(nib.load(tmp_path / "head_01_uncertainty.nii.gz").dataobj)
    labels = np.asarray(nib.load(tmp_path / "head_01_labels.nii.gz").dataobj)
    assert probs.shape == (*labels.shape, 3) and probs.dtype == np.float32
    assert np.allclose(probs.sum(-1), 1.0, atol=1e-4)
    assert np.array_equal(probs.argmax(-1), labels)
    assert unc.shape == labels.shape and 0.0 <= unc.min() <= unc.max() <= 1.0
    settings = load_report(tmp_path)["settings"]
    assert settings["axis"] == 2 and settings["roi_size"] == [16, 16]


def test_dicom_seg_and_nifti_for_a_chosen_series(tmp_path):
    import highdicom as hd

    dicom_series(tmp_path / "in", seed=1, number=1, description="first", prefix="a")
    dicom_series(tmp_path / "in", seed=2, number=2, description="second", prefix="b")
    model = tiny_model(tmp_path / "m.safetensors")
    code, _ = run_cli("predict", tmp_path / "in", "-o", tmp_path / "out", "--model", model,
                      "--format", "both", "--series", "1", "--quiet")
    assert code == 0
    (entry,) = load_report(tmp_path / "out")["scans"]
    assert entry["name"].startswith("MR_s002_second_")
    labels_file, seg_file = sorted(entry["outputs"])
    assert labels_file.endswith("_labels.nii.gz") and seg_file.endswith("_seg.dcm")
    labels = np.asarray(nib.load(tmp_path / "out" / labels_file).dataobj)
    seg = hd.seg.segread(tmp_path / "out" / seg_file)
    assert [d.SegmentLabel for d in seg.SegmentSequence] == ["grey", "white"]
    assert labels.shape == (40, 32, 6)


def test_dicom_seg_of_a_nifti_scan_fails_that_scan_only(tmp_path, scan):
    model = tiny_model(tmp_path / "m.safetensors")
    code, log = run_cli("predict", scan, "-o", tmp_path / "out", "--model", model,
                        "--format", "dicom-seg")
    assert code == 1
    entry = by_name(load_report(tmp_path / "out"))["head_01"]
    assert entry["status"] == "failed" and "DICOM SEG output needs DICOM input" in entry["error"]
    assert "failed: head_01" in log and "0 ok, 1 failed, 0 skipped" in log


@pytest.mark.parametrize("case", ["missing model", "corrupt model", "missing input",
                                  "no scans", "workers and scheduler", "denoise as seg"])
def test_usage_errors_exit_2_with_a_clear_message(tmp_path, scan, case):
    model = tiny_model(tmp_path / "m.safetensors")
    args = {"input": scan, "model": model, "extra": ()}
    if case == "missing model":
        args["model"] = tmp_path / "nope.safetensors"
    elif case == "corrupt model":
        args["model"] = tmp_path / "bad.safetensors"
        args["model"].write_bytes(b"\x08" + b"\0" * 7 + b"{}")
    elif case == "missing input":
        args["input"] = tmp_path / "missing.nii.gz"
    elif case == "no scans":
        (tmp_path / "empty").mkdir()
        args["input"] = tmp_path / "empty"
    elif case == "workers and scheduler":
        args["extra"] = ("--workers", "2", "--scheduler", "tcp://127.0.0.1:1")
    else:
        args["model"] = tiny_model(tmp_path / "d.safetensors", "denoise")
        args["extra"] = ("--format", "dicom-seg")
    out = tmp_path / "out"
    code, log = run_cli("predict", args["input"], "-o", out, "--model", args["model"],
                        *args["extra"])
    assert code == 2
    assert log.startswith("napari-unet predict: error: ") and len(log.splitlines()) >= 1
    if case in ("missing model", "missing input", "corrupt model"):
        name = args["model"] if "model" in case else args["input"]
        assert str(name) in log
    assert not out.exists()  # a command refused before any work creates nothing


def test_bad_flags_are_usage_errors(tmp_path, scan, capsys):
    for bad in (["--workers", "0"], ["--axis", "3"], ["--axis", "transverse"],
                ["--format", "png"], ["--roi", "8"]):
        with pytest.raises(SystemExit) as exc:
            main(["predict", str(scan), "-o", str(tmp_path), "--model", "x", *bad])
        assert exc.value.code == 2
        err = capsys.readouterr().err  # the one-line rule, not argparse's usage text
        assert err.startswith("napari-unet predict: error: argument ") and \
            err.endswith(" (see napari-unet predict --help)\n") and err.count("\n") == 1


def test_progress_bar_shows_counts_and_quiet_silences_it(tmp_path, scan):
    """A terminal gets a bar with counts; a log file one plain line per scan."""
    model = tiny_model(tmp_path / "m.safetensors")
    code, log = run_cli("predict", scan, "-o", tmp_path / "log", "--model", model)
    assert code == 0 and "ok: head_01\n" in log and "\r" not in log
    code, log = run_cli("predict", scan, "-o", tmp_path / "a", "--model", model, terminal=True)
    assert code == 0 and "ok=1" in log and "failed=0" in log and "head_01" in log
    code, log = run_cli("predict", scan, "-o", tmp_path / "b", "--model", model, "--quiet")
    assert code == 0 and log == ""
    assert json.loads((tmp_path / "b" / "report.json").read_text())["counts"]["ok"] == 1


def test_help_describes_outputs_and_exit_codes(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["predict", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--workers", "--scheduler", "--format", "--probabilities", "_labels.nii.gz",
                 "report.json", "exit codes"):
        assert flag in text


def test_slices_are_chosen_by_plane_name(tmp_path, scan):
    model = tiny_model(tmp_path / "m.safetensors")
    code, _ = run_cli("predict", scan, "-o", tmp_path / "out", "--model", model, "--axis",
                      "coronal", "--quiet")
    report = load_report(tmp_path / "out")
    assert code == 0 and report["settings"]["axis"] == "coronal"


@pytest.mark.parametrize("flags", [[], ["--native-spacing"]])
def test_a_model_with_a_pixel_spacing_writes_labels_on_the_scan_grid(tmp_path, scan, flags):
    import torch

    from napari_unet.model.checkpoint import Model
    from napari_unet.model.tasks import make_task

    torch.manual_seed(0)
    model = Model.new(make_task("segment", n_classes=2), base=4, patch_size=(32, 48),
                      name="tiny-1mm", pixel_spacing=(1.0, 1.0))
    path = model.save(tmp_path / "m.safetensors")
    code, _ = run_cli("predict", scan, "-o", tmp_path / "out", "--model", path, "--quiet",
                      *flags)
    out, src = nib.load(tmp_path / "out" / "head_01_labels.nii.gz"), nib.load(scan)
    assert code == 0 and out.shape == src.shape and np.allclose(out.affine, src.affine)
    assert load_report(tmp_path / "out")["settings"]["resample"] is not bool(flags)
    code, text = run_cli("info", path)
    assert code == 0 and "pixel spacing: 1 x 1 mm (slices are resampled to it)" in text

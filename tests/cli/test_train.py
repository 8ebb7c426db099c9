"""``napari-unet train`` end to end on tiny NIfTI files written by nibabel."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_unet.cli.main import main
from napari_unet.io.class_codes import class_codes_from_texts, palette_rgb
from napari_unet.model.checkpoint import load_model
from support.synthetic import blobs, smooth_volume

TINY = ["--base", "4", "--patch", "32", "32", "--batch-size", "4", "-q"]


def _nifti(path, array, zooms=(1.0, 1.0, 1.0)):
    # nibabel stores x fastest; the reader gives arrays slices-first, i.e. reversed axes
    affine = np.diag([*zooms, 1.0])
    nib.save(nib.Nifti1Image(np.ascontiguousarray(array.T), affine), str(path))
    return str(path)


@pytest.fixture
def scans(tmp_path):
    img, lab = blobs(20)
    return (_nifti(tmp_path / "scan.nii.gz", img),
            _nifti(tmp_path / "scan_labels.nii.gz", lab.astype(np.uint8)))


def test_train_segmentation_writes_a_model(tmp_path, scans, capsys):
    out = tmp_path / "seg.safetensors"
    hist = tmp_path / "history.json"
    rc = main(["train", "--task", "segment", "--images", scans[0], "--labels", scans[1],
               "--classes", "3", "--iterations", "20", "--seed", "4", "-o", str(out),
               "--history", str(hist), *TINY])
    assert rc == 0
    model = load_model(out, device="cpu")
    assert model.task.n_classes == 3 and model.name == "seg"
    prov = model.meta.provenance
    assert prov["data"] == ["scan.nii.gz"] and prov["iterations"] == 20 and prov["seed"] == 4
    assert json.loads(hist.read_text())["metrics"] == prov["metrics"]
    assert "wrote" in capsys.readouterr().out


def test_train_denoising_with_rician_noise(tmp_path):
    image = _nifti(tmp_path / "clean.nii.gz", smooth_volume(21))
    out = tmp_path / "den.safetensors"
    rc = main(["train", "--task", "denoise", "--images", image, "--noise", "rician",
               "--noise-level", "0.05", "--iterations", "20", "-o", str(out), *TINY])
    assert rc == 0
    noise = load_model(out, device="cpu").meta.provenance["noise"]
    assert noise["model"] == "rician" and noise["level"] == 0.05


def test_errors_leave_no_model_behind(tmp_path, scans, capsys):
    out = tmp_path / "never.safetensors"
    rc = main(["train", "--task", "segment", "--images", scans[0], scans[0], "--labels",
               scans[1], "--iterations", "2", "-o", str(out), *TINY])
    assert rc == 2 and not out.exists()  # mismatched inputs are a usage error
    assert "one label volume per image" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["train", "--task", "segment", "--images", scans[0], "--time-budget", "5",
              "--iterations", "3", "-o", str(out)])
    assert exc.value.code == 2 and not out.exists()


def test_self_supervised_from_init_and_init_is_never_overwritten(tmp_path, capsys):
    clean = smooth_volume(22)
    noisy = clean + np.random.default_rng(0).normal(0, 40, clean.shape).astype(np.float32)
    scan = _nifti(tmp_path / "noisy.nii.gz", noisy)
    first = tmp_path / "n2v.safetensors"
    args = ["train", "--task", "denoise", "--images", scan, "--self-supervised",
            "--iterations", "5", *TINY]
    assert main([*args, "-o", str(first)]) == 0
    assert main([*args, "--init", str(first), "-o", str(first)]) == 2
    assert "that is an input" in capsys.readouterr().err
    second = tmp_path / "n2v_more.safetensors"
    assert main([*args, "--init", str(first), "-o", str(second)]) == 0
    parent = load_model(second, device="cpu").meta.provenance["parent"]
    assert parent["hash"] == load_model(first, device="cpu").hash


def test_option_defaults_come_from_train_settings():
    """The CLI restates no default: each is the TrainSettings field's."""
    from dataclasses import fields

    from napari_unet.cli.main import build_parser
    from napari_unet.training import TrainSettings

    args = build_parser().parse_args(["train", "--task", "segment", "--images", "x", "-o", "y"])
    defaults = {f.name: f.default for f in fields(TrainSettings)}
    for option, field in [("base", "base"), ("batch_size", "batch_size"), ("lr", "lr"),
                          ("val_fraction", "val_fraction"), ("val_gap", "val_gap"),
                          ("seed", "seed"), ("axis", "axis"), ("noise", "noise"),
                          ("precision", "precision"), ("device", "device")]:
        assert getattr(args, option) == defaults[field], option
    assert tuple(args.patch) == defaults["patch_size"]
    assert args.noise_level == [defaults["noise_level"]]


def test_new_options_reach_the_model(tmp_path, scans):
    out = tmp_path / "robust.safetensors"
    rc = main(["train", "--task", "segment", "--images", scans[0], "--labels", scans[1],
               "--iterations", "4", "--domain-randomization", "--precision", "float32",
               "--deterministic", "--val-gap", "1", "--threads", "1", "-o", str(out), *TINY])
    assert rc == 0
    settings = load_model(out, device="cpu").meta.provenance["settings"]
    assert settings["domain_randomization"] and settings["deterministic"]
    assert settings["precision"] == "float32" and settings["val_gap"] == 1


def test_usage_errors_exit_2_with_one_line(tmp_path, scans, capsys):
    out = tmp_path / "never.safetensors"
    for bad in (["--lr", "-1"], ["--lr", "nan"], ["--batch-size", "0"],
                ["--noise-level", "0.1", "0.2", "0.3"], ["--val-gap", "-2"],
                ["--device", "nonsense"], ["--val-block", "6", "2"]):
        rc = main(["train", "--task", "segment", "--images", scans[0], "--labels", scans[1],
                   "--iterations", "1", "-o", str(out), *TINY, *bad])
        err = capsys.readouterr().err
        assert rc == 2 and not out.exists(), bad
        assert err.count("\n") == 1 and "Traceback" not in err, err


def test_a_time_budget_that_is_not_a_number_of_seconds_is_refused(tmp_path, scans, capsys):
    for budget in ("nan", "inf", "0"):
        rc = main(["train", "--task", "segment", "--images", scans[0], "--labels", scans[1],
                   "--time-budget", budget, "-o", str(tmp_path / "m.safetensors"), *TINY])
        err = capsys.readouterr().err
        assert rc == 2 and "time budget must be a number of seconds" in err, err


def test_the_output_never_overwrites_an_input_and_is_checked_before_training(
        tmp_path, scans, capsys):
    """-o naming the scan, the labels, a folder, a scan-like name or an unwritable folder is
    refused at once, naming -o; nothing is written and the inputs stay as they were."""
    before = {p: Path(p).read_bytes() for p in scans}
    (tmp_path / "folder.safetensors").mkdir()
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    cases = {scans[0]: "that is an input", scans[1]: "that is an input",
             tmp_path / "folder.safetensors": "is a folder",
             tmp_path / "model.nii.gz": "the file name must end in .safetensors",
             locked / "m.safetensors": "cannot write in"}
    if os.access(locked, os.W_OK):  # root writes anyway
        del cases[locked / "m.safetensors"]
    for out, why in cases.items():
        rc = main(["train", "--task", "segment", "--images", scans[0], "--labels", scans[1],
                   "--time-budget", "600", "-o", str(out), *TINY])
        err = capsys.readouterr().err
        assert rc == 2 and err.startswith(f"napari-unet train: error: -o {out}: {why}"), err
    assert {p: Path(p).read_bytes() for p in scans} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["scan.nii.gz", "scan_labels.nii.gz", "folder.safetensors", "locked"])


def test_labels_must_lie_on_the_scan_s_voxel_grid(tmp_path, scans, capsys):
    """Same shape is not enough: mirrored, shifted or resampled labels are refused."""
    img, lab = blobs(20)
    flip = np.diag([-1.0, 1, 1, 1])
    flip[0, 3] = img.shape[2] - 1  # the same anatomy, stored mirrored along x
    shifted = np.eye(4)
    shifted[:3, 3] = 50.0
    for affine, why in ((flip, "orientation differs"), (shifted, "origins are"),
                        (np.diag([2.0, 2, 2, 1]), "voxel spacing differs")):
        labels = tmp_path / "moved_labels.nii.gz"
        nib.save(nib.Nifti1Image(np.ascontiguousarray(lab.astype(np.uint8).T), affine),
                 str(labels))
        rc = main(["train", "--task", "segment", "--images", scans[0], "--labels", str(labels),
                   "--iterations", "1", "-o", str(tmp_path / "m.safetensors"), *TINY])
        err = capsys.readouterr().err
        assert rc == 2 and "moved_labels.nii.gz: the labels are not on the voxel grid of " \
            "scan.nii.gz" in err and why in err, err
    assert not (tmp_path / "m.safetensors").exists()


def test_a_scan_given_as_labels_is_refused(tmp_path, scans, capsys):
    """An integer scan of hundreds of grey levels is not a label map of hundreds of classes."""
    img = nib.load(scans[0]).get_fdata()
    grey = np.round(255 * (img - img.min()) / np.ptp(img)).astype(np.int16)
    nib.save(nib.Nifti1Image(grey, nib.load(scans[0]).affine), str(tmp_path / "t1.nii.gz"))
    rc = main(["train", "--task", "segment", "--images", scans[0], "--labels",
               str(tmp_path / "t1.nii.gz"), "--iterations", "1", "-o",
               str(tmp_path / "m.safetensors"), *TINY])
    err = capsys.readouterr().err
    assert rc == 2 and "t1.nii.gz: " in err and "look like a scan, not a label map" in err, err
    assert not (tmp_path / "m.safetensors").exists()


def test_labels_with_nothing_but_background_are_refused(tmp_path, scans, capsys):
    empty = _nifti(tmp_path / "empty_labels.nii.gz", np.zeros(blobs(20)[1].shape, np.uint8))
    rc = main(["train", "--task", "segment", "--images", scans[0], "--labels", empty,
               "--iterations", "1", "-o", str(tmp_path / "m.safetensors"), *TINY])
    err = capsys.readouterr().err
    assert rc == 2 and "empty_labels.nii.gz: the labels hold only background" in err, err


SWAP_X_Z = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], float)


def test_axis_takes_a_plane_found_from_each_scan_s_orientation(tmp_path, scans, capsys):
    """``--axis axial`` slices each scan where its axial slices lie, as ``predict`` does; scans
    that store that plane along different array axes are refused, naming them."""
    img, lab = (np.moveaxis(a, 0, 2) for a in blobs(21))  # axial: the last array axis here
    turned = [tmp_path / "turned.nii.gz", tmp_path / "turned_labels.nii.gz"]
    for path, arr in zip(turned, (img, lab), strict=True):
        nib.save(nib.Nifti1Image(np.ascontiguousarray(arr.T), SWAP_X_Z), str(path))
    for images, labels, axis in ((scans[0], scans[1], 0), (turned[0], turned[1], 2)):
        out = tmp_path / f"axial{axis}.safetensors"
        rc = main(["train", "--task", "segment", "--images", str(images), "--labels",
                   str(labels), "--axis", "axial", "--iterations", "2", "-o", str(out), *TINY])
        assert rc == 0
        model = load_model(out, device="cpu")
        assert model.meta.default_axis == axis == model.meta.provenance["axis"]
    out = tmp_path / "never.safetensors"
    rc = main(["train", "--task", "segment", "--images", scans[0], str(turned[0]), "--labels",
               scans[1], str(turned[1]), "--axis", "axial", "--iterations", "2", "-o",
               str(out), *TINY])
    err = capsys.readouterr().err
    assert rc == 2 and not out.exists()
    assert "array axis 0 in scan.nii.gz; array axis 2 in turned.nii.gz" in err, err
    with pytest.raises(SystemExit) as exc:  # argparse's own usage error
        main(["train", "--task", "segment", "--images", scans[0], "--labels", scans[1],
              "--axis", "oblique", "-o", str(out), *TINY])
    assert exc.value.code == 2 and "invalid choice: 'oblique'" in capsys.readouterr().err


def test_labels_from_a_dicom_seg_or_a_named_nifti_bring_their_class_names(tmp_path, capsys):
    """The label files napari-unet writes (and DICOM SEG from elsewhere) train as they are:
    a SEG lands on the slices of the series it was drawn on, and both keep their names."""
    from napari_unet.io import read_volume, write_dicom_seg, write_volume
    from support.dicom_factory import write_dicom_series

    img, lab = blobs(12)
    write_dicom_series(np.round(img * 100).astype(np.int16), tmp_path / "series",
                       spacing=(2.0, 1.0, 1.0))
    scan = read_volume(tmp_path / "series")
    names = ["background", "core", "rim"]
    codes = class_codes_from_texts(["Neoplasm", "-"], 3)  # a SEG from elsewhere says so
    with pytest.warns(UserWarning, match="2 rim"):
        write_dicom_seg(lab.astype(np.uint8), tmp_path / "seg.dcm", like=scan,
                        class_names=names, class_codes=codes)
    write_volume(lab.astype(np.uint8), tmp_path / "named.nii.gz", like=scan, class_names=names)
    for labels in ("seg.dcm", "named.nii.gz"):
        out = tmp_path / f"{labels}.safetensors"
        rc = main(["train", "--task", "segment", "--images", str(tmp_path / "series"),
                   "--labels", str(tmp_path / labels), "--iterations", "2", "-o", str(out),
                   *TINY])
        assert rc == 0, capsys.readouterr().err
        model = load_model(out, device="cpu")
        assert list(model.task.class_names)[1:] == ["core", "rim"], labels
        if labels == "seg.dcm":  # the SEG's codes come along (not its stand-in "Tissue")
            _, core, rim = model.meta.class_codes
            assert (core.category, core.type) == (codes[1].category, codes[1].type)
            assert np.abs(np.subtract(core.color, palette_rgb(1))).max() <= 1
            assert rim is None
        else:
            assert model.meta.class_codes is None


def test_class_codes_given_when_training_are_kept_and_shown(tmp_path, scans, capsys):
    out = tmp_path / "coded.safetensors"
    rc = main(["train", "--task", "segment", "--images", scans[0], "--labels", scans[1],
               "--classes", "3", "--class-codes", "GrayMatter", "WhiteMatter#FFFFFF",
               "--iterations", "2", "-o", str(out), *TINY])
    assert rc == 0, capsys.readouterr().err
    codes = load_model(out, device="cpu").meta.class_codes
    assert codes[0] is None and codes[1].type.meaning == "Gray Matter"
    assert codes[2].color == (255, 255, 255)
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "1=Anatomical Structure / Gray Matter (SCT 389081007), colour #E69F00" in shown
    assert "2=Anatomical Structure / White Matter (SCT 389080008), colour #FFFFFF" in shown
    for bad, words in ((["Spleeen", "Liver"], "Spleeen: not a segmentation property type"),
                       (["GrayMatter"] * 4, "4 codes for 3 classes")):
        rc = main(["train", "--task", "segment", "--images", scans[0], "--labels", scans[1],
                   "--classes", "3", "--class-codes", *bad, "--iterations", "2", "-o",
                   str(tmp_path / "bad.safetensors"), *TINY])
        err = capsys.readouterr().err
        assert rc == 2 and words in err and not (tmp_path / "bad.safetensors").exists()


@pytest.mark.slow  # 2.5 s or more: CI runs it, the quick tier does not
def test_ctrl_c_saves_the_model_trained_so_far(tmp_path, scans):
    """The installed command, interrupted as a terminal does (SIGINT) after its first
    validation line: exit 130, the model so far in -o, marked as cancelled."""
    import shutil
    import signal
    import subprocess
    import sys

    script = shutil.which("napari-unet", path=os.path.dirname(sys.executable))
    out = tmp_path / "so_far.safetensors"

    def start(path):
        return subprocess.Popen(
            [script, "train", "--task", "segment", "--images", scans[0], "--labels",
             scans[1], "--classes", "3", "--time-budget", "15", "-o", str(path),
             *TINY[:-1]],  # not quiet: the validation lines show that training runs
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))

    proc = start(out)
    lines = []
    for line in proc.stdout:  # a validation line every fifth of the budget
        lines.append(line)
        if line.startswith("iteration"):
            proc.send_signal(signal.SIGINT)
            break
    rest, _ = proc.communicate(timeout=60)
    log = "".join(lines) + rest
    assert proc.returncode == 130, log
    assert "stopping after this iteration to save the model trained so far" in log
    assert f"interrupted: wrote {out}" in log
    prov = load_model(out, device="cpu").meta.provenance
    assert prov["stopped_by"] == "cancelled" and prov["seconds"] < 12  # budget: 15 s

    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_second_ctrl_c_quits_at_once():
    import signal

    from napari_unet.cli.train import _Interrupt

    with _Interrupt() as interrupt:
        os.kill(os.getpid(), signal.SIGINT)
        assert interrupt()  # the first asks training to stop and save
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_all_planes_learns_from_three_planes_and_is_for_segmentation_only(tmp_path, capsys):
    img, lab = blobs(3, shape=(16, 24, 24))
    scan = _nifti(tmp_path / "scan.nii.gz", img)
    labels = _nifti(tmp_path / "scan_labels.nii.gz", lab.astype(np.uint8))
    out = tmp_path / "planes.safetensors"
    rc = main(["train", "--task", "segment", "--images", scan, "--labels", labels,
               "--iterations", "4", "--all-planes", "--val-block", "6", "10", "-o", str(out),
               *TINY])
    assert rc == 0
    model = load_model(out, device="cpu")
    assert model.meta.provenance["settings"]["all_planes"] is True
    assert model.meta.provenance["planes_per_volume"] == [3]
    assert model.meta.default_planes == "all"  # and it predicts along all three
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    info = capsys.readouterr().out
    assert "planes:        all three, class probabilities averaged, each plane weighted" in info
    rc = main(["train", "--task", "denoise", "--images", scan, "--iterations", "2",
               "--all-planes", "-o", str(tmp_path / "den.safetensors"), *TINY])
    assert rc == 2 and not (tmp_path / "den.safetensors").exists()
    assert "all_planes is for segmentation" in capsys.readouterr().err


def test_all_planes_says_which_scans_kept_to_one_plane(tmp_path, capsys):
    """Slices 3 mm apart would show the anatomy stretched in the other planes: the scan is
    learned from its own plane, and the command says so (not only the provenance)."""
    img, lab = blobs(3, shape=(16, 24, 24))
    scan = _nifti(tmp_path / "thick.nii.gz", img, zooms=(1.0, 1.0, 3.0))
    labels = _nifti(tmp_path / "thick_labels.nii.gz", lab.astype(np.uint8), zooms=(1.0, 1.0, 3.0))
    out = tmp_path / "planes.safetensors"
    rc = main(["train", "--task", "segment", "--images", scan, "--labels", labels,
               "--iterations", "2", "--all-planes", "--val-block", "6", "10", "-o", str(out),
               *TINY])
    assert rc == 0
    assert load_model(out, device="cpu").meta.provenance["planes_per_volume"] == [1]
    assert ("note: 1 of 1 scans learned from their main plane only: their voxels are far "
            "from cubic") in capsys.readouterr().out
    rc = main(["predict", scan, "-o", str(tmp_path / "pred"), "--model", str(out)])
    report = json.loads((tmp_path / "pred" / "report.json").read_text())
    assert rc == 0 and report["settings"]["planes"] == "auto"
    assert any("predicted along one plane only" in w for w in report["scans"][0]["warnings"])
    err = capsys.readouterr().err  # the scan named once, not twice
    assert "warning: thick: predicted along one plane only: its voxels (3 x 1 x 1 mm)" in err

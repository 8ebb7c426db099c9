"""Batch over folders: discovery, report, fault isolation, resume after a kill, QC, privacy."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_unet.batch.discover import discover_scans
from napari_unet.batch.naming import dicom_name, output_names
from napari_unet.batch.outdir import STATE_DIR
from napari_unet.batch.privacy import redact
from napari_unet.batch.runner import RESUMED
from support.batch_data import (
    PATIENT_STRINGS,
    all_text,
    dicom_series,
    mixed_folder,
    nifti_scan,
    non_image_dicom,
    tiny_model,
)
from support.cli_run import by_name, hooked_cli, load_report, run_cli

FINAL_PATTERNS = ("_labels.nii.gz", "_denoised.nii.gz", "_seg.dcm", ".png")


def stamps(outdir: Path, names) -> dict[str, tuple[int, int]]:
    return {n: ((outdir / n).stat().st_ino, (outdir / n).stat().st_mtime_ns) for n in names}


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory):
    """One batch over the mixed folder, then a second run over the same output folder."""
    root = tmp_path_factory.mktemp("batch")
    inputs = mixed_folder(root / "in")
    model = tiny_model(root / "seg.safetensors")
    out = root / "out"
    first = run_cli("predict", inputs, "-o", out, "--model", model)
    report1 = load_report(out)
    finished = [o for e in report1["scans"] if e["status"] == "ok" for o in e["outputs"]]
    before = stamps(out, finished)
    second = run_cli("predict", inputs, "-o", out, "--model", model)
    return {"root": root, "inputs": inputs, "out": out, "first": first, "second": second,
            "report1": report1, "report2": load_report(out), "before": before,
            "after": stamps(out, finished)}


def test_mixed_folder_gives_one_entry_per_scan_and_exit_1(mixed_run):
    code, log = mixed_run["first"]
    report = mixed_run["report1"]
    assert code == 1
    scans = by_name(report)
    ok = {n for n, e in scans.items() if e["status"] == "ok"}
    assert {"scan_a", "scan_b", "scan_c"} <= ok
    dicom_ok = sorted(n for n in ok if n.startswith("MR_"))
    assert [n.split("_")[1] for n in dicom_ok] == ["s003", "s007"]  # two series, one each
    assert len(ok) == 5
    skipped = [e for e in scans.values() if e["status"] == "skipped"]
    assert len(skipped) == 1 and "RTSTRUCT" in skipped[0]["reason"]
    failed = {e["input"]: e for e in scans.values() if e["status"] == "failed"}
    assert len(failed) == 3
    for path, e in failed.items():  # unreadable files: the error names the scan, not the path
        if not path.endswith("two_channels.nii.gz"):
            assert path.endswith(("broken.nii.gz", "corrupt.dcm"))
            assert e["error"].startswith(f"{e['name']}: ") and str(mixed_run["inputs"]) not in \
                e["error"]
    # a scan that fails inside predict (2 channels for a 1-channel model) fails alone
    assert "2 channel(s)" in scans["two_channels"]["error"]
    assert not list(mixed_run["out"].glob("two_channels*"))
    assert report["counts"] == {"ok": 5, "failed": 3, "skipped": 1}
    assert report["finished"] is True and report["total"] == 9
    assert report["model"]["hash"].startswith("sha256:")
    assert report["settings"]["format"] == "nifti"
    assert all(e["seconds"] >= 0 for e in report["scans"])
    assert "5 ok, 3 failed, 1 skipped" in log and "failed: two_channels" in log


def test_outputs_are_labels_in_each_scans_geometry(mixed_run):
    out, inputs = mixed_run["out"], mixed_run["inputs"]
    for name, src in [("scan_a", "scan_a.nii.gz"), ("scan_c", "nested/scan_c.nii.gz")]:
        labels, scan = nib.load(out / f"{name}_labels.nii.gz"), nib.load(inputs / src)
        assert labels.shape == scan.shape
        assert np.allclose(labels.affine, scan.affine)
        data = np.asarray(labels.dataobj)
        assert data.dtype == np.uint8 and set(np.unique(data)) <= {0, 1, 2}
    for e in by_name(mixed_run["report1"]).values():
        assert all((out / o).is_file() for o in e["outputs"])
        if e["name"].startswith("MR_"):
            assert nib.load(out / e["outputs"][0]).shape == (40, 32, 6)
    leftovers = [p for p in out.rglob("*") if p.is_file() and STATE_DIR not in p.parts
                 and not p.name.endswith(FINAL_PATTERNS + (".json", ".html"))]
    assert leftovers == []


def test_qc_pictures_and_index_cover_every_scan(mixed_run):
    out = mixed_run["out"]
    index = (out / "index.html").read_text()
    for e in mixed_run["report1"]["scans"]:
        assert e["name"] in index
        if e["status"] == "ok":
            png = out / e["qc"]
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f'src="{e["qc"]}"' in index
        if e["error"]:
            assert e["error"].split(":")[0] in index


def test_no_patient_data_in_names_reports_or_logs(mixed_run):
    text = all_text(mixed_run["out"])
    logs = mixed_run["first"][1] + mixed_run["second"][1]
    for s in PATIENT_STRINGS:
        assert s not in text, f"{s!r} leaked into the output folder"
        assert s not in logs, f"{s!r} leaked into the log"


def test_second_run_skips_finished_scans_without_touching_them(mixed_run):
    code, log = mixed_run["second"]
    assert code == 1  # the broken files still fail
    report = mixed_run["report2"]
    assert report["counts"] == {"ok": 0, "failed": 3, "skipped": 6}
    resumed = [e for e in report["scans"] if e["reason"] == RESUMED]
    assert len(resumed) == 5 and all(e["outputs"] for e in resumed)
    assert mixed_run["after"] == mixed_run["before"]  # same inode, same mtime


@pytest.mark.slow  # 2.5 s or more: CI runs it, the quick tier does not
def test_interrupted_run_resumes_without_redoing_or_partial_files(tmp_path):
    inputs = tmp_path / "in"
    for i in range(4):
        nifti_scan(inputs / f"case{i}.nii.gz", seed=i)
    model = tiny_model(tmp_path / "seg.safetensors")
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = hooked_cli("kill", "2", "predict", inputs, "-o", out, "--model", model, "--quiet")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    report = load_report(out)  # still valid JSON after the kill
    assert report["finished"] is False
    assert [e["name"] for e in report["scans"]] == ["case0", "case1"]
    partial = list((out / STATE_DIR / "partial").iterdir())
    assert partial, "the kill came while case2's outputs were being committed"
    assert not any(f.name.startswith("case2") for f in partial)  # never a final-looking name
    assert not (out / "case2_labels.nii.gz").exists()
    done = stamps(out, ["case0_labels.nii.gz", "case1_labels.nii.gz"])

    code, _ = run_cli("predict", inputs, "-o", out, "--model", model, "--quiet")
    assert code == 0
    scans = by_name(load_report(out))
    assert [scans[f"case{i}"]["status"] for i in range(4)] == ["skipped"] * 2 + ["ok"] * 2
    assert stamps(out, ["case0_labels.nii.gz", "case1_labels.nii.gz"]) == done
    assert all((out / f"case{i}_labels.nii.gz").is_file() for i in range(4))
    assert not (out / STATE_DIR / "partial").exists()


def test_changed_settings_or_overwrite_redo_the_scan(tmp_path):
    nifti_scan(tmp_path / "in" / "one.nii.gz")
    model = tiny_model(tmp_path / "seg.safetensors")
    out, args = tmp_path / "out", ("predict", tmp_path / "in", "-o", tmp_path / "out",
                                   "--model", model, "--quiet", "--no-qc")
    assert run_cli(*args)[0] == 0
    first = stamps(out, ["one_labels.nii.gz"])
    for extra in [("--overlap", "0.5"), ("--overlap", "0.5", "--overwrite"),
                  ("--overlap", "0.5", "--planes", "one")]:
        assert run_cli(*args, *extra)[0] == 0
        assert by_name(load_report(out))["one"]["status"] == "ok"
        assert stamps(out, ["one_labels.nii.gz"]) != first
        first = stamps(out, ["one_labels.nii.gz"])
    other = tiny_model(tmp_path / "other.safetensors", seed=1)  # another model: redo too
    assert run_cli(*args[:4], "--model", other, "--quiet", "--no-qc")[0] == 0
    assert by_name(load_report(out))["one"]["status"] == "ok"
    nifti_scan(tmp_path / "in" / "one.nii.gz", seed=5)  # a new scan under the same name
    assert run_cli(*args[:4], "--model", other, "--quiet", "--no-qc")[0] == 0
    assert by_name(load_report(out))["one"]["status"] == "ok"
    assert run_cli(*args[:4], "--model", other, "--quiet", "--no-qc")[0] == 0
    assert by_name(load_report(out))["one"]["status"] == "skipped"


def test_discovery_names_dicom_series_without_patient_data(tmp_path):
    dicom_series(tmp_path / "d", seed=0, number=2, description="Doe^Jane's head / T1")
    non_image_dicom(tmp_path / "d" / "report.dcm", "test-SR.dcm")
    nifti_scan(tmp_path / "a" / "x.nii.gz")
    nifti_scan(tmp_path / "b" / "x.nii.gz")
    nifti_scan(tmp_path / "out" / "old_output.nii.gz")  # the output folder is not input
    found = discover_scans([tmp_path], exclude=tmp_path / "out")
    names = [s.name for s in found.scans]
    assert len(names) == 4 and len(set(names)) == 4  # the two x.nii.gz are told apart
    nifti_scan(tmp_path / "a" / "x_labels.nii.gz")  # outputs written next to the inputs
    same_folder = discover_scans([tmp_path / "a"], exclude=tmp_path / "a").scans
    assert [s.name for s in same_folder] == ["x"]
    series = next(s for s in found.scans if s.series and not s.skip_reason)
    assert series.name.startswith("MR_s002_") and "Jane" not in series.name  # sanitised
    sr = next(s for s in found.scans if s.skip_reason)
    assert "SR" in sr.skip_reason
    assert redact("patient Doe^Jane (PID-12345) Does", found.identifiers) == \
        "patient [redacted] ([redacted]) Does"


def test_series_filter_and_output_name_rules(tmp_path):
    dicom_series(tmp_path, seed=0, number=1, description="a", prefix="a")
    dicom_series(tmp_path, seed=1, number=2, description="b", prefix="b")
    only = discover_scans([tmp_path], series="1").scans
    assert len(only) == 1 and only[0].name.startswith("MR_s002_b_")
    assert dicom_name("CT", None, "", "1.2.3") == dicom_name("CT", "x", None, "1.2.3")
    names = output_names("s", "segment", "both", dicom_input=False, probabilities=True)
    assert set(names.values()) == {"s_labels.nii.gz", "s_probabilities.nii.gz",
                                   "s_uncertainty.nii.gz"}
    assert output_names("s", "denoise", "nifti", False, False) == {"image": "s_denoised.nii.gz"}


@pytest.mark.slow
def test_local_worker_processes_give_the_same_outputs(tmp_path):
    for i in range(2):
        nifti_scan(tmp_path / "in" / f"w{i}.nii.gz", seed=i)
    dicom_series(tmp_path / "in" / "dcm", seed=3, number=5, description="s")
    model = tiny_model(tmp_path / "seg.safetensors")
    common = ("predict", tmp_path / "in", "--model", model, "--quiet", "--no-qc")
    assert run_cli(*common, "-o", tmp_path / "local")[0] == 0
    assert run_cli(*common, "-o", tmp_path / "procs", "--workers", "2")[0] == 0
    local, procs = load_report(tmp_path / "local"), load_report(tmp_path / "procs")
    assert procs["counts"] == local["counts"] == {"ok": 3, "failed": 0, "skipped": 0}
    for e in local["scans"]:
        for o in e["outputs"]:
            a = np.asarray(nib.load(tmp_path / "local" / o).dataobj)
            b = np.asarray(nib.load(tmp_path / "procs" / o).dataobj)
            assert np.array_equal(a, b), o


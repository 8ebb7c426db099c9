"""Paths the operating system refuses (longer than PATH_MAX, unreadable, vanished while
the run goes on) fail their own scan, named without the path; the batch goes on and
report.json is written (issue 25, row 3). Through the installed ``napari-unet``."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from support.batch_data import all_text, nifti_scan, tiny_model
from support.cli_run import by_name, console, load_report
from support.os_conditions import copy_into_deep, deeper_than_path_max, script, unprivileged

SECRET = "Doe_Jane_MRN"
pytestmark = pytest.mark.slow  # each runs the installed command


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("model") / "m.safetensors")


def _no_path_anywhere(out, proc, secret: str) -> None:
    assert secret not in proc.stdout + proc.stderr
    assert secret not in all_text(out)
    assert "Traceback" not in proc.stderr and "please report" not in proc.stderr


def test_a_path_longer_than_path_max_fails_alone_without_its_path(tmp_path, model):
    root = tmp_path / "in"
    good = nifti_scan(root / "good.nii.gz")
    folder = f"{SECRET}_" + "x" * 200
    deep = deeper_than_path_max(root, folder)
    # a file the OS can list but not open by name, and a folder below it it cannot list
    shallow = deep.parents[0]
    copy_into_deep(root, shallow, good, "y" * 200 + ".nii.gz")
    copy_into_deep(root, deep, good, "deepest.nii.gz")
    out = tmp_path / "out"
    proc = console("predict", root, "-o", out, "--model", model, "--no-input-paths")
    assert proc.returncode == 1, proc.stderr
    scans = load_report(out)["scans"]
    assert {e["status"] for e in scans} == {"ok", "failed"}
    assert by_name({"scans": scans})["good"]["status"] == "ok"
    failed = [e for e in scans if e["status"] == "failed"]
    assert failed and all(e["input"] is None for e in scans)
    for e in failed:
        assert e["error"].endswith("the path is longer than the operating system allows "
                                   "(ENAMETOOLONG); move or rename it to a shorter path")
        assert f"failed: {e['name']}: {e['error']}" in proc.stderr
    _no_path_anywhere(out, proc, SECRET)


def test_unreadable_files_and_folders_fail_alone(tmp_path, model):
    root = tmp_path / "in"
    nifti_scan(root / "good.nii.gz")
    locked_file = nifti_scan(root / "locked.nii.gz", seed=1)
    dicom_like = root / "IM0001"  # no suffix: only its bytes could tell what it is
    dicom_like.write_bytes(b"\0" * 128 + b"DICM")
    locked_folder = root / f"{SECRET}_folder"
    nifti_scan(locked_folder / "inside.nii.gz", seed=2)
    for path in (locked_file, dicom_like, locked_folder):
        path.chmod(0)
    out = tmp_path / "out"
    cmd = unprivileged([script(), "predict", str(root), "-o", str(out), "--model", str(model),
                        "--no-input-paths"])
    if cmd is None:
        pytest.skip("permissions do not bind here (root without user namespaces)")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    finally:
        for path in (locked_file, dicom_like, locked_folder):
            path.chmod(0o755)
    assert proc.returncode == 1, proc.stderr
    scans = by_name(load_report(out))
    assert scans["good"]["status"] == "ok"
    denied = "permission denied (EACCES); check the permissions, or choose another folder"
    assert scans["locked"]["error"] == f"this file cannot be read: {denied}"
    assert scans["IM0001"]["error"] == f"this file cannot be read: {denied}"
    (folder,) = [e for n, e in scans.items() if n.startswith("folder_")]
    assert folder["status"] == "failed"
    assert folder["error"] == f"this folder cannot be read: {denied}"
    _no_path_anywhere(out, proc, SECRET)


def test_a_scan_removed_while_the_run_goes_on_fails_alone(tmp_path, model):
    """The input vanishes between discovery and reading (the run waits at the first
    scan's commit, and the second scan is removed meanwhile)."""
    from support.cli_run import hooked_cli

    nifti_scan(tmp_path / "in" / "a.nii.gz")
    gone = nifti_scan(tmp_path / "in" / "b.nii.gz", seed=1)
    ready, go, out = tmp_path / "ready", tmp_path / "go", tmp_path / "out"
    proc = subprocess.Popen(hooked_cli("wait", f"{ready}|{go}", "predict", tmp_path / "in",
                                       "-o", out, "--model", model, "--no-input-paths"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        end = time.monotonic() + 180
        while not ready.exists():
            assert proc.poll() is None and time.monotonic() < end, proc.communicate()
            time.sleep(0.05)
        gone.unlink()
        ready.unlink()
        go.touch()
        _, err = proc.communicate(timeout=180)
    finally:
        proc.kill()
    assert proc.returncode == 1, err
    scans = by_name(load_report(out))
    assert scans["a"]["status"] == "ok" and scans["b"]["status"] == "failed"
    assert scans["b"]["error"] == ("b: no such file or folder (removed, or renamed, since it "
                                   "was given?).")
    assert str(tmp_path / "in") not in err + scans["b"]["error"]


def test_an_input_path_longer_than_path_max_on_the_command_line_is_a_usage_error(
        tmp_path, model):
    too_long = tmp_path / ("z" * 250) / ("z" * 250)
    while len(str(too_long)) <= os.pathconf("/", "PC_PATH_MAX"):
        too_long = too_long / ("z" * 250)
    proc = console("predict", too_long, "-o", tmp_path / "out", "--model", model)
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1
    assert "the path is longer than the operating system allows (ENAMETOOLONG)" in proc.stderr
    assert not (tmp_path / "out").exists()

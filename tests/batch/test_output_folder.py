"""What a batch may touch in its output folder: only files it wrote and recorded, one run
at a time, never through a link; a folder it cannot use fails at once (issue 11, 1-4, 9)."""

from __future__ import annotations

import errno
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_unet.batch.outdir import STATE_DIR
from support.batch_data import nifti_scan, tiny_model
from support.cli_run import by_name, console, hooked_cli, load_report, run_cli


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("model") / "seg.safetensors")


def snapshot(folder: Path) -> dict[str, bytes | str]:
    """Every path under ``folder`` (links not followed) with its bytes or link target."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        out[rel] = (f"-> {os.readlink(p)}" if p.is_symlink() else
                    p.read_bytes() if p.is_file() else "dir")
    return out


def test_ground_truth_named_like_an_output_is_never_overwritten(tmp_path, model):
    data = tmp_path / "data"  # inputs and outputs in one folder, ground truth beside them
    nifti_scan(data / "scan.nii.gz")
    truth = nifti_scan(data / "scan_labels.nii.gz", seed=9)
    user_picture = data / "qc" / "other.png"
    user_picture.parent.mkdir()
    user_picture.write_bytes(b"a person's picture")
    before = truth.read_bytes()
    for extra in ((), ("--overwrite",)):
        code, log = run_cli("predict", data, "-o", data, "--model", model, *extra)
        assert code == 1
        (e,) = load_report(data)["scans"]  # the ground truth is not taken for an input
        assert e["name"] == "scan" and e["status"] == "failed" and e["outputs"] == []
        assert e["error"] == ("scan_labels.nii.gz in the output folder was not written by "
                              "napari-unet; it is never overwritten: move it away, or choose "
                              "another output folder")
        assert f"failed: scan: {e['error']}" in log
        assert truth.read_bytes() == before
        assert not (data / "qc" / "scan.png").exists()  # failed before predicting
    assert user_picture.read_bytes() == b"a person's picture"


def test_own_outputs_are_replaced_but_an_edited_one_is_kept(tmp_path, model):
    nifti_scan(tmp_path / "in" / "one.nii.gz")
    out = tmp_path / "out"
    args = ("predict", tmp_path / "in", "-o", out, "--model", model, "--quiet")
    assert run_cli(*args)[0] == 0
    labels = out / "one_labels.nii.gz"
    first = labels.stat().st_ino
    assert run_cli(*args, "--overwrite")[0] == 0  # napari-unet's own file: replaced
    assert labels.stat().st_ino != first
    corrected = nib.load(labels)  # a person corrects the labels by hand
    data = np.asarray(corrected.dataobj).copy()
    data[0, 0, 0] = 2 if data[0, 0, 0] != 2 else 1
    nib.save(nib.Nifti1Image(data, corrected.affine, corrected.header), labels)
    edited = labels.read_bytes()
    for extra in (("--overwrite",), ("--overlap", "0.5")):
        code, _ = run_cli(*args, *extra)
        assert code == 1
        error = by_name(load_report(out))["one"]["error"]
        assert "one_labels.nii.gz in the output folder was changed after napari-unet wrote " \
               "it (edited by hand?); it is never overwritten" in error
        assert labels.read_bytes() == edited
    assert run_cli(*args)[0] == 0  # same settings: the finished scan is skipped, edits kept
    assert by_name(load_report(out))["one"]["status"] == "skipped"
    assert labels.read_bytes() == edited


@pytest.mark.parametrize("name", ["report.json", "index.html"])
def test_a_report_or_page_napari_unet_did_not_write_stops_the_run_at_once(
        tmp_path, model, name):
    nifti_scan(tmp_path / "data" / "scan.nii.gz")
    theirs = tmp_path / "data" / name
    theirs.write_text("a person's file\n")
    code, log = run_cli("predict", tmp_path / "data", "-o", tmp_path / "data", "--model", model)
    assert code == 2
    assert log == (f"napari-unet predict: error: {name} in the output folder was not written "
                   "by napari-unet; it is never overwritten: move it away, or choose another "
                   "output folder\n")
    assert theirs.read_text() == "a person's file\n"
    assert not (tmp_path / "data" / "scan_labels.nii.gz").exists()


def test_two_inputs_with_one_stem_never_share_outputs(tmp_path, model):
    a = nifti_scan(tmp_path / "a" / "scan.nii.gz", seed=1)
    b = nifti_scan(tmp_path / "b" / "scan.nii.gz", seed=2)
    out = tmp_path / "out"
    assert run_cli("predict", a, "-o", out, "--model", model, "--quiet")[0] == 0
    first = {p: (out / p).read_bytes() for p in ("scan_labels.nii.gz", "qc/scan.png")}
    assert run_cli("predict", b, "-o", out, "--model", model, "--quiet")[0] == 0
    report = load_report(out)
    (e,) = report["scans"]
    assert e["input"] == str(b) and e["status"] == "ok"
    assert e["name"].startswith("scan_") and e["outputs"] == [f"{e['name']}_labels.nii.gz"]
    assert {p: (out / p).read_bytes() for p in first} == first  # a's results untouched
    (earlier,) = report["earlier_scans"]  # and a's report entry kept
    assert earlier["input"] == str(a) and earlier["outputs"] == ["scan_labels.nii.gz"]
    index = (out / "index.html").read_text()
    assert f'src="{e["qc"]}"' in index and 'src="qc/scan.png"' in index
    # the distinct name is deterministic: each input resumes under its own name
    for path, name in ((b, e["name"]), (a, "scan")):
        assert run_cli("predict", path, "-o", out, "--model", model, "--quiet")[0] == 0
        assert [(x["name"], x["status"]) for x in load_report(out)["scans"]] == \
            [(name, "skipped")]
    both = run_cli("predict", a, b, "-o", tmp_path / "both", "--model", model, "--quiet")
    assert both[0] == 0
    names = [x["name"] for x in load_report(tmp_path / "both")["scans"]]
    assert len(set(names)) == 2 and all(n.startswith("scan_") for n in names)


def _wait_for(path: Path, proc: subprocess.Popen, seconds: float = 180) -> None:
    end = time.monotonic() + seconds
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < end, "the first run never reached its commit"
        time.sleep(0.05)


@pytest.mark.slow
def test_one_run_per_output_folder_and_a_killed_run_leaves_no_lock(tmp_path, model):
    for name in ("one", "two"):
        nifti_scan(tmp_path / "first" / f"{name}.nii.gz", seed=len(name))
    nifti_scan(tmp_path / "second" / "three.nii.gz", seed=3)
    out, ready, go = tmp_path / "out", tmp_path / "ready", tmp_path / "go"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(hooked_cli("wait", f"{ready}|{go}", "predict", tmp_path / "first",
                                        "-o", out, "--model", model, "--quiet"),
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(ready, first)  # the first run is committing its first scan
        code, log = run_cli("predict", tmp_path / "second", "-o", out, "--model", model)
        assert code == 2 and len(log.splitlines()) == 1
        assert log.startswith("napari-unet predict: error: the output folder is in use by "
                              f"another napari-unet run (pid {first.pid} on ")
        go.touch()
        assert first.wait(timeout=180) == 0, first.communicate()
    finally:
        first.kill()
    report = load_report(out)  # the refused run took nothing from the first one
    assert [(e["name"], e["status"]) for e in report["scans"]] == [("one", "ok"), ("two", "ok")]
    assert report["finished"] is True

    ready.unlink()
    go.unlink()
    killed = subprocess.Popen(hooked_cli("wait", f"{ready}|{go}", "predict", tmp_path / "second",
                                         "-o", out, "--model", model, "--quiet"),
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_for(ready, killed)
    killed.kill()  # SIGKILL while holding the lock
    killed.wait()
    code, log = run_cli("predict", tmp_path / "second", "-o", out, "--model", model, "--quiet")
    assert code == 0, log
    report = load_report(out)
    assert [(e["name"], e["status"]) for e in report["scans"]] == [("three", "ok")]
    assert [e["name"] for e in report["earlier_scans"]] == ["one", "two"]


def _holder(pid: int, started: float) -> str:
    import socket

    return json.dumps({"pid": pid, "host": socket.gethostname(), "process_started": started,
                       "since": "2024-01-01T00:00:00+00:00"})


def test_without_flock_a_pid_file_locks_and_a_dead_holder_is_taken_over(
        tmp_path, model, monkeypatch):
    import fcntl

    import psutil

    def no_flock(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_flock)  # as on a mount without flock support
    nifti_scan(tmp_path / "in" / "x.nii.gz")
    out = tmp_path / "out"
    pid_file = out / STATE_DIR / "lock.pid"
    pid_file.parent.mkdir(parents=True)
    me = psutil.Process()
    pid_file.write_text(_holder(me.pid, me.create_time()))  # a live run on this host
    code, log = run_cli("predict", tmp_path / "in", "-o", out, "--model", model, "--quiet")
    assert code == 2 and f"in use by another napari-unet run (pid {me.pid} on " in log
    assert f"delete {STATE_DIR}/lock.pid" in log
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    pid_file.write_text(_holder(int(gone.stdout), 1.0))  # its process has ended
    code, log = run_cli("predict", tmp_path / "in", "-o", out, "--model", model, "--quiet")
    assert code == 0, log
    assert not pid_file.exists()  # released at the end


@pytest.mark.parametrize("link", [".napari-unet", "qc", ".napari-unet/partial",
                                  ".napari-unet/lock", ".napari-unet/x.json"])
def test_nothing_is_read_written_or_deleted_through_a_link_in_the_output_folder(
        tmp_path, model, link):
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "partial").mkdir(parents=True)
    (elsewhere / "partial" / "precious.txt").write_text("keep me")
    (elsewhere / "x.json").write_text('{"status": "done"}')
    nifti_scan(tmp_path / "in" / "x.nii.gz")
    out = tmp_path / "out"
    (out / link).parent.mkdir(parents=True, exist_ok=True)
    target = elsewhere / "x.json" if link.endswith((".json", "lock")) else elsewhere
    (out / link).symlink_to(target)
    before = snapshot(elsewhere)
    code, log = run_cli("predict", tmp_path / "in", "-o", out, "--model", model)
    assert code == 2, log
    assert len(log.splitlines()) == 1 and "never" in log
    assert f"{link} in the output folder is" in log or \
        f"{Path(link).name} in {STATE_DIR} is a symbolic link" in log
    assert snapshot(elsewhere) == before
    assert (out / link).is_symlink()


def test_an_output_name_taken_by_a_link_fails_that_scan_only(tmp_path, model):
    nifti_scan(tmp_path / "in" / "x.nii.gz")
    nifti_scan(tmp_path / "in" / "y.nii.gz", seed=1)
    precious = nifti_scan(tmp_path / "elsewhere" / "precious.nii.gz", seed=4)
    before = precious.read_bytes()
    out = tmp_path / "out"
    out.mkdir()
    (out / "x_labels.nii.gz").symlink_to(precious)
    code, _ = run_cli("predict", tmp_path / "in", "-o", out, "--model", model, "--quiet")
    assert code == 1
    scans = by_name(load_report(out))
    assert scans["y"]["status"] == "ok" and scans["x"]["status"] == "failed"
    assert "x_labels.nii.gz in the output folder is not a regular file" in scans["x"]["error"]
    assert precious.read_bytes() == before and (out / "x_labels.nii.gz").is_symlink()


def _read_only_command(folder: Path, argv: list[str]) -> list[str] | None:
    """``argv`` run with ``folder`` read-only: a read-only bind mount in a private mount
    namespace when root (permissions do not stop root), else the folder's permissions."""
    script = shutil.which("napari-unet", path=os.path.dirname(sys.executable))
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return [script, *argv]
    if not shutil.which("unshare"):
        return None
    probe = subprocess.run(["unshare", "-m", "sh", "-c", f"mount --bind {folder} {folder}"],
                           capture_output=True)
    if probe.returncode != 0:
        return None
    mount = f"mount --bind {folder} {folder} && mount -o remount,ro,bind {folder}"
    return ["unshare", "-m", "sh", "-c", f'{mount} && exec "$0" "$@"', script, *argv]


@pytest.mark.slow
def test_a_read_only_output_folder_fails_before_the_model_is_loaded(tmp_path):
    nifti_scan(tmp_path / "in" / "x.nii.gz")
    out = tmp_path / "readonly"
    out.mkdir()
    missing_model = tmp_path / "no-such-model.safetensors"  # loading it would fail too
    cmd = _read_only_command(out, ["predict", str(tmp_path / "in"), "-o", str(out),
                                   "--model", str(missing_model)])
    if cmd is None:
        pytest.skip("no way to make a read-only folder here (root without mount namespaces)")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(f"napari-unet predict: error: {out}: cannot write in this "
                                  "output folder (")
    assert len(proc.stderr.splitlines()) == 1 and "Traceback" not in proc.stderr
    assert list(out.iterdir()) == []


@pytest.mark.slow
def test_a_report_that_cannot_be_written_does_not_stop_the_scans(tmp_path, model):
    """A per-file size limit (RLIMIT_FSIZE) makes every report.json write fail for real,
    while the small outputs and manifests still fit."""
    for i in range(3):
        nifti_scan(tmp_path / "in" / f"s{i}.nii.gz", seed=i)
    args = ("predict", tmp_path / "in", "--model", model, "--no-qc", "--quiet")
    assert run_cli(*args, "-o", tmp_path / "reference")[0] == 0
    sizes = {p.name: p.stat().st_size for p in (tmp_path / "reference").rglob("*")
             if p.is_file()}
    limit = max(v for k, v in sizes.items() if k != "report.json") + 64
    assert limit < sizes["report.json"]

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    out = tmp_path / "out"
    proc = console(*args, "-o", out, preexec_fn=limit_file_size)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.splitlines()[0] == \
        "napari-unet predict: report.json could not be written (File too large)"
    assert "Traceback" not in proc.stderr and "3 ok, 0 failed, 0 skipped" in proc.stderr
    assert all((out / f"s{i}_labels.nii.gz").is_file() for i in range(3))  # scans went on
    assert not (out / "report.json").exists()
    code, log = run_cli(*args, "-o", out)  # space again: the report is written, nothing redone
    assert code == 0, log
    report = load_report(out)
    assert report["counts"] == {"ok": 0, "failed": 0, "skipped": 3}
    assert report["write_errors"] == []


@pytest.mark.slow  # 2.5 s or more: CI runs it, the quick tier does not
def test_a_bids_datasets_own_derivatives_folder_is_made_and_no_other(tmp_path, model):
    scan = nifti_scan(tmp_path / "in" / "a.nii.gz")
    dataset = tmp_path / "study"
    dataset.mkdir()
    (dataset / "dataset_description.json").write_text('{"Name": "s", "BIDSVersion": "1.10.0"}')
    out = dataset / "derivatives" / "napari-unet"
    assert console("predict", scan, "-o", out, "--model", model, "--no-qc").returncode == 0
    assert (out / "a_labels.nii.gz").is_file()

    elsewhere = tmp_path / "not_a_dataset" / "derivatives" / "napari-unet"
    elsewhere.parent.parent.mkdir()
    refused = console("predict", scan, "-o", elsewhere, "--model", model)
    assert refused.returncode == 2 and "does not exist" in refused.stderr
    assert not elsewhere.parent.exists()


@pytest.mark.slow  # a run of the installed command in a mount namespace
def test_a_scan_whose_last_output_cannot_be_placed_leaves_none_of_them(tmp_path, model):
    """The renames of a scan's outputs stopped at the first refused one (here the QC
    picture: its folder is another file system, EXDEV), leaving the labels in place
    for a scan reported failed; the error named the temporary file."""
    from support.os_conditions import script, with_a_mount_at

    scan = nifti_scan(tmp_path / "in" / "one.nii.gz")
    out = tmp_path / "out"
    cmd = with_a_mount_at(out / "qc", [script(), "predict", str(scan), "-o", str(out),
                                        "--model", str(model)])
    if cmd is None:
        pytest.skip("no tmpfs can be mounted here")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    (entry,) = load_report(out)["scans"]
    assert entry["status"] == "failed" and entry["outputs"] == []
    assert entry["error"] == ("qc/one.png: the path crosses file systems where it may not "
                              "(EXDEV)")
    assert not (out / "one_labels.nii.gz").exists()
    assert [p.name for p in out.iterdir() if p.suffix == ".gz"] == []


def test_state_files_are_opened_without_following_a_link(tmp_path):
    """The flag meant to refuse links when a state file is opened was spelt
    ``os.ONOFOLLOW`` (no such name: 0, links followed), leaving only the lstat checks
    before each open, and a link swapped in between them was followed."""
    from napari_unet.batch.outdir import NOFOLLOW, OutputFolderError, read_text

    assert NOFOLLOW == os.O_NOFOLLOW != 0
    target = tmp_path / "elsewhere.json"
    target.write_text("{}")
    link = tmp_path / "state.json"
    link.symlink_to(target)
    with pytest.raises(OutputFolderError, match="is a symbolic link"):
        read_text(link)

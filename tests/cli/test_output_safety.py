"""One output-safety rule for every command that writes (issue 25): a file napari-unet
did not write is never replaced, folders above -o are never created, a refusal (exit 2)
creates nothing, what the OS refuses is said plainly, usage errors are one line. All
through the installed ``napari-unet`` command."""

from __future__ import annotations

import os
import resource
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from napari_unet.model.checkpoint import load_model
from support.batch_data import nifti_scan, tiny_model
from support.cli_run import console, load_report
from support.os_conditions import on_a_full_disk, script
from support.reference_unets import OriginalUNet
from support.synthetic import blobs

TINY = ["--base", "4", "--patch", "32", "32", "--batch-size", "2", "--iterations", "2", "-q"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    image, labels = blobs(3)
    for name, array in (("scan", image), ("labels", labels.astype(np.uint8))):
        nib.save(nib.Nifti1Image(np.ascontiguousarray(array.T), np.eye(4)),
                 str(root / f"{name}.nii.gz"))
    torch.manual_seed(0)
    torch.save(OriginalUNet(1, 3, base=4).state_dict(), root / "weights.pth")
    return {"scan": root / "scan.nii.gz", "labels": root / "labels.nii.gz",
            "weights": root / "weights.pth", "model": tiny_model(root / "m.safetensors")}


def train_args(data, out) -> list:
    return ["train", "--task", "segment", "--images", data["scan"], "--labels",
            data["labels"], "-o", out, *TINY]


def import_args(data, out) -> list:
    return ["import", data["weights"], "-o", out, "--task", "segment", "--in-channels", "1",
            "--classes", "3"]


@pytest.mark.slow
def test_train_and_import_put_the_model_beside_a_users_file_and_say_so(tmp_path, data):
    mine = tmp_path / "model.safetensors"
    mine.write_bytes(b"a person's own file that happens to have this name\n")
    before = mine.read_bytes()
    for n, args in enumerate((train_args(data, mine), import_args(data, mine)), start=1):
        proc = console(*args)
        assert proc.returncode == 0, proc.stderr
        beside = tmp_path / f"model-{n}.safetensors"
        assert f"{beside}" in proc.stdout and proc.stdout.startswith(f"wrote {beside}: ")
        assert (f"note: {mine} exists and is never replaced (--overwrite replaces a model "
                f"napari-unet wrote); the new file is {beside}") in proc.stderr
        assert load_model(beside, device="cpu").task.n_classes == 3
        assert mine.read_bytes() == before
    # --overwrite replaces a model napari-unet wrote, and never anything else
    proc = console(*import_args(data, tmp_path / "model-1.safetensors"), "--overwrite",
                   "--name", "replaced")
    assert proc.returncode == 0 and "note:" not in proc.stderr, proc.stderr
    assert load_model(tmp_path / "model-1.safetensors", device="cpu").name == "replaced"
    proc = console(*import_args(data, mine), "--overwrite", "--name", "third")
    assert proc.returncode == 0
    assert "it is not a napari-unet model file, so --overwrite does not replace it" in \
        proc.stderr and mine.read_bytes() == before
    assert load_model(tmp_path / "model-3.safetensors", device="cpu").name == "third"


@pytest.mark.slow
def test_history_beside_a_users_file_too(tmp_path, data):
    notes = tmp_path / "history.json"
    notes.write_text("my notes\n")
    proc = console(*train_args(data, tmp_path / "m.safetensors"), "--history", notes)
    assert proc.returncode == 0, proc.stderr
    assert notes.read_text() == "my notes\n"
    assert '"history"' in (tmp_path / "history-1.json").read_text()
    assert f"the new file is {tmp_path / 'history-1.json'}" in proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("command", ["train", "import", "predict"])
def test_a_folder_above_the_output_is_never_created(tmp_path, data, command):
    missing = tmp_path / "no_such_folder"
    out = missing / ("results" if command == "predict" else "x.safetensors")
    args = {"train": train_args(data, out), "import": import_args(data, out),
            "predict": ["predict", data["scan"], "-o", out, "--model", data["model"]]}
    proc = console(*args[command])
    assert proc.returncode == 2 and proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    assert f"the folder {missing} does not exist" in proc.stderr
    assert "never creates the folders above" in proc.stderr or \
        "never the folders above it" in proc.stderr
    assert not missing.exists()


@pytest.mark.slow
def test_a_pickle_named_safetensors_is_what_predict_says_and_import_takes_it(tmp_path, data):
    renamed = tmp_path / "weights.safetensors"
    renamed.write_bytes(data["weights"].read_bytes())  # torch.save's zip, another name
    proc = console("predict", data["scan"], "-o", tmp_path / "out", "--model", renamed)
    assert proc.returncode == 2 and not (tmp_path / "out").exists()
    assert "a PyTorch weights file, not a napari-unet model" in proc.stderr
    advice = proc.stderr.split("convert it with: ")[1].strip()
    assert advice.startswith(f"napari-unet import {renamed} -o model.safetensors ")
    proc = console(*import_args(data, tmp_path / "model.safetensors")[:1], renamed,
                   *import_args(data, tmp_path / "model.safetensors")[2:])
    assert proc.returncode == 0, proc.stderr
    reference = OriginalUNet(1, 3, base=4)
    reference.load_state_dict(torch.load(data["weights"], weights_only=True))
    model = load_model(tmp_path / "model.safetensors", device="cpu")
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.net.eval()(x), reference.eval()(x), atol=1e-4,
                                   rtol=1e-4)
    proc = console("predict", data["scan"], "-o", tmp_path / "out", "--model",
                   tmp_path / "model.safetensors", "--quiet")
    assert proc.returncode == 0, proc.stderr


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_carries_code_is_refused_by_import_and_never_run(tmp_path, data):
    marker = tmp_path / "code_ran"
    evil = tmp_path / "evil.safetensors"
    torch.save({"inc.conv.conv.0.weight": torch.zeros(4, 1, 3, 3), "x": _Payload(marker)},
               evil)
    proc = console(*import_args(data, tmp_path / "m.safetensors")[:1], evil,
                   *import_args(data, tmp_path / "m.safetensors")[2:])
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1
    assert "refused: the file holds more than plain tensors" in proc.stderr
    assert not marker.exists() and not (tmp_path / "m.safetensors").exists()


SLOW = pytest.mark.slow  # each case starts the installed command (seconds)


@pytest.mark.parametrize("argv", [
    [], ["predict", "x", "-o", "o", "--model", "m", "--bogus"],
    pytest.param(["--bogus"], marks=SLOW),
    pytest.param(["predict", "x", "-o", "o", "--model", "m", "--roi", "-1", "0"], marks=SLOW),
    pytest.param(["predict", "x", "-o", "o", "--model", "m", "--workers", "0"], marks=SLOW),
    pytest.param(["predict", "x", "-o", "o", "--model", "m", "--axis", "7"], marks=SLOW),
    pytest.param(["train", "--task", "segment"], marks=SLOW),
    pytest.param(["import"], marks=SLOW)])
def test_usage_errors_are_one_line_and_exit_2(tmp_path, argv):
    proc = console(*argv, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "usage:" not in proc.stderr, proc.stderr
    command = f"napari-unet {argv[0]}" if argv and not argv[0].startswith("-") else \
        "napari-unet"
    assert proc.stderr.startswith(f"{command}: error: ")
    assert proc.stderr.endswith(f"(see {command} --help)\n")
    assert list(tmp_path.iterdir()) == []


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (os.readlink(p) if p.is_symlink() else
                                         p.read_bytes() if p.is_file() else "dir")
            for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize("state", ["another tool's report",
                                   pytest.param("a link among the state files", marks=SLOW),
                                   pytest.param("the qc folder a link", marks=SLOW),
                                   pytest.param("the lock a link", marks=SLOW)])
def test_a_refusal_with_exit_2_creates_nothing(tmp_path, data, state):
    out = tmp_path / "out"
    out.mkdir()
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text("{}")
    if state == "another tool's report":
        (out / "report.json").write_text('{"tool": "someone else"}')
    elif state == "the qc folder a link":
        (out / "qc").symlink_to(tmp_path)
    else:
        (out / ".napari-unet").mkdir()
        name = "lock" if state == "the lock a link" else "head.json"
        (out / ".napari-unet" / name).symlink_to(elsewhere)
    before = _snapshot(out)
    proc = console("predict", data["scan"], "-o", out, "--model", data["model"])
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert "never" in proc.stderr
    assert _snapshot(out) == before  # no .napari-unet/lock, nothing else
    assert elsewhere.read_text() == "{}"


def _full_disk_run(tmp_path, argv):
    disk, listing = tmp_path / "disk", tmp_path / "listing.txt"
    cmd = on_a_full_disk(disk, [script(), *map(str, argv)], listing)
    if cmd is None:
        pytest.skip("no tmpfs can be mounted here (needs root and mount namespaces)")
    import subprocess

    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    return proc, disk, listing.read_text().split()


@pytest.mark.slow
@pytest.mark.parametrize("where", ["new folder", "existing folder"])
def test_predict_onto_a_full_disk_is_refused_plainly_and_creates_nothing(tmp_path, data,
                                                                        where):
    out = "out" if where == "new folder" else ""
    proc, disk, left = _full_disk_run(tmp_path, ["predict", data["scan"], "-o",
                                                 tmp_path / "disk" / out, "--model",
                                                 data["model"]])
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and "please report" not in proc.stderr
    assert "no space left on the disk (ENOSPC)" in proc.stderr
    assert left == []


@pytest.mark.slow
@pytest.mark.parametrize("command", ["train", "import"])
def test_train_and_import_onto_a_full_disk_are_refused_before_any_work(tmp_path, data,
                                                                       command):
    out = tmp_path / "disk" / "m.safetensors"
    argv = train_args(data, out) if command == "train" else import_args(data, out)
    proc, disk, left = _full_disk_run(tmp_path, argv)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == (f"napari-unet {command}: error: -o {out}: cannot write in "
                           f"{out.parent}: no space left on the disk (ENOSPC); free some "
                           "space, or choose another disk\n")
    assert left == []


@pytest.mark.slow
def test_a_model_too_large_for_a_limit_fails_plainly_not_as_a_bug(tmp_path, data):
    """A limit met only when the model is written (RLIMIT_FSIZE, as a quota would be): a
    plain one-line failure, exit 1, no partial file."""
    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))

    out = tmp_path / "m.safetensors"
    proc = console(*train_args(data, out), preexec_fn=limit)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.splitlines() == [
        "napari-unet train: error: file too large for this file system or for a limit set "
        "on this process (EFBIG)"], proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.slow
def test_a_scan_that_cannot_be_written_fails_plainly_and_the_report_says_so(tmp_path, data):
    """Disk full while writing a scan's outputs (a per-file limit stands in): the scan
    fails in plain words, the batch and report go on."""
    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))

    big = nifti_scan(tmp_path / "in" / "big.nii.gz", shape=(160, 160, 24))
    nifti_scan(tmp_path / "in" / "small.nii.gz", seed=1)
    proc = console("predict", big.parent, "-o", tmp_path / "out", "--model", data["model"],
                   "--probabilities", "--no-qc", preexec_fn=limit)
    assert proc.returncode == 1 and "please report" not in proc.stderr, proc.stderr
    scans = {e["name"]: e for e in load_report(tmp_path / "out")["scans"]}
    assert scans["small"]["status"] == "ok"
    assert scans["big"]["status"] == "failed"
    assert scans["big"]["error"].endswith("file too large for this file system or for a limit "
                                          "set on this process (EFBIG)")
    assert not list((tmp_path / "out").glob("big_*"))

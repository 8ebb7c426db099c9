"""Discovery over hostile trees: pipes, sockets, dangling links and link loops (issue 11, 6)."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

from napari_unet.batch.discover import discover_scans
from support.batch_data import dicom_series, nifti_scan, tiny_model
from support.cli_run import by_name, load_report, run_cli


def _discover_within(seconds: float, *args, **kwargs):
    """``discover_scans`` in a daemon thread: a hang fails the test instead of the suite."""
    result = []
    worker = threading.Thread(target=lambda: result.append(discover_scans(*args, **kwargs)),
                              daemon=True)
    worker.start()
    worker.join(seconds)
    assert result, f"discovery did not finish in {seconds} s (it opened something that blocks)"
    return result[0]


def hostile_tree(root: Path) -> Path:
    nifti_scan(root / "a.nii.gz")
    nifti_scan(root / "sub" / "b.nii.gz", seed=1)
    dicom_series(root / "sub" / "dicom", seed=2, number=4, description="axial")
    os.mkfifo(root / "pipe.nii.gz")  # a FIFO that looks like a scan
    os.mkfifo(root / "sub" / "no_suffix")  # would be opened to look for the DICM magic
    os.mkfifo(root / "sub" / "fifo.dcm")
    (root / "sub" / "loop").symlink_to(root)  # a link loop
    (root / "dangling.nii.gz").symlink_to(root / "nowhere.nii.gz")
    nifti_scan(root.parent / "elsewhere" / "linked_target.nii.gz", seed=3)
    (root / "linked.nii.gz").symlink_to(root.parent / "elsewhere" / "linked_target.nii.gz")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(root / "sock"))
    listener.close()
    return root


def test_non_regular_files_are_skipped_with_a_reason_and_loops_walked_once(tmp_path):
    root = hostile_tree(tmp_path / "in")
    os.mkfifo(tmp_path / "named_pipe")  # named explicitly on the command line
    found = _discover_within(30, [root, tmp_path / "named_pipe"])
    by_input = {Path(s.input).name: s for s in found.scans}
    regular = sorted(n for n, s in by_input.items() if s.skip_reason is None)
    assert regular == ["a.nii.gz", "b.nii.gz", "dicom", "linked.nii.gz"]  # each once
    assert len(found.scans) == len(by_input)
    for name in ("pipe.nii.gz", "no_suffix", "fifo.dcm", "named_pipe"):
        assert by_input[name].skip_reason == ("a named pipe (FIFO), not a regular file: "
                                              "skipped without opening it")
    assert by_input["sock"].skip_reason.startswith("a socket, not a regular file")
    assert by_input["dangling.nii.gz"].skip_reason.startswith("a link to nothing")


def test_a_batch_over_a_hostile_tree_finishes_and_reports_every_skip(tmp_path):
    root = hostile_tree(tmp_path / "in")
    _discover_within(30, [root])  # guard: the CLI below would hang the same way
    model = tiny_model(tmp_path / "m.safetensors")
    code, log = run_cli("predict", root, "-o", tmp_path / "out", "--model", model, "--quiet",
                        "--no-qc")
    assert code == 0, log  # skipped files are not failures
    report = load_report(tmp_path / "out")
    assert report["counts"] == {"ok": 4, "failed": 0, "skipped": 5}
    scans = by_name(report)
    assert scans["pipe"]["status"] == "skipped" and "FIFO" in scans["pipe"]["reason"]
    assert scans["linked"]["outputs"] == ["linked_labels.nii.gz"]  # links to files followed

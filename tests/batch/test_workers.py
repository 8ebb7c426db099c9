"""Local worker processes: a worker that dies fails only its own scan (issue 11, 11)."""

from __future__ import annotations

import pytest

from napari_unet.batch import scan_job
from napari_unet.batch.executors import WORKER_DIED
from support.batch_data import nifti_scan, process_scan_or_die, tiny_model
from support.cli_run import by_name, load_report, run_cli

pytestmark = pytest.mark.slow


def test_a_killed_worker_fails_only_its_scan_and_the_pool_is_rebuilt(tmp_path, monkeypatch):
    names = ["a", "b", "die", "c", "d"]
    for i, name in enumerate(names):
        nifti_scan(tmp_path / "in" / f"{name}.nii.gz", seed=i)
    model = tiny_model(tmp_path / "m.safetensors")
    # the workers run a process_scan that SIGKILLs its process on the scan "die"
    monkeypatch.setattr(scan_job, "process_scan", process_scan_or_die)
    code, log = run_cli("predict", tmp_path / "in", "-o", tmp_path / "out", "--model", model,
                        "--workers", "2", "--no-qc", "--quiet")
    assert code == 1, log
    scans = by_name(load_report(tmp_path / "out"))
    assert scans["die"]["status"] == "failed" and scans["die"]["error"] == WORKER_DIED
    for name in ("a", "b", "c", "d"):
        assert scans[name]["status"] == "ok", scans[name]
        assert (tmp_path / "out" / f"{name}_labels.nii.gz").is_file()

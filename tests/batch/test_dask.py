"""The Dask path: a LocalCluster started here runs the same per-scan tasks as a local run."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from support.batch_data import (
    PATIENT_STRINGS,
    all_text,
    broken_nifti,
    dicom_series,
    nifti_scan,
    tiny_model,
)
from support.cli_run import load_report, run_cli

pytestmark = pytest.mark.slow


def _count_model_loads_on_worker() -> None:
    """Run on the worker (``client.run``): count the worker's calls to ``load_model``."""
    from napari_unet.model import checkpoint

    load = checkpoint.load_model

    def counted(*args, **kwargs):
        counted.calls += 1
        return load(*args, **kwargs)

    counted.calls = 0
    checkpoint.load_model = counted


def _model_loads_on_worker() -> int:
    from napari_unet.model import checkpoint

    return checkpoint.load_model.calls


def test_dask_cluster_gives_the_same_outputs_as_a_local_run(tmp_path):
    from distributed import Client, LocalCluster

    inputs = tmp_path / "in"
    for i in range(2):
        nifti_scan(inputs / f"d{i}.nii.gz", seed=i)
    dicom_series(inputs / "dcm", seed=5, number=4, description="axial")
    broken_nifti(inputs / "broken.nii.gz")
    model = tiny_model(tmp_path / "seg.safetensors")
    common = ("predict", inputs, "--model", model)
    code, _ = run_cli(*common, "-o", tmp_path / "local", "--quiet")
    assert code == 1
    with LocalCluster(n_workers=1, processes=True, threads_per_worker=1,
                      dashboard_address=None) as cluster, \
            Client(cluster.scheduler_address) as client:
        client.run(_count_model_loads_on_worker)
        code, log = run_cli(*common, "-o", tmp_path / "dask", "--scheduler",
                            cluster.scheduler_address)
        loads = list(client.run(_model_loads_on_worker).values())
    assert code == 1
    assert loads == [1]  # three scans, one model load on the worker
    local, dask = load_report(tmp_path / "local"), load_report(tmp_path / "dask")
    assert dask["counts"] == local["counts"] == {"ok": 3, "failed": 1, "skipped": 0}
    assert [(e["name"], e["status"]) for e in dask["scans"]] == \
        [(e["name"], e["status"]) for e in local["scans"]]
    for e in local["scans"]:
        for name in e["outputs"] + ([e["qc"]] if e["qc"] else []):
            assert (tmp_path / "dask" / name).is_file(), name
        for name in e["outputs"]:
            a = np.asarray(nib.load(tmp_path / "local" / name).dataobj)
            b = np.asarray(nib.load(tmp_path / "dask" / name).dataobj)
            assert np.array_equal(a, b), name
    for s in PATIENT_STRINGS:
        assert s not in log and s not in all_text(tmp_path / "dask")


def test_an_unreachable_scheduler_is_a_usage_error(tmp_path):
    import dask

    nifti_scan(tmp_path / "in" / "x.nii.gz")
    model = tiny_model(tmp_path / "seg.safetensors")
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        code, log = run_cli("predict", tmp_path / "in", "-o", tmp_path / "out", "--model",
                            model, "--scheduler", "tcp://127.0.0.1:9", "--quiet")
    assert code == 2 and "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in log
    assert not (tmp_path / "out" / "report.json").exists()  # refused before any scan

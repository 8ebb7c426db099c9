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


def _kill_a_worker_mid_scan(tmp_path):
    """Run the installed command with 2 workers over 6 scans and ``kill -9`` a worker seen
    on one scan for 0.2 s, about a third of the way through it (a scan takes about 0.6 s:
    a kill at its end, as it writes, would test something else); (returncode, stderr,
    report)."""
    import os
    import signal
    import subprocess
    import time

    from support.os_conditions import script  # the installed napari-unet command

    for i in range(6):
        nifti_scan(tmp_path / "in" / f"s{i}.nii.gz", seed=i, shape=(192, 192, 144))
    model = tiny_model(tmp_path / "m.safetensors")
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # the workers' notes land here
    proc = subprocess.Popen([script(), "predict", str(tmp_path / "in"), "-o",
                             str(tmp_path / "out"), "--model", str(model), "--workers", "2",
                             "--no-qc"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    victim, end, seen = None, time.monotonic() + 240, {}
    while victim is None and time.monotonic() < end and proc.poll() is None:
        for notes in tmp_path.glob("napari-unet-workers-*"):
            for note in notes.iterdir():  # a worker on the same scan for 0.2 s: mid-scan
                try:
                    key = (note.name, note.read_text(encoding="utf-8"))
                except OSError:
                    continue
                since = seen.setdefault(key, time.monotonic())
                if time.monotonic() - since >= 0.2 and victim is None:
                    victim = int(note.name)
                    os.kill(victim, signal.SIGKILL)
        time.sleep(0.02)
    _, err = proc.communicate(timeout=300)
    assert victim is not None, "no worker was seen at work"
    return proc.returncode, err, load_report(tmp_path / "out")


def test_a_worker_killed_from_outside_fails_its_scan_and_says_so(tmp_path):
    """``kill -9`` of one of two workers while it predicts (as a person or the OOM killer
    would): that scan fails (exit 1, a line on stderr), the scan stopped beside it runs
    again and says so, the others are ok. Where the run cannot tell which worker died
    (seen after many GUI tests in one pytest process, not yet explained), its documented
    fallback runs the suspects again one at a time and loses nothing: that outcome is
    checked too, and the attribution must work in one of three tries."""
    for attempt in range(3):
        code, err, report = _kill_a_worker_mid_scan(tmp_path / str(attempt))
        failed = [e for e in report["scans"] if e["status"] == "failed"]
        if code == 0:  # not told apart: every scan ran again alone and is ok
            assert report["counts"] == {"ok": 6, "failed": 0, "skipped": 0}, err
            assert "ran again" in err
            continue
        assert code == 1, err
        assert [e["error"] for e in failed] == [WORKER_DIED], (err, report["write_errors"])
        assert f"failed: {failed[0]['name']}: {WORKER_DIED}" in err
        assert report["counts"] == {"ok": 5, "failed": 1, "skipped": 0}
        return
    raise AssertionError("in three tries the run never told which worker was killed")


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_the_workers_end_with_the_run_and_write_nothing_after_it(tmp_path, how):
    """A run stopped by SIGTERM (``timeout``, a cluster's time limit) or ``kill -9`` left
    its workers behind, idle for ever or finishing their scans into an output folder
    whose run lock had gone with it: they must end with it, and the next run finish."""
    import os
    import signal
    import subprocess
    import time

    import nibabel as nib
    import psutil

    from support.os_conditions import script

    for i in range(6):
        nifti_scan(tmp_path / "in" / f"s{i}.nii.gz", seed=i, shape=(96, 96, 64))
    model = tiny_model(tmp_path / "m.safetensors")
    out = tmp_path / "out"
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # the workers' notes land here
    proc = subprocess.Popen([script(), "predict", tmp_path / "in", "-o", out, "--model", model,
                             "--workers", "2", "--no-qc", "--quiet"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    end, busy = time.monotonic() + 240, False
    while not busy and time.monotonic() < end and proc.poll() is None:
        busy = any(any(notes.iterdir()) for notes in tmp_path.glob("napari-unet-workers-*"))
        time.sleep(0.02)
    assert busy, "no worker was seen at work"
    workers = psutil.Process(proc.pid).children(recursive=True)
    assert workers
    proc.send_signal(getattr(signal, how))
    proc.wait(timeout=60)
    _, alive = psutil.wait_procs(workers, timeout=10)
    alive = [p for p in alive if _running(p)]  # a zombie has ended (PID 1 reaps it)
    for p in alive:  # never left running by the test
        p.kill()
    assert alive == [], f"{len(alive)} worker(s) outlived the run"
    written = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    time.sleep(1.0)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == written

    code, log = run_cli("predict", tmp_path / "in", "-o", out, "--model", model, "--no-qc",
                        "--quiet")
    assert code == 0, log
    report = load_report(out)
    assert report["counts"]["failed"] == 0 and report["finished"] is True
    for e in report["scans"]:
        (rel,) = e["outputs"]
        assert nib.load(out / rel).shape == (96, 96, 64)
    assert not (out / ".napari-unet" / "partial").exists()


def _running(process) -> bool:
    import psutil

    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False

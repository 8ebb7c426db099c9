"""Property-based fuzzing (hypothesis) of whole batches (issue 25):

- patient names: patients spelled every way people write them in DICOM headers, series
  descriptions, folder names, DICOM and NIfTI file names; with ``--no-input-paths`` no
  spelling of any of them appears in any output: file names, stdout, stderr, report.json,
  index.html, the state files (through the installed ``napari-unet``);
- output-folder states: an output folder holding any mix of a person's files named like
  outputs, links where napari-unet keeps its state, stale or broken state files and an
  earlier run's results (edited or not); a run never changes a file it did not write,
  never writes through a link, creates nothing when it refuses (exit 2), and otherwise
  accounts for every scan in report.json.

Examples are derandomized (the same on every run and machine)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support.batch_data import all_text, nifti_scan, tiny_model
from support.cli_run import console, run_cli
from support.patient_spellings import leaks, patients, spellings

pytestmark = pytest.mark.slow
FUZZ = settings(max_examples=8, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("model") / "m.safetensors")


def _safe(text: str) -> str:
    """A spelling fit for a file name (no path separators, not empty)."""
    return text.replace("/", "_").replace("\0", "") or "x"


def _write_patient(root: Path, patient, spelled: list[str], seed: int) -> None:
    import pydicom

    from support.dicom_factory import write_dicom_series

    family, given_name, pid = patient
    folder = root / _safe(spelled[0])
    data = np.random.default_rng(seed).integers(0, 800, (6, 24, 28))
    paths = write_dicom_series(data, folder, spacing=(2.5, 1.0, 1.0),
                               patient_name=f"{family}^{given_name}",
                               series_description=f"T1 {spelled[1]}"[:64],
                               series_number=seed, prefix=_safe(spelled[2]) + "_")
    for p in paths:
        ds = pydicom.dcmread(p)
        ds.PatientID = pid
        ds.save_as(p)
    nifti_scan(root / f"{_safe(spelled[3])}.nii.gz", seed=seed, shape=(28, 24, 6))


@FUZZ
@given(st.data())
def test_no_spelling_of_a_patient_reaches_any_output(model, tmp_path_factory, data):
    root = tmp_path_factory.mktemp("names")
    people = data.draw(st.lists(patients(), min_size=1, max_size=2,
                                unique_by=lambda p: p[0]))
    for seed, patient in enumerate(people, start=1):
        spelled = [data.draw(spellings(patient)) for _ in range(4)]
        _write_patient(root / "in", patient, spelled, seed)
    out = root / "out"
    proc = console("predict", root / "in", "-o", out, "--model", model, "--no-input-paths",
                   "--no-qc")
    assert proc.returncode in (0, 1), proc.stderr
    assert "Traceback" not in proc.stderr
    everything = "\n".join([proc.stdout, proc.stderr, all_text(out)])
    for patient in people:
        assert leaks(everything, patient) == [], (patient, leaks(everything, patient))


# --- output-folder states --------------------------------------------------------------

PIECES = ["user output", "user report", "user page", "user picture", "link as state folder",
          "link as manifest", "link as lock", "link as qc folder", "link as output",
          "stale partial file", "broken manifest", "broken ledger", "stale lock",
          "earlier run", "edited earlier output"]


def _snapshot(folder: Path) -> dict:
    out = {}
    for p in sorted(folder.rglob("*")):
        out[str(p.relative_to(folder))] = (f"-> {os.readlink(p)}" if p.is_symlink() else
                                           p.read_bytes() if p.is_file() else "dir")
    return out


def _build(out: Path, elsewhere: Path, pieces: set[str], model) -> dict[str, bytes]:
    """Put ``pieces`` into ``out``; returns the files that are a person's (path -> bytes)."""
    theirs = {}
    state = out / ".napari-unet"
    if {"earlier run", "edited earlier output"} & pieces:
        assert run_cli("predict", out.parent / "in", "-o", out, "--model", model,
                       "--quiet")[0] == 0
    if "edited earlier output" in pieces:
        (out / "a_labels.nii.gz").write_bytes(b"corrected by hand")
    out.mkdir(exist_ok=True)

    def put(rel: str, content: bytes, person: bool = True) -> None:
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        if not os.path.lexists(out / rel):
            (out / rel).write_bytes(content)
            if person:
                theirs[rel] = content

    if "user output" in pieces:
        put("b_labels.nii.gz", b"ground truth")
    if "user report" in pieces:
        put("report.json", b'{"another": "tool"}')
    if "user page" in pieces:
        put("index.html", b"<html>mine</html>")
    if "user picture" in pieces and "link as qc folder" not in pieces:
        put("qc/b.png", b"a picture")
    links = {"link as state folder": (".napari-unet", elsewhere),
             "link as qc folder": ("qc", elsewhere),
             "link as output": ("b_labels.nii.gz", elsewhere / "precious.nii.gz"),
             "link as manifest": (".napari-unet/b.json", elsewhere / "x.json"),
             "link as lock": (".napari-unet/lock", elsewhere / "x.json")}
    for piece, (rel, target) in links.items():
        if piece in pieces and not os.path.lexists(out / rel) and \
                not (rel.startswith(".napari-unet/") and state.is_symlink()):
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            (out / rel).symlink_to(target)
    if not state.is_symlink():
        if "stale partial file" in pieces:
            put(".napari-unet/partial/1234-a_labels.nii.gz", b"half", person=False)
        if "broken manifest" in pieces:
            put(".napari-unet/a.json", b"{not json", person=False)
        if "broken ledger" in pieces:
            put(".napari-unet/files.json", b"[1, 2", person=False)
        if "stale lock" in pieces:
            put(".napari-unet/lock", b'{"pid": 1, "host": "elsewhere"}', person=False)
    return theirs


@settings(max_examples=25, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
@given(pieces=st.sets(st.sampled_from(PIECES), max_size=5),
       overwrite=st.booleans())
def test_an_output_folder_in_any_state_keeps_what_is_not_ours(model, tmp_path_factory,
                                                              pieces, overwrite):
    root = tmp_path_factory.mktemp("folder")
    nifti_scan(root / "in" / "a.nii.gz")
    nifti_scan(root / "in" / "b.nii.gz", seed=1)
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "precious.nii.gz").write_bytes(b"precious")
    (elsewhere / "x.json").write_text('{"status": "done"}')
    out = root / "out"
    theirs = _build(out, elsewhere, pieces, model)
    elsewhere_before, before = _snapshot(elsewhere), _snapshot(out)
    links_before = {k: v for k, v in before.items() if isinstance(v, str) and
                    v.startswith("-> ")}
    code, log = run_cli("predict", root / "in", "-o", out, "--model", model,
                        *(["--overwrite"] if overwrite else []))
    assert code in (0, 1, 2), log
    assert "Traceback" not in log and "please report" not in log, log
    after = _snapshot(out)
    assert _snapshot(elsewhere) == elsewhere_before  # nothing through a link
    for rel, content in theirs.items():  # a person's files, as they were
        assert after.get(rel) == content, (rel, pieces, log)
    for rel, target in links_before.items():  # links stay links
        assert after.get(rel) == target, (rel, pieces, log)
    if code == 2:
        assert after == before, (pieces, log)  # a refusal creates nothing
        assert len(log.splitlines()) == 1
        return
    report = json.loads((out / "report.json").read_text())
    scans = {e["name"]: e for e in report["scans"]}
    assert sorted(scans) == ["a", "b"], scans
    for entry in scans.values():
        if entry["status"] != "failed":
            for rel in entry["outputs"]:
                assert (out / rel).is_file() and not (out / rel).is_symlink()
        else:
            assert "never" in entry["error"] or "not a regular file" in entry["error"], entry
    assert code == (1 if any(e["status"] == "failed" for e in scans.values()) else 0)
    shutil.rmtree(root)

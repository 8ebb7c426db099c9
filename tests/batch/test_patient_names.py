"""Patient identifiers recognised however they are spelled (issue 25, row 2): the
matching itself (quick, with hypothesis), then whole batches through the installed
``napari-unet`` with the issue's spellings, ``--no-input-paths`` and ``--names counter``."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from napari_unet.batch.patient_names import PatientIdentifiers
from napari_unet.batch.privacy import looks_identifying
from support.batch_data import all_text, nifti_scan, tiny_model
from support.cli_run import by_name, console, load_report
from support.patient_spellings import leaks, patients, spellings


def _identifiers(*people) -> PatientIdentifiers:
    ids = PatientIdentifiers()
    for family, given_name, pid in people:
        ids.add_person_name(f"{family}^{given_name}")
        ids.add_id(pid)
    return ids


ISSUE = [("O'BRIEN", "MARY", "PID-0042"), ("Müller", "Jürgen", "123456")]


@pytest.mark.parametrize("text", [
    "T1 Mary OBrien", "T1 mary o'brien", "O’Brien, Mary", "MaryOBrien_t1", "maryobrien",
    "obrien.mary", "M. O'Brien", "MOBrien", "OBRIEN_M", "JURGEN.MULLER axial", "jurgen",
    "Mueller-Juergen", "MÜLLER^JÜRGEN", "j_muller", "JMuller2", "xxjurgenxx", "MRN123456x",
    "pid0042", "scan_PID-0042",
])
def test_the_issue_s_spellings_are_recognised(text):
    ids = _identifiers(*ISSUE)
    assert looks_identifying(text, ids)
    assert all(leaks(ids.redact(text), p) == [] for p in ISSUE), ids.redact(text)


@pytest.mark.parametrize("text", ["T1_MPRAGE", "sub-01_T1w", "brain_t1", "Does Janet",
                                  "summary", "FLAIR axial 3mm", "case_00012"])
def test_other_words_stay(text):
    ids = _identifiers(*ISSUE, ("Doe", "Jane", "PID-12345"))
    assert not looks_identifying(text, ids) and ids.redact(text) == text


@settings(max_examples=120, deadline=None, derandomize=True)
@given(st.data())
def test_every_spelling_of_a_patient_is_redacted_and_nothing_else(data):
    people = data.draw(st.lists(patients(), min_size=1, max_size=3))
    patient = data.draw(st.sampled_from(people))
    spelled = data.draw(spellings(patient))
    ids = _identifiers(*people)
    text = f"T1 {spelled} axial"
    redacted = ids.redact(text)
    assert all(leaks(redacted, p) == [] for p in people), (text, redacted)
    assert redacted.startswith("T1 ") and redacted.endswith(" axial"), redacted
    assert looks_identifying(spelled, ids)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("model") / "m.safetensors")


def _patient_folder(root, family, given_name, pid, description, files_named, seed):
    """A DICOM series of the patient in a folder named after them, with files named
    after them and ``description`` as SeriesDescription."""
    import pydicom

    from support.dicom_factory import write_dicom_series

    folder = root / f"{given_name}_{family}".replace("'", "")
    rng = __import__("numpy").random.default_rng(seed)
    paths = write_dicom_series(rng.integers(0, 800, (6, 32, 40)), folder,
                               spacing=(2.5, 1.0, 1.0), patient_name=f"{family}^{given_name}",
                               series_description=description, series_number=seed,
                               prefix=files_named)
    for p in paths:
        ds = pydicom.dcmread(p)
        ds.PatientID = pid
        ds.AccessionNumber = "ACC" + pid[-6:]
        ds.save_as(p)
    return folder


@pytest.mark.slow
def test_no_input_paths_leaves_no_spelling_anywhere(tmp_path, model):
    root = tmp_path / "in"
    _patient_folder(root, "O'BRIEN", "MARY", "PID-0042", "T1 Mary OBrien", "MaryOBrien_", 3)
    _patient_folder(root, "Müller", "Jürgen", "123456", "JURGEN.MULLER axial", "jmuller", 4)
    nifti_scan(root / "jurgen.nii.gz")  # named after a patient of this batch's headers
    nifti_scan(root / "scan_MRN123456.nii.gz", seed=1)
    (root / "obrien_mary_notes.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\1" * 64)
    out = tmp_path / "out"
    proc = console("predict", root, "-o", out, "--model", model, "--no-input-paths")
    assert proc.returncode == 1, proc.stderr  # the broken file fails, named without her
    report = load_report(out)
    assert len(report["scans"]) == 5 and all(e["input"] is None for e in report["scans"])
    assert [e["status"] for e in report["scans"]].count("ok") == 4
    everything = "\n".join([proc.stdout, proc.stderr, all_text(out)])
    for patient in ISSUE:
        assert leaks(everything, patient) == [], leaks(everything, patient)
    names = sorted(by_name(report))
    assert any(n.startswith("MR_s003_T1_") for n in names), names  # what is left of it
    assert any(n.startswith("MR_s004_axial_") for n in names), names


@pytest.mark.slow
def test_names_counter_uses_no_part_of_any_input_name(tmp_path, model):
    """A name only a file name carries (no header says it is one) cannot be known; with
    --names counter no part of any input's name is used, and numbers stay with their
    inputs across runs."""
    root = tmp_path / "in"
    nifti_scan(root / "kowalczyk_t1.nii.gz")
    nifti_scan(root / "nakamura" / "flair.nii.gz", seed=1)
    out = tmp_path / "out"
    auto = console("predict", root, "-o", tmp_path / "auto", "--model", model)
    assert "kowalczyk_t1" in auto.stderr  # the documented limit of the automatic names
    proc = console("predict", root, "-o", out, "--model", model, "--names", "counter",
                   "--no-input-paths")
    assert proc.returncode == 0, proc.stderr
    report = load_report(out)
    assert sorted(by_name(report)) == ["scan-0001", "scan-0002"]
    text = "\n".join([proc.stdout, proc.stderr, all_text(out)])
    for secret in ("kowalczyk", "nakamura", "flair"):
        assert secret not in text.lower()
    first = {e["name"]: e["outputs"] for e in report["scans"]}
    nifti_scan(root / "a_new_scan.nii.gz", seed=2)  # sorts first, gets the next number
    proc = console("predict", root, "-o", out, "--model", model, "--names", "counter")
    assert proc.returncode == 0, proc.stderr
    again = by_name(load_report(out))
    assert {n: again[n]["status"] for n in again} == \
        {"scan-0001": "skipped", "scan-0002": "skipped", "scan-0003": "ok"}
    assert {n: again[n]["outputs"] for n in first} == first


@pytest.mark.slow
def test_a_model_trained_on_a_patient_s_scans_does_not_carry_their_names(tmp_path):
    """Model files are for sharing: the provenance names each training scan, but never
    by a name that identifies its patient (a folder named after them, an MRN)."""
    import json

    from napari_unet.model.checkpoint import read_header

    folder = _patient_folder(tmp_path, "Kowalczyk", "Wojciech", "MRN-778899", "T1", "x", 2)
    named = nifti_scan(tmp_path / "MRN778899_t1.nii.gz")
    out = tmp_path / "m.safetensors"
    proc = console("train", "--task", "denoise", "--images", folder, named, "--iterations",
                   "2", "--base", "4", "--patch", "32", "32", "--batch-size", "2", "-q",
                   "-o", out)
    assert proc.returncode == 0, proc.stderr
    data = read_header(out)["provenance"]["data"]
    assert len(data) == 2 and all(d.startswith("scan_") for d in data), data
    text = json.dumps(read_header(out))
    assert leaks(text, ("Kowalczyk", "Wojciech", "MRN-778899")) == []


def test_free_text_of_a_nifti_header_is_not_copied_to_outputs(tmp_path):
    """descrip, aux_file and db_name may hold anything a converter put there (a name, an
    ID): outputs keep the source geometry, not that text."""
    import nibabel as nib
    import numpy as np

    from napari_unet.io import read_volume, write_volume

    img = nib.Nifti1Image(np.zeros((8, 8, 4), np.float32), np.diag([1.0, 1.0, 2.0, 1.0]))
    img.header["descrip"] = b"Kowalczyk^Wojciech"
    img.header["aux_file"] = b"MRN778899"
    img.header["db_name"] = b"Wojciech"
    nib.save(img, str(tmp_path / "in.nii"))
    volume = read_volume(tmp_path / "in.nii")
    write_volume(np.zeros(volume.spatial_shape, np.uint8), tmp_path / "out.nii", like=volume)
    out = nib.load(tmp_path / "out.nii").header
    assert out["descrip"].item() == b"napari-unet"
    assert out["aux_file"].item() == b"" and out["db_name"].item() == b""
    assert leaks((tmp_path / "out.nii").read_bytes().decode("latin-1"),
                 ("Kowalczyk", "Wojciech", "MRN778899")) == []

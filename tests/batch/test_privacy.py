"""Patient data never reaches names, messages, pages or SEG descriptions (issue 11, 5)."""

from __future__ import annotations

import json

import pytest

from napari_unet.batch.privacy import looks_identifying, redact, scrub
from support.batch_data import (
    PATIENT_ID,
    all_text,
    broken_nifti,
    dicom_series,
    nifti_scan,
    series_with_a_gap,
    tiny_model,
)
from support.cli_run import by_name, load_report, run_cli

FOLDER = "Doe_Jane_MRN-123456"
SECRETS = ("Doe", "Jane", "123456", PATIENT_ID)


@pytest.fixture(scope="module")
def patient_run(tmp_path_factory):
    """A patient's folder (DICOM with her name in the headers and the series
    description, a NIfTI, a NIfTI named after her, a broken file), predicted twice."""
    root = tmp_path_factory.mktemp("privacy")
    patient = root / "in" / FOLDER
    dicom_series(patient / "dicom", seed=1, number=3, description="T1 Doe^Jane", prefix="a")
    series_with_a_gap(patient / "gap")
    nifti_scan(patient / "scan.nii.gz")
    nifti_scan(patient / f"{FOLDER}.nii.gz", seed=2)
    broken_nifti(patient / "broken.nii.gz")
    model = tiny_model(root / "m.safetensors")
    common = ("predict", root / "in", "--model", model, "--format", "both")
    return {"root": root, "with_paths": run_cli(*common, "-o", root / "out"),
            "without_paths": run_cli(*common, "-o", root / "anon", "--no-input-paths")}


def _leaks(text: str) -> list[str]:
    return [s for s in SECRETS if s in text]


def test_messages_pages_and_file_names_name_scans_without_patient_data(patient_run):
    code, log = patient_run["with_paths"]
    out = patient_run["root"] / "out"
    assert code == 1  # the broken file
    assert "failed: broken: " in log and "warning: MR_s009_gap_" in log
    assert _leaks(log) == []
    assert _leaks((out / "index.html").read_text()) == []
    names = [str(p.relative_to(out)) for p in out.rglob("*")]
    assert _leaks("\n".join(names)) == []
    report = load_report(out)
    scans = by_name(report)
    assert {"scan", "broken"} <= set(scans)
    dicom = next(n for n in scans if n.startswith("MR_s003_"))
    assert dicom.startswith("MR_s003_T1_") and _leaks(dicom) == []
    named_after_her = next(e for e in scans.values() if e["input"].endswith(f"{FOLDER}.nii.gz"))
    assert named_after_her["name"].startswith("scan_") and named_after_her["status"] == "ok"
    # report.json: input paths (documented) are the only place the folder appears
    for e in report["scans"]:
        assert FOLDER in e["input"]
        assert _leaks(json.dumps({k: v for k, v in e.items() if k != "input"})) == []


def test_the_seg_description_names_the_model_not_the_scan(patient_run):
    import highdicom as hd

    out = patient_run["root"] / "out"
    entry = next(e for e in load_report(out)["scans"] if e["name"].startswith("MR_s003_"))
    seg_file = next(o for o in entry["outputs"] if o.endswith("_seg.dcm"))
    seg = hd.seg.segread(out / seg_file)
    model_name = load_report(out)["model"]["name"]  # the algorithm, never the scan
    assert seg.SeriesDescription == f"{model_name} segmentation"[:64]
    assert _leaks(seg.SeriesDescription) == []


def test_no_input_paths_leaves_the_output_folder_free_of_patient_data(patient_run):
    code, log = patient_run["without_paths"]
    anon = patient_run["root"] / "anon"
    assert code == 1 and _leaks(log) == []
    report = load_report(anon)
    assert report["settings"]["input_paths"] is False
    assert all(e["input"] is None for e in report["scans"])
    # a DICOM SEG carries its patient module, as DICOM requires; nothing else does
    assert list(anon.glob("*_seg.dcm"))
    assert _leaks(all_text(anon, skip=("_seg.dcm",))) == []


def test_redaction_and_the_identifying_name_rule():
    ids = {"Doe^Jane", "Doe", "Jane", "PID-12345"}
    assert redact("Doe_Jane_scan and jane's PID-12345", ids) == \
        "[redacted]_scan and [redacted]'s [redacted]"
    assert redact("Does Janet", ids) == "Does Janet"  # whole words only
    for name in ("Doe^Jane", "MRN-123456", "19800101_ct", "ct_2021-03-04", "patient_7",
                 "jane_t1"):
        assert looks_identifying(name, ids), name
    for name in ("head_01", "sub-01_T1w", "case_00012", "BraTS2021_00000", "brain_t1"):
        assert not looks_identifying(name, ids), name
    paths = {"/data/Doe_Jane/dicom": "MR_s003_x"}
    assert scrub("/data/Doe_Jane/dicom/IM1.dcm: bad tag; see /data/Doe_Jane/notes.txt and "
                 "/srv/models/m.safetensors", paths, ids) == \
        "MR_s003_x/IM1.dcm: bad tag; see notes.txt and m.safetensors"
    assert scrub("cannot open /data/MRN-1234567", {}, set()) == "cannot open <path>"
    outdir = {"/out/": "", "/out": "the output folder"}  # whole paths only
    assert scrub("/out/x.nii.gz, /outer/y and /out: full", outdir, set()) == \
        "x.nii.gz, y and the output folder: full"

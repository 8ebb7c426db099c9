"""``predict --format dicom|both``: a derived DICOM series for denoising beside the NIfTI,
kept to the output-safety rules (atomic, resumable, only our own files replaced); SEGs
with the model's codes; what NIfTI input and uncoded classes say, once on the console."""

from __future__ import annotations

import json
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from napari_unet.batch.scan_job import NO_DICOM
from napari_unet.io.dicom_seg import UNCODED
from support import dciodvfy
from support.batch_data import nifti_scan, tiny_model
from support.clean_dicom import series_values, write_clean_series
from support.cli_run import by_name, load_report, run_cli

ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def denoiser(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("m") / "d.safetensors", "denoise")


def mr_series(folder, seed: int = 0, number: int = 3):
    return write_clean_series(series_values({}, shape=(4, 16, 12), seed=seed), folder,
                              series_number=number, seed=seed)


@pytest.mark.slow
def test_denoised_dicom_goes_back_as_a_derived_series_beside_the_nifti(tmp_path, denoiser):
    files = mr_series(tmp_path / "in")
    out = tmp_path / "out"
    args = ("predict", tmp_path / "in", "-o", out, "--model", denoiser, "--format", "both")
    code, log = run_cli(*args)
    assert code == 0, log
    (e,) = load_report(out)["scans"]
    nifti, folder = f"{e['name']}_denoised.nii.gz", f"{e['name']}_denoised"
    assert e["status"] == "ok" and e["outputs"] == [nifti, folder] and not e["warnings"]
    written = sorted((out / folder).glob("*.dcm"))
    assert len(written) == len(files)
    sources = {pydicom.dcmread(f).SOPInstanceUID for f in files}
    assert {pydicom.dcmread(f).SourceImageSequence[0].ReferencedSOPInstanceUID
            for f in written} == sources
    assert f'href="{folder}"' in (out / "index.html").read_text()

    # the series holds what the NIfTI holds, where the source images are (SimpleITK)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(out / folder)))
    series = reader.Execute()
    source = sitk.ReadImage(reader.GetGDCMSeriesFileNames(str(tmp_path / "in")))
    np.testing.assert_allclose(series.GetOrigin(), source.GetOrigin(), atol=1e-6)
    np.testing.assert_allclose(series.GetDirection(), source.GetDirection(), atol=1e-6)
    image = sitk.ReadImage(str(out / nifti))
    np.testing.assert_allclose(sitk.GetArrayFromImage(series), sitk.GetArrayFromImage(image),
                               atol=0.5 + 1e-4)
    data = np.asarray(nib.load(out / nifti).dataobj)
    assert data.shape == (12, 16, 4)

    # every file recorded as ours, by hash
    manifest = json.loads((out / ".napari-unet" / f"{e['name']}.json").read_text())
    assert {f"{folder}/{f.name}" for f in written} <= set(manifest["files"])

    code, _ = run_cli(*args)  # resumed: finished, skipped, untouched
    assert code == 0 and load_report(out)["scans"][0]["status"] == "skipped"
    uid = pydicom.dcmread(written[0]).SeriesInstanceUID
    code, _ = run_cli(*args, "--overwrite")  # our own series: replaced
    assert code == 0
    renewed = sorted((out / folder).glob("*.dcm"))
    assert len(renewed) == len(files) and pydicom.dcmread(renewed[0]).SeriesInstanceUID != uid
    assert not list((out / ".napari-unet" / "partial").glob("*"))

    theirs = out / folder / "notes.txt"  # a person's file in the series' folder
    theirs.write_text("mine")
    kept = {f.name: f.read_bytes() for f in renewed}
    code, log = run_cli(*args, "--overwrite")
    assert code == 1
    (e,) = load_report(out)["scans"]
    assert e["status"] == "failed" and f"{folder}/notes.txt in the output folder was not " \
        "written by napari-unet" in e["error"]
    assert theirs.read_text() == "mine"
    assert {f.name: f.read_bytes() for f in sorted((out / folder).glob("*.dcm"))} == kept


def test_format_dicom_writes_the_series_alone_and_is_not_taken_for_an_input(tmp_path,
                                                                           denoiser):
    """Inputs and outputs in one folder: the series written there is ours, not a scan."""
    data = tmp_path / "data"
    mr_series(data / "t1")
    code, log = run_cli("predict", data, "-o", data, "--model", denoiser, "--format", "dicom")
    assert code == 0, log
    (e,) = load_report(data)["scans"]
    assert e["outputs"] == [f"{e['name']}_denoised"]
    assert not list(data.glob("*.nii.gz"))
    code, _ = run_cli("predict", data, "-o", data, "--model", denoiser, "--format", "dicom")
    report = load_report(data)
    assert code == 0 and [s["status"] for s in report["scans"]] == ["skipped"]


def test_both_on_nifti_input_says_once_that_no_dicom_can_be_made(tmp_path, denoiser):
    nifti_scan(tmp_path / "in" / "a.nii.gz")
    nifti_scan(tmp_path / "in" / "b.nii.gz", seed=1)
    code, log = run_cli("predict", tmp_path / "in", "-o", tmp_path / "out", "--model",
                        denoiser, "--format", "both")
    assert code == 0, log
    entries = by_name(load_report(tmp_path / "out"))
    for name in ("a", "b"):
        assert entries[name]["status"] == "ok"
        assert entries[name]["outputs"] == [f"{name}_denoised.nii.gz"]
        assert entries[name]["warnings"] == [NO_DICOM]
    assert log.count("no DICOM output: the input is NIfTI") == 1


def test_dicom_alone_of_nifti_input_fails_that_scan(tmp_path, denoiser):
    nifti_scan(tmp_path / "in" / "a.nii.gz")
    code, log = run_cli("predict", tmp_path / "in", "-o", tmp_path / "out", "--model",
                        denoiser, "--format", "dicom")
    assert code == 1
    (e,) = load_report(tmp_path / "out")["scans"]
    assert e["status"] == "failed" and "DICOM output needs DICOM input" in e["error"]


def test_segs_carry_the_models_codes_or_warn_once(tmp_path):
    from napari_unet.io.class_codes import class_codes_from_texts
    from napari_unet.model.checkpoint import load_model

    mr_series(tmp_path / "in" / "a", seed=1, number=1)
    mr_series(tmp_path / "in" / "b", seed=2, number=2)
    plain = tiny_model(tmp_path / "plain.safetensors")
    code, log = run_cli("predict", tmp_path / "in", "-o", tmp_path / "plain", "--model",
                        plain, "--format", "dicom")
    assert code == 0, log
    for e in load_report(tmp_path / "plain")["scans"]:
        assert e["status"] == "ok" and any(UNCODED in w for w in e["warnings"])
    assert log.count(UNCODED) == 1

    coded = load_model(plain)
    coded.meta = type(coded.meta)(**{**coded.meta.__dict__, "hash": "", "class_codes":
                                     class_codes_from_texts(["GrayMatter", "WhiteMatter"], 3)})
    coded.save(tmp_path / "coded.safetensors")
    code, log = run_cli("predict", tmp_path / "in", "-o", tmp_path / "coded", "--model",
                        tmp_path / "coded.safetensors", "--format", "dicom")
    assert code == 0 and UNCODED not in log
    for e in load_report(tmp_path / "coded")["scans"]:
        (seg,) = e["outputs"]
        types = [s.SegmentedPropertyTypeCodeSequence[0].CodeMeaning
                 for s in hd.seg.segread(tmp_path / "coded" / seg).SegmentSequence]
        assert types == ["Gray Matter", "White Matter"] and not e["warnings"]


@pytest.mark.slow
@dciodvfy.needs_dciodvfy
def test_mri_denoise_on_the_sample_dicom_gives_a_clean_derived_series(tmp_path):
    """The issue's case: --model mri-denoise --format both on DICOM wrote NIfTI only."""
    series = ROOT / "sample_data" / "brain_t1_dicom"
    code, log = run_cli("predict", series, "-o", tmp_path, "--model", "mri-denoise",
                        "--format", "both", "--no-qc")
    assert code == 0, log
    (e,) = load_report(tmp_path)["scans"]
    folder = tmp_path / f"{e['name']}_denoised"
    written = sorted(folder.glob("*.dcm"))
    assert len(written) == len(list(series.glob("*.dcm"))) == 189
    for f in written[::47]:
        assert dciodvfy.findings(f) == []  # the sample is clean, so all would be ours
    nifti = sitk.ReadImage(str(tmp_path / f"{e['name']}_denoised.nii.gz"))
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    np.testing.assert_allclose(sitk.GetArrayFromImage(reader.Execute()),
                               sitk.GetArrayFromImage(nifti), atol=0.5 + 1e-4)


@pytest.mark.slow
def test_no_seg_of_an_image_without_patient_geometry(tmp_path):
    """A Secondary Capture (no ImageOrientationPatient/ImagePositionPatient) got a SEG
    that dciodvfy refuses (no PatientOrientation, no SliceThickness): the NIfTI stands in,
    with a warning naming what is missing, and nothing else is left in the folder."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    from support.cli_run import console

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    for keyword, value in {
            "SOPClassUID": SecondaryCaptureImageStorage, "SOPInstanceUID":
            meta.MediaStorageSOPInstanceUID, "StudyInstanceUID": generate_uid(),
            "SeriesInstanceUID": generate_uid(), "FrameOfReferenceUID": generate_uid(),
            "Modality": "OT", "ConversionType": "WSD", "PatientName": "Doe^Jane",
            "PatientID": "1", "SeriesNumber": 1, "InstanceNumber": 1,
            "PixelSpacing": ["0.8", "0.8"], "SamplesPerPixel": 1,
            "PhotometricInterpretation": "MONOCHROME2", "Rows": 20, "Columns": 16,
            "BitsAllocated": 16, "BitsStored": 16, "HighBit": 15,
            "PixelRepresentation": 0}.items():
        setattr(ds, keyword, value)
    ds.PixelData = np.random.default_rng(0).integers(0, 900, (20, 16), np.uint16).tobytes()
    (tmp_path / "in").mkdir()
    ds.save_as(tmp_path / "in" / "capture.dcm", enforce_file_format=True)
    model = tiny_model(tmp_path / "m.safetensors")
    done = console("predict", tmp_path / "in", "-o", tmp_path / "out", "--model", model,
                   "--format", "both", "--no-qc")
    assert done.returncode == 0, done.stdout + done.stderr
    (e,) = load_report(tmp_path / "out")["scans"]
    assert e["status"] == "ok" and [o[-7:] for o in e["outputs"]] == [".nii.gz"]
    assert any("DICOM SEG not written" in w and "ImageOrientationPatient" in w
               for w in e["warnings"]), e["warnings"]
    left = sorted(p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith("."))
    assert left == sorted([*e["outputs"], "report.json"])
    assert nib.load(tmp_path / "out" / e["outputs"][0]).shape[:2] == (16, 20)

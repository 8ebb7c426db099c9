"""The bundled DICOM sample is valid MR Image Storage, reproducible, and free of patient data.

Clunie's ``dciodvfy`` finds nothing in it (every file, in the slow tier; three in the
quick one). Besides, the attributes of the MR Image IOD modules the series carries are
listed below from PS3.3 (A.4: MR Image IOD; C.7.1.1 Patient, C.7.2.1 General Study,
C.7.3.1 General Series, C.7.4.1 Frame of Reference, C.7.5.1 General Equipment, C.7.6.1
General Image, C.7.6.2 Image Plane, C.7.6.3 Image Pixel, C.8.3.1 MR Image, C.12.1 SOP
Common) and checked file by file: type 1 present and not empty, type 2 present (may be
empty), and the conditional ones this series needs.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from support import dciodvfy

pydicom = pytest.importorskip("pydicom")

ROOT = Path(__file__).parents[2]
SERIES = ROOT / "sample_data" / "brain_t1_dicom"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"

TYPE_1 = {
    "General Study": ["StudyInstanceUID"],
    "General Series": ["Modality", "SeriesInstanceUID"],
    "Frame of Reference": ["FrameOfReferenceUID"],
    "Image Plane": ["PixelSpacing", "ImageOrientationPatient", "ImagePositionPatient"],
    "Image Pixel": ["SamplesPerPixel", "PhotometricInterpretation", "Rows", "Columns",
                    "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation",
                    "PixelData"],
    "MR Image": ["ImageType", "ScanningSequence", "SequenceVariant"],
    "SOP Common": ["SOPClassUID", "SOPInstanceUID"],
}
TYPE_2 = {
    "Patient": ["PatientName", "PatientID", "PatientBirthDate", "PatientSex"],
    "General Study": ["StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID",
                      "AccessionNumber"],
    "General Series": ["SeriesNumber"],
    "Frame of Reference": ["PositionReferenceIndicator"],
    "General Equipment": ["Manufacturer"],
    "General Image": ["InstanceNumber"],
    "Image Plane": ["SliceThickness"],
    "MR Image": ["ScanOptions", "MRAcquisitionType", "EchoTime", "EchoTrainLength",
                 # 2C: required unless the scanning sequence is EP without SK
                 "RepetitionTime"],
}


@pytest.fixture(scope="module")
def datasets():
    files = sorted(SERIES.glob("*.dcm"))
    assert len(files) == 189, f"{SERIES}: expected 189 slices, found {len(files)}"
    return [pydicom.dcmread(f) for f in files]


def test_every_file_has_the_mr_image_attributes(datasets):
    problems = []
    for ds in datasets:
        name = Path(ds.filename).name
        for module, keywords in TYPE_1.items():
            problems += [f"{name}: {module} {k} (type 1) missing or empty"
                         for k in keywords if k not in ds or ds[k].is_empty]
        for module, keywords in TYPE_2.items():
            problems += [f"{name}: {module} {k} (type 2) missing" for k in keywords
                         if k not in ds]
        if ds.file_meta.MediaStorageSOPClassUID != MR_IMAGE_STORAGE:
            problems.append(f"{name}: file meta SOP class is not MR Image Storage")
        if ds.file_meta.MediaStorageSOPInstanceUID != ds.SOPInstanceUID:
            problems.append(f"{name}: file meta and dataset SOP Instance UIDs differ")
    assert not problems, "\n".join(problems[:20])
    ds = datasets[0]
    assert ds.SOPClassUID == MR_IMAGE_STORAGE and ds.Modality == "MR"
    assert ds.PhotometricInterpretation == "MONOCHROME2" and ds.BitsAllocated == 16
    sequence = ds.ScanningSequence
    sequence = {sequence} if isinstance(sequence, str) else set(sequence)
    assert sequence <= {"SE", "IR", "GR", "EP", "RM"}  # the defined terms
    assert ds.SpecificCharacterSet  # 1C: required as soon as any text is not plain ASCII


@dciodvfy.needs_dciodvfy
@pytest.mark.parametrize("name", ["IM0001.dcm", "IM0095.dcm", "IM0189.dcm"])
def test_dciodvfy_finds_nothing(name):
    assert dciodvfy.check(SERIES / name) == ("MRImage", [])


@pytest.mark.slow
@dciodvfy.needs_dciodvfy
def test_dciodvfy_finds_nothing_in_any_file():
    found = {f.name: dciodvfy.findings(f) for f in sorted(SERIES.glob("*.dcm"))}
    assert len(found) == 189 and not {k: v for k, v in found.items() if v}


def test_one_series_in_one_frame_of_reference_with_unique_instances(datasets):
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID",
                    "ImageOrientationPatient", "PixelSpacing"):
        assert len({str(ds[keyword].value) for ds in datasets}) == 1, keyword
    assert len({ds.SOPInstanceUID for ds in datasets}) == len(datasets)
    assert [ds.InstanceNumber for ds in datasets] == list(range(1, len(datasets) + 1))
    positions = np.array([[float(v) for v in ds.ImagePositionPatient] for ds in datasets])
    steps = np.diff(positions, axis=0)
    np.testing.assert_allclose(steps, np.broadcast_to(steps[0], steps.shape), atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(steps[0]), float(datasets[0].SliceThickness))


def test_no_patient_data_beyond_an_anonymous_name(datasets):
    ds = datasets[0]
    assert "anonymous" in str(ds.PatientName).lower()
    assert ds.PatientBirthDate == "" and ds.PatientSex == ""
    assert ds.get("PatientIdentityRemoved") == "YES" and ds.DeidentificationMethod  # 1C
    for keyword in ("PatientAddress", "OtherPatientIDs", "PatientAge", "InstitutionName"):
        assert keyword not in ds


def test_highdicom_builds_a_segmentation_from_the_series(datasets):
    hd = pytest.importorskip("highdicom")
    from pydicom.sr.codedict import codes

    sources = datasets[90:93]
    mask = np.zeros((len(sources), sources[0].Rows, sources[0].Columns), bool)
    mask[:, 100:120, 90:110] = True
    segment = hd.seg.SegmentDescription(
        segment_number=1, segment_label="grey matter",
        segmented_property_category=codes.SCT.Tissue,
        segmented_property_type=codes.SCT.Tissue,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL)
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=mask,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[segment], series_instance_uid=hd.UID(), series_number=99,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="test",
        manufacturer_model_name="test", software_versions="0", device_serial_number="0")
    assert seg.FrameOfReferenceUID == sources[0].FrameOfReferenceUID
    assert seg.NumberOfFrames == len(sources)


def test_the_series_is_what_the_script_writes_from_the_nifti(datasets, tmp_path):
    """Rerunning scripts/make_sample_data.py gives byte-identical files (and the same scan)."""
    spec = importlib.util.spec_from_file_location("make_sample_data",
                                                  ROOT / "scripts" / "make_sample_data.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.write_dicom_series(ROOT / "sample_data" / "brain_t1.nii.gz", tmp_path)
    for i in (0, 94, 188):
        name = Path(datasets[i].filename).name
        assert (tmp_path / name).read_bytes() == (SERIES / name).read_bytes(), name
    from napari_unet.io import read_volume

    dicom, nifti = read_volume(SERIES), read_volume(ROOT / "sample_data" / "brain_t1.nii.gz")
    np.testing.assert_array_equal(dicom.array, nifti.array)
    np.testing.assert_allclose(dicom.affine, nifti.affine, atol=1e-6)

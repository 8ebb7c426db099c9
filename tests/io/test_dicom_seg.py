"""DICOM SEG output: validated by reading it back with pydicom and highdicom, and by
Clunie's dciodvfy (every finding in a SEG of a clean source series is ours)."""

from __future__ import annotations

import warnings
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.sr.codedict import codes

from napari_unet.errors import UnsupportedSourceError
from napari_unet.io import read_volume, write_dicom_seg
from napari_unet.io.class_codes import class_codes_from_texts, palette_rgb
from napari_unet.io.dicom_seg import UncodedClassWarning
from napari_unet.io.source import NiftiSource
from napari_unet.io.write import VolumeWriteError
from support import dciodvfy
from support.clean_dicom import series_kinds, series_values, stored_values, write_clean_series
from support.dicom_factory import AXIAL, oblique, write_dicom_series, write_enhanced_mr

ROOT = Path(__file__).parents[2]

CLASSES = ["background", "grey matter", "white matter"]


def make_labels(shape) -> np.ndarray:
    z, y, x = np.indices(shape)
    labels = np.zeros(shape, np.uint8)
    labels[(x > 3) & (z > 0)] = 1
    labels[(y > 5) & (z < shape[0] - 1)] = 2
    return labels


@pytest.mark.parametrize("direction", [AXIAL, oblique(30)], ids=["axial", "oblique"])
def test_seg_references_source_and_geometry(tmp_path, direction):
    data = np.random.default_rng(0).integers(0, 1000, (5, 9, 11)).astype(np.int16)
    write_dicom_series(data, tmp_path / "mr", spacing=(2.5, 0.8, 0.7),
                       origin=(-10.0, 5.0, 40.0), direction=direction)
    vol = read_volume(tmp_path / "mr")
    labels = make_labels(vol.spatial_shape)
    out = write_dicom_seg(labels, tmp_path / "out" / "seg.dcm", like=vol, class_names=CLASSES)

    ds = pydicom.dcmread(out)
    assert ds.Modality == "SEG" and ds.SegmentationType == "BINARY"
    assert [s.SegmentLabel for s in ds.SegmentSequence] == CLASSES[1:]
    assert ds.StudyInstanceUID == pydicom.dcmread(vol.source.files[0]).StudyInstanceUID
    assert ds.FrameOfReferenceUID == vol.source.frame_of_reference_uid
    source_uids = vol.source.sop_instance_uids
    referenced = [r.ReferencedSOPInstanceUID
                  for r in ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence]
    assert sorted(referenced) == sorted(source_uids)
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == vol.source.series_uid

    # every frame sits exactly on the source slice it derives from
    files = vol.source.files
    sources = {u: pydicom.dcmread(f) for u, f in zip(source_uids, files, strict=True)}
    for frame in ds.PerFrameFunctionalGroupsSequence:
        uid = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        ipp = frame.PlanePositionSequence[0].ImagePositionPatient
        np.testing.assert_allclose([float(v) for v in ipp],
                                   [float(v) for v in sources[uid].ImagePositionPatient],
                                   atol=1e-4)
        k = source_uids.index(uid)
        np.testing.assert_allclose(vol.affine @ [k, 0, 0, 1], [*map(float, ipp), 1], atol=1e-4)

    seg = hd.seg.segread(out)
    back = seg.get_pixels_by_source_instance(source_sop_instance_uids=source_uids,
                                             combine_segments=True)
    np.testing.assert_array_equal(back, labels)
    assert sorted(p.name for p in out.parent.iterdir()) == ["seg.dcm"]


def test_seg_unnamed_classes_and_refusals(tmp_path):
    data = np.zeros((3, 8, 8), np.int16)
    write_dicom_series(data, tmp_path / "mr")
    vol = read_volume(tmp_path / "mr")
    labels = np.zeros(vol.spatial_shape, np.uint8)
    labels[1, 2:4, 2:4] = 3
    out = write_dicom_seg(labels, tmp_path / "seg.dcm", like=vol, class_names=["bg", "a"])
    names = [s.SegmentLabel for s in pydicom.dcmread(out).SegmentSequence]
    assert names == ["a", "class 2", "class 3"]
    with pytest.raises(VolumeWriteError, match="shape"):
        write_dicom_seg(labels[:2], tmp_path / "bad.dcm", like=vol)
    nifti_like = type(vol)(vol.array, source=NiftiSource("x.nii.gz", b""))
    with pytest.raises(VolumeWriteError, match="DICOM source"):
        write_dicom_seg(labels, tmp_path / "bad.dcm", like=nifti_like)
    assert not (tmp_path / "bad.dcm").exists()


def test_seg_of_multi_frame_source_follows_its_frames(tmp_path):
    data = np.random.default_rng(2).integers(0, 1000, (4, 9, 11)).astype(np.int16)
    files = write_dicom_series(data, tmp_path / "mr", spacing=(2.0, 0.9, 0.9),
                               direction=oblique(15))
    vol = read_volume(write_enhanced_mr(files, tmp_path / "enhanced.dcm"))
    labels = make_labels(vol.spatial_shape)
    out = write_dicom_seg(labels, tmp_path / "seg.dcm", like=vol, class_names=CLASSES)
    seg = hd.seg.segread(out)
    [uid] = vol.source.sop_instance_uids
    back = seg.get_pixels_by_source_frame(source_sop_instance_uid=uid,
                                          source_frame_numbers=[1, 2, 3, 4],
                                          combine_segments=True)
    np.testing.assert_array_equal(back, labels)
    for frame in pydicom.dcmread(out).PerFrameFunctionalGroupsSequence:
        ref = frame.DerivationImageSequence[0].SourceImageSequence[0]
        k = int(ref.ReferencedFrameNumber) - 1
        ipp = [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient]
        np.testing.assert_allclose(vol.affine @ [k, 0, 0, 1], [*ipp, 1], atol=1e-4)
    if dciodvfy.executable():  # the converted source's own faults aside, nothing
        assert dciodvfy.ours(out, [tmp_path / "enhanced.dcm"]) == []


@pytest.mark.parametrize("keyword", ["PixelSpacing", "ImageOrientationPatient",
                                     "ImagePositionPatient", "StudyInstanceUID"])
def test_missing_source_attribute_is_a_clear_write_error(tmp_path, keyword):
    """Issue case 14: no raw highdicom AttributeError; the file and the attribute named."""
    files = write_dicom_series(np.zeros((3, 8, 8), np.int16), tmp_path / "mr")
    vol = read_volume(tmp_path / "mr")
    for f in files:  # the attribute goes missing after reading (or GDCM assumed it)
        ds = pydicom.dcmread(f)
        delattr(ds, keyword)
        ds.save_as(f)
    out = tmp_path / "out" / "seg.dcm"
    with pytest.raises(VolumeWriteError) as err:
        write_dicom_seg(np.ones(vol.spatial_shape, np.uint8), out, like=vol)
    message = str(err.value)
    assert str(out) in message and keyword in message and str(files[0]) in message
    assert "AttributeError" not in message
    assert not out.parent.exists() or not list(out.parent.iterdir())


def test_legacy_multi_frame_source_is_a_clear_write_error(tmp_path):
    vol = read_volume(get_testdata_file("rtdose.dcm"))
    with pytest.raises(UnsupportedSourceError, match="rtdose.dcm is a multi-frame RTDOSE file "
                                               "without per-frame functional groups"):
        write_dicom_seg(np.ones(vol.spatial_shape, np.uint8), tmp_path / "seg.dcm", like=vol)
    assert not list(tmp_path.iterdir())


def test_series_description_names_the_model_never_the_scan(tmp_path):
    """Issue case 5/14: the folder name may be a patient's; the description is the model's."""
    folder = tmp_path / "Doe_Jane_MRN-123456"
    files = write_dicom_series(np.zeros((3, 8, 8), np.int16), folder, patient_name="Doe^Jane")
    for f in files:  # anonymised sources: type 2 patient/study attributes dropped
        ds = pydicom.dcmread(f)
        del ds.PatientName, ds.PatientID, ds.StudyDate
        ds.save_as(f)
    vol = read_volume(folder)
    assert vol.name == folder.name
    out = write_dicom_seg(np.ones(vol.spatial_shape, np.uint8), tmp_path / "seg.dcm",
                          like=vol, algorithm="brain\\tissue\x1b[31m v2")
    ds = pydicom.dcmread(out)
    assert ds.SeriesDescription == "brain tissue [31m v2 segmentation"
    assert "Doe" not in str(ds.SeriesDescription) and "MRN" not in str(ds.SeriesDescription)
    assert ds.PatientName == "" and ds.PatientID == "" and ds.StudyDate == ""
    for f in files:  # the sources are untouched
        assert "PatientID" not in pydicom.dcmread(f)


def tissue(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Three classes by intensity: the same rule applied to pydicom's reading of a file
    gives what the SEG must hold for that file's frame."""
    return ((values > lo).astype(np.uint8) + (values > hi)).astype(np.uint8)


@dciodvfy.needs_dciodvfy
@pytest.mark.parametrize("kind", series_kinds())
def test_seg_of_every_kind_of_series_is_clean_and_its_frames_land_on_their_sources(
        tmp_path, kind):
    spec = series_kinds()[kind]
    values = series_values(spec)
    files = write_clean_series(values, tmp_path / "in", **spec)
    assert dciodvfy.findings(files[0]) == []  # a clean source: every finding would be ours
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tilted CT's shear note
        vol = read_volume(tmp_path / "in")
    lo, hi = np.percentile(values, [40, 75])
    labels = tissue(np.asarray(vol.array, float), lo, hi)
    class_codes = class_codes_from_texts(["GrayMatter", "-"], 3)
    with pytest.warns(UncodedClassWarning) as caught:
        out = write_dicom_seg(labels, tmp_path / "seg.dcm", like=vol, algorithm="tiny",
                              class_names=["background", "grey", "mystery"],
                              class_codes=class_codes)
    uncoded = [w for w in caught if w.category is UncodedClassWarning]
    assert len(uncoded) == 1 and "(2 mystery)" in str(uncoded[0].message)
    assert dciodvfy.findings(out) == []

    seg = hd.seg.segread(out)
    frames = {frame.DerivationImageSequence[0].SourceImageSequence[0]
              .ReferencedSOPInstanceUID: frame for frame in seg.PerFrameFunctionalGroupsSequence}
    for f in files:  # each source file, as pydicom reads it
        ds = pydicom.dcmread(f)
        expected = tissue(stored_values(ds), lo, hi)
        got = seg.get_pixels_by_source_instance([ds.SOPInstanceUID], combine_segments=True)
        np.testing.assert_array_equal(got[0], expected)
        if ds.SOPInstanceUID in frames:  # empty frames are omitted
            ipp = frames[ds.SOPInstanceUID].PlanePositionSequence[0].ImagePositionPatient
            np.testing.assert_allclose(np.array(ipp, float),
                                       np.array(ds.ImagePositionPatient, float), atol=1e-4)


@dciodvfy.needs_dciodvfy
def test_segments_carry_the_models_codes_and_the_layers_colours(tmp_path):
    files = write_clean_series(series_values({}), tmp_path / "in")
    vol = read_volume(tmp_path / "in")
    labels = np.zeros(vol.spatial_shape, np.uint8)
    labels[1, :4], labels[2, 4:8], labels[3, 8:] = 1, 2, 3
    class_codes = class_codes_from_texts(["-", "GrayMatter", "Tissue/Blood#FF0000", "-"], 4)
    with pytest.warns(UncodedClassWarning, match=r"\(3 other\) are coded as Tissue"):
        out = write_dicom_seg(labels, tmp_path / "seg.dcm", like=vol, algorithm="m",
                              class_names=["bg", "gm", "blood", "other"],
                              class_codes=class_codes)
    segments = pydicom.dcmread(out).SegmentSequence
    expected = [(codes.cid7150.AnatomicalStructure, codes.cid7151.GrayMatter, "gm",
                 palette_rgb(1)),
                (codes.cid7150.Tissue, codes.cid7151.Blood, "blood", (255, 0, 0)),
                (codes.SCT.Tissue, codes.SCT.Tissue, "other", palette_rgb(3))]
    for segment, (category, kind, label, rgb) in zip(segments, expected, strict=True):
        for item, code in ((segment.SegmentedPropertyCategoryCodeSequence[0], category),
                           (segment.SegmentedPropertyTypeCodeSequence[0], kind)):
            assert (item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning) == (
                code.value, code.scheme_designator, code.meaning)
        assert segment.SegmentLabel == label
        back = hd.color.CIELabColor.from_dicom_value(segment.RecommendedDisplayCIELabValue)
        assert np.abs(np.subtract(back.to_rgb(), rgb)).max() <= 1
    assert dciodvfy.ours(out, files) == []


@pytest.mark.slow
@dciodvfy.needs_dciodvfy
def test_seg_of_the_sample_dicom_is_clean_with_brain_tissues_codes(tmp_path):
    from napari_unet.model.checkpoint import load_model

    series = ROOT / "sample_data" / "brain_t1_dicom"
    vol = read_volume(series)
    labels = read_volume(ROOT / "sample_data" / "brain_tissue_labels.nii.gz").array
    model = load_model("brain-tissue", device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UncodedClassWarning)  # every class is coded
        out = write_dicom_seg(labels, tmp_path / "seg.dcm", like=vol, algorithm=model.name,
                              class_names=list(model.task.class_names),
                              class_codes=model.meta.class_codes)
    assert dciodvfy.findings(out) == []
    types = [s.SegmentedPropertyTypeCodeSequence[0].CodeValue
             for s in pydicom.dcmread(out).SegmentSequence]
    assert types == [codes.SCT.GrayMatter.value, codes.SCT.WhiteMatter.value]


@dciodvfy.needs_dciodvfy
@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm"])
def test_seg_of_real_scanner_files_adds_no_finding_of_its_own(tmp_path, name):
    source = get_testdata_file(name)
    assert dciodvfy.findings(source)  # faults of the source's own
    vol = read_volume(source)
    labels = (vol.array > np.median(vol.array)).astype(np.uint8)
    with pytest.warns(UncodedClassWarning):
        out = write_dicom_seg(labels, tmp_path / "seg.dcm", like=vol, class_names=["bg", "x"])
    assert dciodvfy.ours(out, [source]) == []

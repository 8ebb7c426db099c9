"""Denoised DICOM back as a derived DICOM series: checked with pydicom (file by file,
against the source image each one names), SimpleITK (as a series, against its reading
of the source series), highdicom and dciodvfy."""

from __future__ import annotations

import warnings
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.data import get_testdata_file

from napari_unet.errors import UnsupportedSourceError
from napari_unet.io import read_volume
from napari_unet.io.dicom_derived import write_derived_series
from napari_unet.io.write import VolumeWriteError
from support import dciodvfy
from support.clean_dicom import series_kinds, series_values, stored_values, write_clean_series
from support.dicom_factory import write_enhanced_mr

SOURCE_ONLY = ("InstitutionName", "OperatorsName", "ImageComments", "StudyDescription")


def denoise(values: np.ndarray) -> np.ndarray:
    """What the 'model' does here: a known function, so every file can be checked
    against pydicom's reading of its own source image."""
    return (np.asarray(values, float) * 0.8 + 5.3).astype(np.float32)


def read(folder: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tilted CT's shear note
        return read_volume(folder)


def sitk_series(folder: Path):
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


@pytest.mark.parametrize("kind", series_kinds())
def test_derived_series_of_every_kind_of_series(tmp_path, kind):
    spec = series_kinds()[kind]
    files = write_clean_series(series_values(spec), tmp_path / "in", **spec)
    vol = read(tmp_path / "in")
    out = write_derived_series(denoise(vol.array), tmp_path / "out" / "x_denoised", like=vol,
                               algorithm="mri-denoise", model_hash="sha256:" + "ab" * 32)
    written = sorted(out.glob("*.dcm"))
    assert len(written) == len(files)
    assert sorted(p.name for p in out.parent.iterdir()) == ["x_denoised"]  # no temp left
    sources = {ds.SOPInstanceUID: ds for ds in map(pydicom.dcmread, files)}
    series = {pydicom.dcmread(f).SeriesInstanceUID for f in written}
    assert len(series) == 1 and series.isdisjoint(s.SeriesInstanceUID for s in sources.values())
    slope = float(next(iter(sources.values())).get("RescaleSlope", 1))
    referenced = []
    for f in written:
        ds = pydicom.dcmread(f)
        ref = ds.SourceImageSequence[0]
        src = sources[ref.ReferencedSOPInstanceUID]
        referenced.append(ref.ReferencedSOPInstanceUID)
        assert ref.ReferencedSOPClassUID == src.SOPClassUID == ds.SOPClassUID
        assert ds.SOPInstanceUID not in sources
        assert list(ds.ImageType[:2]) == ["DERIVED", "SECONDARY"]
        assert "mri-denoise" in ds.DerivationDescription and "abab" in ds.DerivationDescription
        for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex",
                        "StudyInstanceUID", "AccessionNumber", "StudyID",
                        "FrameOfReferenceUID", "Modality"):
            assert ds[keyword].value == src[keyword].value, keyword
        for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
            np.testing.assert_allclose(np.array(ds[keyword].value, float),
                                       np.array(src[keyword].value, float), atol=1e-6)
        assert float(ds.SliceThickness) == float(src.SliceThickness)
        np.testing.assert_allclose(stored_values(ds), denoise(stored_values(src)),
                                   atol=slope / 2 + 1e-6)
        assert not [e for e in ds if e.tag.is_private]
        assert not [k for k in SOURCE_ONLY if k in ds]
        assert ds.SeriesDescription == "mri-denoise denoised"
    assert sorted(referenced) == sorted(sources)

    derived, source = sitk_series(out), sitk_series(tmp_path / "in")
    for get in ("GetOrigin", "GetSpacing", "GetDirection", "GetSize"):
        np.testing.assert_allclose(getattr(derived, get)(), getattr(source, get)(), atol=1e-6)
    np.testing.assert_allclose(sitk.GetArrayFromImage(derived),
                               denoise(sitk.GetArrayFromImage(source)), atol=slope / 2 + 1e-6)

    image = hd.imread(written[0])
    assert image.get_source_image_uids()[0][2] == image.SourceImageSequence[0] \
        .ReferencedSOPInstanceUID
    if kind != "tilted CT":  # highdicom's volumes are regular grids (no shear)
        datasets = [pydicom.dcmread(f) for f in written]
        ours = hd.get_volume_from_series(datasets)
        theirs = hd.get_volume_from_series([pydicom.dcmread(f) for f in files])
        np.testing.assert_allclose(ours.affine, theirs.affine, atol=1e-6)


@dciodvfy.needs_dciodvfy
@pytest.mark.parametrize("kind", ["axial", "tilted CT", "rescaled CT"])
def test_derived_images_are_clean_in_dciodvfy(tmp_path, kind):
    spec = series_kinds()[kind]
    files = write_clean_series(series_values(spec, shape=(3, 8, 6)), tmp_path / "in", **spec)
    assert dciodvfy.findings(files[0]) == []  # a clean source: every finding would be ours
    vol = read(tmp_path / "in")
    out = write_derived_series(denoise(vol.array), tmp_path / "d", like=vol, algorithm="m")
    for f in sorted(out.glob("*.dcm")):
        assert dciodvfy.check(f) == ("CTImage" if "CT" in kind else "MRImage", [])


@dciodvfy.needs_dciodvfy
def test_enhanced_source_gets_one_classic_image_per_frame(tmp_path):
    files = write_clean_series(series_values({}, shape=(4, 8, 6)), tmp_path / "in")
    enhanced = write_enhanced_mr(files, tmp_path / "enhanced.dcm")
    vol = read(enhanced)
    out = write_derived_series(denoise(vol.array), tmp_path / "d", like=vol, algorithm="m")
    source = pydicom.dcmread(enhanced)
    frames = source.PerFrameFunctionalGroupsSequence
    written = sorted(out.glob("*.dcm"))
    assert len(written) == len(frames)
    per_frame = np.asarray(source.pixel_array, float)  # no rescale in this file
    for f in written:
        ds = pydicom.dcmread(f)
        assert ds.SOPClassUID == pydicom.uid.MRImageStorage
        ref = ds.SourceImageSequence[0]
        assert ref.ReferencedSOPInstanceUID == source.SOPInstanceUID
        k = int(ref.ReferencedFrameNumber) - 1
        ipp = frames[k].PlanePositionSequence[0].ImagePositionPatient
        np.testing.assert_allclose(np.array(ds.ImagePositionPatient, float),
                                   np.array(ipp, float), atol=1e-6)
        np.testing.assert_allclose(ds.pixel_array, denoise(per_frame[k]), atol=0.5 + 1e-6)
        assert ds.ScanningSequence == pydicom.dcmread(files[0]).ScanningSequence
        assert dciodvfy.ours(f, [enhanced]) == []


def test_blank_stand_in_slices_have_no_derived_image(tmp_path):
    files = write_clean_series(series_values({}, shape=(6, 8, 6)), tmp_path / "in")
    files[3].unlink()  # a missing slice: the reader puts a blank one in its place
    vol = read(tmp_path / "in")
    assert vol.spatial_shape[0] == 6 and vol.source.slice_index == (0, 1, 2, 4, 5)
    out = write_derived_series(denoise(vol.array), tmp_path / "d", like=vol, algorithm="m")
    written = [pydicom.dcmread(f) for f in sorted(out.glob("*.dcm"))]
    kept = {pydicom.dcmread(f).SOPInstanceUID: f for f in files if f.exists()}
    assert sorted(ds.SourceImageSequence[0].ReferencedSOPInstanceUID for ds in written) == \
        sorted(kept)
    assert [ds.InstanceNumber for ds in written] == [1, 2, 3, 4, 5]


def test_values_beyond_the_source_rescale_get_a_wider_slope(tmp_path):
    spec = {"modality": "CT", "rescale": (0.25, -1000.0)}
    files = write_clean_series(series_values(spec, shape=(3, 8, 6)), tmp_path / "in", **spec)
    vol = read(tmp_path / "in")
    wide = np.linspace(-3000, 20000, vol.array.size).reshape(vol.array.shape)
    out = write_derived_series(wide, tmp_path / "d", like=vol, algorithm="m")
    by_source = {pydicom.dcmread(f).SOPInstanceUID: k for k, f in enumerate(files)}
    for f in sorted(out.glob("*.dcm")):
        ds = pydicom.dcmread(f)
        assert float(ds.RescaleSlope) > 0.25
        k = by_source[ds.SourceImageSequence[0].ReferencedSOPInstanceUID]
        np.testing.assert_allclose(stored_values(ds), wide[k],
                                   atol=float(ds.RescaleSlope) / 2 + 1e-3)


def test_what_cannot_go_back_as_dicom_is_refused_by_name(tmp_path):
    rtdose = read_volume(get_testdata_file("rtdose.dcm"))
    with pytest.raises(UnsupportedSourceError, match="legacy multi-frame"):
        write_derived_series(rtdose.array, tmp_path / "a", like=rtdose)
    files = write_clean_series(series_values({}, shape=(3, 8, 6)), tmp_path / "in")
    vol = read(tmp_path / "in")
    with pytest.raises(UnsupportedSourceError, match="2 channels cannot go back"):
        write_derived_series(np.stack([vol.array] * 2, -1), tmp_path / "b", like=vol)
    with pytest.raises(VolumeWriteError, match="does not match the scan"):
        write_derived_series(vol.array[:2], tmp_path / "b", like=vol)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "mine.txt").write_text("a person's file")
    with pytest.raises(VolumeWriteError, match="exists"):
        write_derived_series(vol.array, tmp_path / "c", like=vol)
    with pytest.raises(VolumeWriteError, match="holds the input scan"):
        write_derived_series(vol.array, tmp_path, like=vol)
    secondary = pydicom.dcmread(files[0])
    secondary.SOPClassUID = pydicom.uid.SecondaryCaptureImageStorage
    secondary.save_as(files[0])
    with pytest.raises(UnsupportedSourceError, match="Secondary Capture Image Storage"):
        write_derived_series(vol.array, tmp_path / "d", like=vol)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "in"]
    assert (tmp_path / "c" / "mine.txt").read_text() == "a person's file"


def test_values_that_are_not_finite_take_the_lowest_value(tmp_path):
    files = write_clean_series(series_values({}, shape=(2, 8, 6)), tmp_path / "in")
    vol = read(tmp_path / "in")
    assert vol.source.files[0] == str(files[0].resolve())  # array slice 0 is files[0]
    image = denoise(vol.array)
    image[0, 0, :3] = [np.nan, np.inf, -np.inf]
    out = write_derived_series(image, tmp_path / "d", like=vol, algorithm="m")
    source = {pydicom.dcmread(f).SOPInstanceUID: f for f in files}
    for f in sorted(out.glob("*.dcm")):
        ds = pydicom.dcmread(f)
        origin = source[ds.SourceImageSequence[0].ReferencedSOPInstanceUID]
        expected = denoise(stored_values(pydicom.dcmread(origin)))
        if origin == files[0]:
            expected[0, :3] = image[np.isfinite(image)].min()
        np.testing.assert_allclose(stored_values(ds), expected, atol=0.5 + 1e-6)


@dciodvfy.needs_dciodvfy
@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm"])
def test_of_real_scanner_files_dciodvfy_finds_only_what_the_source_has(tmp_path, name):
    """pydicom's CT and MR files carry faults of their own (an empty Laterality, a zero
    patient weight...): a derived image keeps what it copies as it was, adds none."""
    source = get_testdata_file(name)
    assert dciodvfy.findings(source)  # not clean: the distinction is what is tested
    vol = read(source)
    out = write_derived_series(denoise(vol.array), tmp_path / "d", like=vol, algorithm="m")
    (written,) = out.glob("*.dcm")
    assert dciodvfy.ours(written, [source]) == []
    assert not [e for e in pydicom.dcmread(written) if e.tag.is_private]

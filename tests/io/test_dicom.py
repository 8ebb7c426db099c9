"""DICOM in: generated series and pydicom's real test files, geometry checked against SimpleITK."""

from __future__ import annotations

import pickle
import shutil
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.data import get_testdata_file

from napari_unet.errors import VolumeReadError
from napari_unet.io import SliceSpacingWarning, list_series, read_volume, write_volume
from napari_unet.io.geometry import geometry_from_sitk
from support.dicom_factory import AXIAL, oblique, write_dicom_series, write_enhanced_mr
from support.geometry_cases import dicom_voxel_centres
from support.nifti_checks import assert_nifti_agrees


def scan(shape=(6, 10, 12), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2000, shape).astype(np.int16)


def sitk_series(folder: Path):
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder))
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    return reader.Execute()


def assert_same_geometry(vol, image, atol=1e-4):
    spacing, origin, direction = geometry_from_sitk(image)
    np.testing.assert_allclose(vol.spacing, spacing, atol=atol)
    np.testing.assert_allclose(vol.origin, origin, atol=atol)
    np.testing.assert_allclose(vol.direction, direction, atol=atol)


@pytest.mark.parametrize("direction", [AXIAL, oblique()], ids=["axial", "oblique"])
def test_generated_series_geometry_equals_simpleitk(tmp_path, direction):
    data = scan()
    folder = tmp_path / "series"
    # InstanceNumber reversed: sorting must follow positions, not numbers
    write_dicom_series(data, folder, spacing=(3.0, 0.8, 0.7), origin=(-50.0, 20.0, 7.5),
                       direction=direction, instance_numbers=range(6, 0, -1))
    vol = read_volume(folder)
    np.testing.assert_array_equal(vol.array, data)
    image = sitk_series(folder)
    assert_same_geometry(vol, image)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), vol.array)
    np.testing.assert_allclose(vol.spacing, (3.0, 0.8, 0.7), atol=1e-5)
    np.testing.assert_allclose(vol.direction, direction, atol=1e-6)
    assert vol.modality == "MR" and vol.name == "series"
    assert len(vol.source.sop_instance_uids) == 6
    assert pickle.loads(pickle.dumps(vol.source)) == vol.source  # plain, light data
    first = pydicom.dcmread(vol.source.files[0])
    np.testing.assert_allclose([float(v) for v in first.ImagePositionPatient], vol.origin,
                               atol=1e-4)


def test_series_to_nifti_keeps_geometry(tmp_path):
    data = scan()
    write_dicom_series(data, tmp_path / "s", spacing=(2.0, 0.9, 0.9), origin=(1, 2, 3),
                       direction=oblique(10))
    vol = read_volume(tmp_path / "s")
    out = write_volume((vol.array > 1000).astype(np.uint8), tmp_path / "l.nii.gz", like=vol)
    written = sitk.ReadImage(str(out))
    assert_same_geometry(vol, written, atol=1e-4)
    assert nib.load(str(out)).shape == data.shape[::-1]
    assert_nifti_agrees(out, dicom_voxel_centres(tmp_path / "s"))


def test_ct_rescale_gives_hounsfield_units(tmp_path):
    hu = scan(seed=1).astype(float) - 1024
    write_dicom_series(hu, tmp_path / "ct", modality="CT", rescale=(1.0, -1024.0))
    vol = read_volume(tmp_path / "ct")
    assert vol.modality == "CT" and vol.array.dtype == np.int16
    np.testing.assert_array_equal(vol.array, hu)
    half = hu / 2
    write_dicom_series(half, tmp_path / "frac", modality="CT", rescale=(0.5, -512.0))
    vol = read_volume(tmp_path / "frac")
    assert vol.array.dtype == np.float32
    np.testing.assert_allclose(vol.array, half)


def test_several_series_listed_and_chosen(tmp_path):
    folder = tmp_path / "study"
    a, b = scan(seed=2), scan((4, 8, 8), seed=3)
    write_dicom_series(a, folder / "t1", series_description="T1 axial", series_number=1)
    write_dicom_series(b, folder / "t2", series_description="T2 axial", series_number=2,
                       spacing=(5.0, 1.0, 1.0), modality="CT", prefix="b")
    listing = list_series(folder)
    assert [s.description for s in listing] == ["T1 axial", "T2 axial"]
    assert [s.n_slices for s in listing] == [6, 4] and listing[1].size == (8, 8)
    text = listing.describe()
    assert "Doe" not in text and "PID" not in text and listing[0].uid not in text
    assert listing[0].uid_hash in text
    with pytest.raises(VolumeReadError, match="2 image series") as err:
        read_volume(folder)
    assert "T1 axial" in str(err.value) and "Doe" not in str(err.value)
    np.testing.assert_array_equal(read_volume(folder, series=0).array, a)
    np.testing.assert_array_equal(read_volume(folder, series=listing[1].uid).array, b)
    by_hash = read_volume(folder, series=listing[1].uid_hash)
    assert by_hash.modality == "CT" and by_hash.name == f"study_{listing[1].uid_hash}"
    with pytest.raises(VolumeReadError, match="no series 5"):
        read_volume(folder, series=5)


def test_a_missing_slice_is_reported_and_stood_in_for_so_every_slice_keeps_its_place(
        tmp_path):
    """A series with a slice gone is read on its own spacing with a blank slice in the gap
    (not on the mean spacing, which moved every slice near the gap)."""
    data = scan()
    files = write_dicom_series(data, tmp_path / "gap", spacing=(2.0, 1.0, 1.0))
    files[3].unlink()
    with pytest.warns(SliceSpacingWarning, match=r"series [0-9a-f]{8}.*missing slice.*blank"):
        vol = read_volume(tmp_path / "gap")
    assert vol.array.shape == data.shape and "missing" in vol.source.warnings[0]
    assert vol.spacing[0] == pytest.approx(2.0) and vol.source.slice_index == (0, 1, 2, 4, 5)
    kept = [0, 1, 2, 4, 5]
    np.testing.assert_array_equal(vol.array[kept], data[kept])
    assert (vol.array[3] == vol.array.min()).all()
    for k, f in zip(kept, [f for f in files if f.exists()], strict=True):
        ipp = np.asarray(pydicom.dcmread(f).ImagePositionPatient, float)
        np.testing.assert_allclose((vol.affine @ [k, 0, 0, 1])[:3], ipp, atol=1e-4)


def test_uneven_spacing_is_reported(tmp_path):
    files = write_dicom_series(scan(), tmp_path / "uneven", spacing=(2.0, 1.0, 1.0))
    ds = pydicom.dcmread(files[2])
    ds.ImagePositionPatient = [ds.ImagePositionPatient[0], ds.ImagePositionPatient[1],
                               float(ds.ImagePositionPatient[2]) + 0.6]
    ds.save_as(files[2])
    with pytest.warns(SliceSpacingWarning, match="uneven slice spacing"):
        read_volume(tmp_path / "uneven")


def test_non_image_objects_are_skipped_with_reasons(tmp_path):
    folder = tmp_path / "mixed"
    data = scan()
    write_dicom_series(data, folder)
    for name in ("rtstruct.dcm", "rtplan.dcm", "test-SR.dcm"):
        shutil.copy(get_testdata_file(name), folder / name)
    (folder / "notes.txt").write_text("not dicom")
    listing = list_series(folder)
    assert len(listing) == 1
    reasons = {Path(f).name: r for f, r in listing.skipped}
    assert reasons["rtstruct.dcm"].startswith("RTSTRUCT")
    assert reasons["rtplan.dcm"].startswith("RTPLAN")
    assert reasons["test-SR.dcm"].startswith("SR")
    assert reasons["notes.txt"] == "not a DICOM file"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(read_volume(folder).array, data)


@pytest.mark.parametrize("name", ["rtstruct.dcm", "rtplan.dcm", "test-SR.dcm"])
def test_non_image_file_refused(name):
    with pytest.raises(VolumeReadError, match=f"{name}.*not an image"):
        read_volume(get_testdata_file(name))


@pytest.mark.parametrize(
    "name", ["CT_small.dcm", "MR_small.dcm", "MR_small_bigendian.dcm", "MR_small_RLE.dcm",
             "MR_small_jp2klossless.dcm", "rtdose.dcm"]
)
def test_real_files_geometry_equals_simpleitk(name):
    path = get_testdata_file(name)
    vol = read_volume(path)
    image = sitk.ReadImage(path)
    assert_same_geometry(vol, image, atol=1e-6)
    np.testing.assert_array_equal(vol.array, sitk.GetArrayFromImage(image))
    ds = pydicom.dcmread(path)
    assert vol.modality == ds.Modality
    assert vol.array.shape[0] == int(ds.get("NumberOfFrames", 1))
    np.testing.assert_allclose(vol.origin, [float(v) for v in ds.ImagePositionPatient])
    if name == "CT_small.dcm":  # stored values + RescaleIntercept = HU
        hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        np.testing.assert_array_equal(vol.array[0], hu)
        assert vol.array.dtype == np.int16
    if "MR_small" in name:  # compressed and big-endian variants decode to the same pixels
        reference = pydicom.dcmread(get_testdata_file("MR_small.dcm")).pixel_array
        np.testing.assert_array_equal(vol.array[0], reference)


def test_multi_frame_file_in_folder(tmp_path):
    shutil.copy(get_testdata_file("rtdose.dcm"), tmp_path / "dose.dcm")
    vol = read_volume(tmp_path)
    assert vol.array.shape == (15, 10, 10) and vol.source.multi_frame
    assert_same_geometry(vol, sitk.ReadImage(str(tmp_path / "dose.dcm")), atol=1e-6)


def test_enhanced_multi_frame_file_sits_on_its_series(tmp_path):
    """A legacy-converted enhanced MR (highdicom) stores frames in its own order: every
    voxel must still land on the same point, with the same value, as in the series."""
    data = scan((5, 9, 11), seed=4)
    files = write_dicom_series(data, tmp_path / "series", spacing=(2.5, 0.8, 0.7),
                               origin=(-10.0, 5.0, 40.0), direction=oblique(20))
    write_enhanced_mr(files, tmp_path / "enhanced.dcm")
    series, multi = read_volume(tmp_path / "series"), read_volume(tmp_path / "enhanced.dcm")
    assert multi.source.multi_frame and multi.array.shape == series.array.shape
    assert_same_geometry(multi, sitk.ReadImage(str(tmp_path / "enhanced.dcm")), atol=1e-6)
    world = {tuple(np.round(series.affine @ [k, j, i, 1], 3)): series.array[k, j, i]
             for k in range(5) for j in (0, 8) for i in (0, 10)}
    for k in range(5):
        for j, i in ((0, 0), (8, 10), (0, 10)):
            point = tuple(np.round(multi.affine @ [k, j, i, 1], 3))
            assert world[point] == multi.array[k, j, i]

"""NIfTI in and out: geometry, dtypes, variants and exact round trips (nibabel, SimpleITK)."""

from __future__ import annotations

import pickle

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from napari_unet.errors import VolumeReadError
from napari_unet.io import Volume, read_volume, write_volume
from napari_unet.io.geometry import geometry_from_sitk
from napari_unet.io.source import NiftiSource
from support.nifti_checks import assert_nifti_agrees

SHAPE = (9, 7, 5)  # nibabel (i, j, k); our arrays are (5, 7, 9)
LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def rotation(ax_deg: float, az_deg: float) -> np.ndarray:
    a, b = np.deg2rad(ax_deg), np.deg2rad(az_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    rz = np.array([[np.cos(b), -np.sin(b), 0], [np.sin(b), np.cos(b), 0], [0, 0, 1]])
    return rz @ rx


def make_affine(linear, translation=(-40.0, 25.5, 12.25)) -> np.ndarray:
    a = np.eye(4)
    a[:3, :3] = linear
    a[:3, 3] = translation
    return a


ZOOMS = np.diag([0.9, 1.1, 2.5])
ORIENTATIONS = {
    "RAS": make_affine(ZOOMS),
    "LAS": make_affine(np.diag([-1, 1, 1]) @ ZOOMS),
    "LPS": make_affine(np.diag([-1, -1, 1]) @ ZOOMS),
    "PIR": make_affine(np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0]]) @ ZOOMS),
    "oblique": make_affine(rotation(15, 30) @ ZOOMS),
}


def nifti_file(path, data, affine, klass=nib.Nifti1Image, qform=1, sform=1, header=None):
    img = klass(data, affine, header=header)
    img.set_qform(affine if qform else None, code=qform)
    img.set_sform(affine if sform else None, code=sform)
    img.to_filename(str(path))
    return path


def sample(shape=SHAPE, dtype=np.int16, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random(shape) * 1000 - 200).astype(dtype)


def assert_index_geometry(vol: Volume, data: np.ndarray, nib_affine: np.ndarray):
    """Voxel by voxel: our (k, j, i) holds nibabel's (i, j, k) at the same point (LPS)."""
    rng = np.random.default_rng(1)
    for _ in range(20):
        i, j, k = (int(rng.integers(n)) for n in data.shape[:3])
        assert vol.array[k, j, i] == pytest.approx(float(data[i, j, k]), rel=1e-6)
        ours = vol.affine @ [k, j, i, 1]
        theirs = LPS @ nib_affine @ [i, j, k, 1]
        np.testing.assert_allclose(ours, theirs, atol=1e-4)


@pytest.mark.parametrize("orientation", list(ORIENTATIONS))
def test_orientations_match_nibabel_and_simpleitk(tmp_path, orientation):
    affine = ORIENTATIONS[orientation]
    data = sample()
    path = nifti_file(tmp_path / f"{orientation}.nii.gz", data, affine)
    vol = read_volume(path)
    assert vol.array.shape == SHAPE[::-1] and vol.array.dtype == np.int16
    loaded_affine = nib.load(str(path)).affine
    assert_index_geometry(vol, data, loaded_affine)
    image = sitk.ReadImage(str(path))  # ITK reads NIfTI in LPS, slices-first arrays
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), vol.array)
    spacing, origin, direction = geometry_from_sitk(image)
    np.testing.assert_allclose(vol.spacing, spacing, atol=1e-5)
    np.testing.assert_allclose(vol.origin, origin, atol=1e-4)
    np.testing.assert_allclose(vol.direction, direction, atol=1e-5)


@pytest.mark.parametrize("orientation", list(ORIENTATIONS))
@pytest.mark.parametrize("ext", [".nii.gz", ".nii"])
def test_labels_round_trip_identical_affine(tmp_path, orientation, ext):
    affine = ORIENTATIONS[orientation]
    src = nifti_file(tmp_path / f"scan{ext}", sample(dtype=np.float32), affine)
    vol = read_volume(src)
    labels = (vol.array > 300).astype(np.int64) + (vol.array > 600)
    out = write_volume(labels, tmp_path / "out" / f"labels{ext}", like=vol)
    back, orig = nib.load(str(out)), nib.load(str(src))
    assert back.shape == orig.shape
    np.testing.assert_array_equal(back.affine, orig.affine)
    assert back.header["qform_code"] == orig.header["qform_code"]
    assert back.header["sform_code"] == orig.header["sform_code"]
    assert back.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asarray(back.dataobj), labels.T)
    assert_nifti_agrees(out, reference=orig.affine, source_mm=1e-4)
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]  # no temp files


@pytest.mark.parametrize("variant", ["qform_only", "nifti2", "big_endian", "scaled"])
def test_header_variants_round_trip(tmp_path, variant):
    """Sheared sforms: tests/io/test_nifti_agreement.py."""
    affine = ORIENTATIONS["oblique"]
    data = sample()
    path = tmp_path / "scan.nii.gz"
    if variant == "qform_only":
        nifti_file(path, data, affine, sform=0)
    elif variant == "nifti2":
        nifti_file(path, data, affine, klass=nib.Nifti2Image)
    elif variant == "big_endian":
        hdr = nib.Nifti1Header(endianness=">")
        hdr.set_data_dtype(">i2")
        nifti_file(path, data, affine, header=hdr)
        assert nib.load(str(path)).header.endianness == ">"
    else:
        img = nib.Nifti1Image(data, affine)
        img.header.set_slope_inter(0.5, -100.0)
        img.to_filename(str(path))
    vol = read_volume(path)
    expected = nib.load(str(path))
    assert_index_geometry(vol, expected.get_fdata(), expected.affine)
    if variant == "scaled":
        assert vol.array.dtype == np.float32
        np.testing.assert_allclose(vol.array, data.T * 0.5 - 100.0)
    else:
        assert vol.array.dtype == np.dtype("int16") and vol.array.dtype.isnative
        np.testing.assert_array_equal(vol.array, data.T)
    out = write_volume(vol.array.astype(np.float32) * 2, tmp_path / "image.nii.gz", like=vol)
    back = nib.load(str(out))
    # the sform holds the geometry now (a qform-only source's affine, to float32)
    np.testing.assert_allclose(back.affine, expected.affine, atol=1e-4)
    assert_nifti_agrees(out, reference=expected.affine, source_mm=1e-4)
    assert back.shape == expected.shape and back.get_data_dtype() == np.float32
    assert isinstance(back, nib.Nifti1Image)  # NIfTI-2 in, NIfTI-1 out: ITK reads no NIfTI-2
    np.testing.assert_allclose(back.get_fdata(), vol.array.T * 2.0)


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.uint16, np.int32, np.float32,
                                   np.float64])
def test_dtypes_read(tmp_path, dtype):
    data = sample(dtype=np.float64).clip(0, 250).astype(dtype)
    path = nifti_file(tmp_path / "d.nii.gz", data, ORIENTATIONS["LAS"])
    vol = read_volume(path)
    assert vol.array.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(vol.array, data.T)
    assert vol.modality == "MR"


def test_ct_guess_and_name_and_picklable_source(tmp_path):
    data = sample()
    data[0, 0, 0] = -1000
    vol = read_volume(nifti_file(tmp_path / "chest_ct.nii.gz", data, ORIENTATIONS["RAS"]))
    assert vol.modality == "CT" and vol.name == "chest_ct"
    assert isinstance(vol.source, NiftiSource)
    clone = pickle.loads(pickle.dumps(vol.info()))
    assert Volume.from_info(clone, vol.array).affine.tolist() == vol.affine.tolist()


def test_uint16_labels_above_255(tmp_path):
    vol = read_volume(nifti_file(tmp_path / "s.nii.gz", sample(), ORIENTATIONS["RAS"]))
    labels = np.arange(np.prod(vol.spatial_shape)).reshape(vol.spatial_shape) % 300
    out = write_volume(labels, tmp_path / "many.nii.gz", like=vol)
    back = nib.load(str(out))
    assert back.get_data_dtype() == np.uint16
    np.testing.assert_array_equal(np.asarray(back.dataobj), labels.T)
    assert_nifti_agrees(out, ORIENTATIONS["RAS"], source_mm=1e-4)
    small = write_volume(labels % 7, tmp_path / "img.nii.gz", like=vol, dtype=np.dtype("int16"))
    assert nib.load(str(small)).get_data_dtype() == np.int16  # an explicit dtype is kept
    assert_nifti_agrees(small, ORIENTATIONS["RAS"], source_mm=1e-4)


def test_4d_channels_volume_index_and_long_series(tmp_path):
    affine = ORIENTATIONS["LPS"]
    two = sample(SHAPE + (2,))
    vol = read_volume(nifti_file(tmp_path / "two.nii.gz", two, affine))
    assert vol.has_channels and vol.array.shape == (5, 7, 9, 2)
    np.testing.assert_array_equal(vol.array[..., 1], two[..., 1].T)
    out = write_volume(vol.array.astype(np.float32), tmp_path / "den.nii.gz", like=vol)
    back = nib.load(str(out))
    assert back.shape == two.shape
    np.testing.assert_array_equal(back.affine, nib.load(str(tmp_path / "two.nii.gz")).affine)
    assert_nifti_agrees(out, affine, source_mm=1e-4)

    many = sample(SHAPE + (6,))
    path = nifti_file(tmp_path / "fmri.nii.gz", many, affine)
    with pytest.raises(VolumeReadError, match=r"fmri\.nii\.gz.*volume_index"):
        read_volume(path)
    third = read_volume(path, volume_index=3)
    assert not third.has_channels
    np.testing.assert_array_equal(third.array, many[..., 3].T)
    labels = (third.array > 0).astype(np.uint8)
    back = nib.load(str(write_volume(labels, tmp_path / "l.nii.gz", like=third)))
    assert back.shape == SHAPE
    np.testing.assert_array_equal(back.affine, nib.load(str(path)).affine)
    assert_nifti_agrees(tmp_path / "l.nii.gz", affine, source_mm=1e-4)


def test_write_without_like_and_refusals(tmp_path):
    data = np.zeros((3, 4, 5), np.uint8)
    out = write_volume(data, tmp_path / "plain.nii.gz")
    back = sitk.ReadImage(str(out))  # SimpleITK's default geometry
    assert back.GetSize() == (5, 4, 3)
    assert_nifti_agrees(out)
    np.testing.assert_allclose(back.GetDirection(), np.eye(3).ravel(), atol=1e-6)

    src = nifti_file(tmp_path / "scan.nii.gz", sample(), ORIENTATIONS["RAS"])
    vol = read_volume(src)
    before = src.read_bytes()
    with pytest.raises(ValueError, match="input scan"):
        write_volume(np.zeros(vol.spatial_shape), src, like=vol)
    with pytest.raises(ValueError, match="shape"):
        write_volume(np.zeros((2, 2, 2)), tmp_path / "bad.nii.gz", like=vol)
    with pytest.raises(ValueError, match=r"\.nii"):
        write_volume(np.zeros(vol.spatial_shape), tmp_path / "bad.mha", like=vol)
    huge = np.full(vol.spatial_shape, 1e300)  # would become inf as float32
    with pytest.raises(ValueError, match="do not fit in float32"):
        write_volume(huge, tmp_path / "bad.nii.gz", like=vol)
    labels = np.full(vol.spatial_shape, 300, np.int64)  # would wrap round to 44 as int8
    with pytest.raises(ValueError, match="do not fit in int8"):
        write_volume(labels, tmp_path / "bad.nii.gz", like=vol, dtype=np.int8)
    assert src.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.nii.gz", "scan.nii.gz"]


def test_vector_voxels_in_dim5_are_channels(tmp_path):
    data = sample(SHAPE + (1, 3))
    path = nifti_file(tmp_path / "vec.nii.gz", data, ORIENTATIONS["RAS"])
    vol = read_volume(path)
    assert vol.array.shape == (5, 7, 9, 3)
    np.testing.assert_array_equal(vol.array[..., 2], data[:, :, :, 0, 2].T)

"""Label maps in files: class names stored in NIfTI, which files count as labels, DICOM SEG
read back as labels in the geometry of its frames."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from napari_unet.errors import VolumeReadError
from napari_unet.io import read_volume, write_dicom_seg, write_volume
from napari_unet.io.labels import (
    SAMPLE_VOXELS,
    few_label_values,
    named_like_labels,
    nifti_label_map,
    read_dicom_seg,
    sample,
)
from support.dicom_factory import AXIAL, oblique, write_dicom_series
from support.nifti_checks import assert_nifti_agrees
from support.phantoms import label_blobs

NAMES = ["background", "liver", "tumour"]


def ras_scan(path, shape=(10, 12, 6)):
    affine = np.diag([0.9, 1.1, 2.5, 1.0])
    affine[:3, 3] = (-40.0, 25.5, 12.25)
    data = np.random.default_rng(0).integers(0, 500, shape).astype(np.int16)
    nib.Nifti1Image(data, affine).to_filename(str(path))
    return read_volume(path)


def test_class_names_travel_in_nifti_and_geometry_is_unchanged(tmp_path):
    scan = ras_scan(tmp_path / "scan.nii.gz")
    labels = label_blobs(scan.spatial_shape)
    out = write_volume(labels, tmp_path / "out.nii.gz", like=scan, class_names=NAMES)
    img = nib.load(out)
    assert img.header.get_intent()[0] == "label"
    np.testing.assert_array_equal(img.affine, nib.load(tmp_path / "scan.nii.gz").affine)
    assert_nifti_agrees(out, nib.load(tmp_path / "scan.nii.gz").affine)
    back = read_volume(out)
    label_map = nifti_label_map(back, out)
    assert label_map.class_names == tuple(NAMES)
    np.testing.assert_array_equal(label_map.volume.array, labels)
    # other tools see a comment, and an image written without names stays an image
    assert nib.load(out).header.extensions[0].get_code() == 6
    plain = write_volume(labels.astype(np.float32) * 10.5, tmp_path / "img.nii.gz", like=scan)
    assert nifti_label_map(read_volume(plain), plain) is None
    assert_nifti_agrees(plain, nib.load(tmp_path / "scan.nii.gz").affine)


def test_plain_integer_files_named_like_labels_are_labels(tmp_path):
    labels = label_blobs((6, 8, 10))
    for name in ["case_labels.nii.gz", "case_seg.nii", "liver-mask.nii.gz",
                 "Segmentation.nii.gz", "brain_label.nii.gz"]:
        assert named_like_labels(name), name
        nib.Nifti1Image(labels.T.astype(np.int16), np.eye(4)).to_filename(str(tmp_path / name))
        label_map = nifti_label_map(read_volume(tmp_path / name), tmp_path / name)
        assert label_map is not None and label_map.class_names is None, name
        assert label_map.volume.array.dtype == np.uint8
    for name in ["t1.nii.gz", "seagull.nii", "segmental_ct.nii.gz", "labelsx.nii"]:
        assert not named_like_labels(name), name

    ct = np.random.default_rng(0).integers(-1000, 1000, (6, 8, 10)).astype(np.int16)
    nib.Nifti1Image(ct.T, np.eye(4)).to_filename(str(tmp_path / "ct_seg.nii.gz"))
    assert nifti_label_map(read_volume(tmp_path / "ct_seg.nii.gz"), tmp_path / "ct_seg.nii.gz") \
        is None  # named like labels, but thousands of values and negatives: an image
    unnamed = tmp_path / "scan.nii.gz"
    nib.Nifti1Image(labels.T.astype(np.int16), np.eye(4)).to_filename(str(unnamed))
    assert nifti_label_map(read_volume(unnamed), unnamed) is None  # no name, no intent


def test_label_intent_from_other_tools_counts(tmp_path):
    img = nib.Nifti1Image(label_blobs((6, 8, 10)).T.astype(np.float32), np.eye(4))
    img.header.set_intent("label")
    img.to_filename(str(tmp_path / "atlas.nii.gz"))
    label_map = nifti_label_map(read_volume(tmp_path / "atlas.nii.gz"), tmp_path / "atlas.nii.gz")
    assert label_map is not None and label_map.volume.array.dtype == np.uint8


def test_value_check_reads_a_bounded_sample():
    big = np.zeros((300, 300, 300), np.uint8)
    assert sample(big).size <= SAMPLE_VOXELS
    big[::2] = 3
    assert few_label_values(big)
    assert not few_label_values(np.linspace(0, 1, 1000).reshape(10, 10, 10))
    assert not few_label_values(np.arange(-3, 5).reshape(2, 2, 2))
    assert few_label_values(np.zeros((4, 4), bool))
    assert not few_label_values(np.arange(1000).reshape(10, 10, 10).astype(np.uint16))


@pytest.fixture
def scan_and_seg(tmp_path):
    data = np.random.default_rng(1).integers(0, 900, (6, 16, 20)).astype(np.int16)
    write_dicom_series(data, tmp_path / "ct", spacing=(3.0, 0.8, 0.7),
                       origin=(-50.0, 20.0, 7.5), direction=oblique(15), modality="CT")
    scan = read_volume(tmp_path / "ct")
    labels = np.zeros(scan.spatial_shape, np.uint8)
    labels[2:4, 3:9, 4:12] = 1
    labels[3, 10:14, 12:18] = 2  # slices 0, 1 and 4, 5 empty: SEG omits their frames
    seg = write_dicom_seg(labels, tmp_path / "seg.dcm", like=scan, class_names=NAMES)
    return scan, labels, seg


def test_dicom_seg_on_its_scan_takes_the_scan_grid(scan_and_seg):
    scan, labels, seg = scan_and_seg
    label_map = read_dicom_seg(seg, like=scan)
    assert label_map.class_names == tuple(NAMES)
    np.testing.assert_array_equal(label_map.volume.array, labels)
    np.testing.assert_allclose(label_map.volume.affine, scan.affine)
    assert label_map.volume.source == scan.source  # saved labels land on the scan


def test_dicom_seg_alone_is_placed_by_its_frame_positions(scan_and_seg):
    scan, labels, seg = scan_and_seg
    label_map = read_dicom_seg(seg)
    vol = label_map.volume
    assert label_map.class_names == tuple(NAMES)
    for value in (1, 2):  # every labelled voxel lands on the same label in the scan
        for index in np.argwhere(vol.array == value):
            at = np.linalg.solve(scan.affine, vol.affine @ [*index, 1])[:3]
            assert np.allclose(at, np.round(at), atol=1e-3)
            assert labels[tuple(np.round(at).astype(int))] == value
    assert (vol.array == 1).sum() == (labels == 1).sum()
    assert (vol.array == 2).sum() == (labels == 2).sum()


def test_broken_dicom_seg_names_the_file(scan_and_seg, tmp_path):
    _, _, seg = scan_and_seg
    broken = tmp_path / "broken_seg.dcm"
    broken.write_bytes(seg.read_bytes()[:2000])
    with pytest.raises(VolumeReadError, match="broken_seg.dcm"):
        read_dicom_seg(broken)


def test_axial_seg_without_empty_frames(tmp_path):
    data = np.ones((3, 8, 9), np.int16)
    write_dicom_series(data, tmp_path / "mr", direction=AXIAL)
    scan = read_volume(tmp_path / "mr")
    labels = np.ones(scan.spatial_shape, np.uint8)
    seg = write_dicom_seg(labels, tmp_path / "seg.dcm", like=scan, class_names=["bg", "all"])
    label_map = read_dicom_seg(seg)
    np.testing.assert_allclose(label_map.volume.affine, scan.affine, atol=1e-5)
    np.testing.assert_array_equal(label_map.volume.array, labels)


def test_hostile_label_files_stay_bounded(tmp_path):
    """Huge label values and broken or huge name extensions neither crash nor allocate."""
    from napari_unet.io.labels import MAX_CLASS_NAMES, class_names_extension

    data = np.zeros((4, 5, 6), np.uint32)
    data[0, 0, 0] = 2**31
    img = nib.Nifti1Image(data, np.eye(4))
    img.header.set_intent("label")
    img.header.extensions.append(class_names_extension(["bg", "one"]))
    img.header.extensions.append(nib.nifti1.Nifti1Extension("comment", b"{not json"))
    img.header.extensions.append(nib.nifti1.Nifti1Extension(
        "comment", b'{"napari-unet": {"class_names": "' + b"x" * (2 << 20) + b'"}}'))
    img.to_filename(str(tmp_path / "big_labels.nii.gz"))
    label_map = nifti_label_map(read_volume(tmp_path / "big_labels.nii.gz"),
                                tmp_path / "big_labels.nii.gz")
    assert label_map.class_names[:2] == ("bg", "one")
    assert len(label_map.class_names) == MAX_CLASS_NAMES

"""The npe2 reader and writers in a real napari viewer (run under Xvfb)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from napari_unet._napari.reader import get_reader
from napari_unet.errors import VolumeReadError
from napari_unet.io import read_volume
from napari_unet.io.geometry import anatomical_axes
from napari_unet.io.source import DicomSource
from support.dicom_factory import AXIAL, oblique, write_dicom_series

pytestmark = pytest.mark.gui

PLUGIN = "napari-unet"


def ras_nifti(path, shape=(12, 10, 6)):
    affine = np.diag([0.9, 1.1, 2.5, 1.0])
    affine[:3, 3] = (-40.0, 25.5, 12.25)
    data = np.random.default_rng(0).integers(0, 500, shape).astype(np.int16)
    nib.Nifti1Image(data, affine).to_filename(str(path))
    return path


def world_of(layer, index) -> np.ndarray:
    return np.asarray(layer.data_to_world(index), float)


def test_axial_dicom_layer_is_in_physical_mm(make_napari_viewer, tmp_path):
    data = np.random.default_rng(1).integers(0, 900, (5, 16, 20)).astype(np.int16)
    write_dicom_series(data, tmp_path / "axial", spacing=(3.0, 0.8, 0.7),
                       origin=(-50.0, 20.0, 7.5), direction=AXIAL)
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(tmp_path / "axial"), plugin=PLUGIN)
    np.testing.assert_array_equal(layer.data, data)
    np.testing.assert_allclose(layer.scale, (3.0, 0.8, 0.7), atol=1e-5)
    np.testing.assert_allclose(layer.translate, (7.5, 20.0, -50.0), atol=1e-5)  # (z, y, x)
    np.testing.assert_allclose(layer.affine.affine_matrix, np.eye(4))
    vol = layer.metadata["napari_unet_volume"]
    assert isinstance(vol.source, DicomSource)
    corner = vol.affine @ [4, 15, 19, 1]  # LPS (x, y, z) of the last voxel
    np.testing.assert_allclose(world_of(layer, (4, 15, 19)), corner[2::-1], atol=1e-4)


def test_ras_nifti_and_oblique_dicom_world_coordinates(make_napari_viewer, tmp_path):
    """napari world = W @ LPS: each napari axis one LPS axis, in millimetres."""
    viewer = make_napari_viewer()
    [nii] = viewer.open(str(ras_nifti(tmp_path / "ras.nii.gz")), plugin=PLUGIN)
    vol = read_volume(tmp_path / "ras.nii.gz")
    np.testing.assert_allclose(np.abs(nii.scale), vol.spacing)
    np.testing.assert_allclose(nii.scale[1:], -np.asarray(vol.spacing[1:]))  # R, A: flipped
    w = anatomical_axes(vol.direction)
    np.testing.assert_allclose(w, np.eye(3)[::-1])
    for index in [(0, 0, 0), (5, 9, 11), (2, 3, 4)]:
        np.testing.assert_allclose(world_of(nii, index), w @ (vol.affine @ [*index, 1])[:3],
                                   atol=1e-4)

    write_dicom_series(np.ones((4, 8, 9)), tmp_path / "obl", spacing=(2.0, 1.0, 1.0),
                       origin=(3.0, -4.0, 5.0), direction=oblique(20))
    [obl] = viewer.open(str(tmp_path / "obl"), plugin=PLUGIN)
    vol = obl.metadata["napari_unet_volume"]
    assert not np.allclose(obl.affine.affine_matrix, np.eye(4))  # rotation kept as affine
    w = anatomical_axes(vol.direction)
    for index in [(0, 0, 0), (3, 7, 8), (1, 5, 2)]:
        np.testing.assert_allclose(world_of(obl, index), w @ (vol.affine @ [*index, 1])[:3],
                                   atol=1e-4)


def test_multi_series_folder_gives_one_layer_per_series(make_napari_viewer, tmp_path):
    write_dicom_series(np.zeros((3, 8, 8)), tmp_path / "study" / "a", series_number=1,
                       series_description="T1")
    write_dicom_series(np.ones((4, 6, 6)), tmp_path / "study" / "b", series_number=2,
                       series_description="T2", prefix="b")
    viewer = make_napari_viewer()
    layers = viewer.open(str(tmp_path / "study"), plugin=PLUGIN)
    assert [lyr.data.shape for lyr in layers] == [(3, 8, 8), (4, 6, 6)]
    assert len({lyr.name for lyr in layers}) == 2


def test_channels_open_as_one_layer_each(make_napari_viewer, tmp_path):
    path = tmp_path / "two.nii.gz"
    nib.Nifti1Image(np.zeros((6, 5, 4, 2), np.float32), np.eye(4)).to_filename(str(path))
    viewer = make_napari_viewer()
    layers = viewer.open(str(path), plugin=PLUGIN)
    assert [lyr.data.shape for lyr in layers] == [(4, 5, 6), (4, 5, 6)]


def test_reader_declines_other_paths_and_reports_broken_files(make_napari_viewer, tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "notes.txt").write_text("hello")
    assert get_reader(str(tmp_path / "notes.txt")) is None
    assert get_reader(str(tmp_path / "plain")) is None
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"\x1f\x8b garbage")
    viewer = make_napari_viewer()
    with pytest.raises(Exception) as err:  # noqa: B017 - napari may wrap the error
        viewer.open(str(broken), plugin=PLUGIN)
    chain, e = [], err.value
    while e is not None:
        chain.append(e)
        e = e.__cause__ or e.__context__
    assert any(isinstance(x, VolumeReadError) and "broken.nii.gz" in str(x) for x in chain)
    assert len(viewer.layers) == 0  # the viewer survives and still opens files
    viewer.open(str(ras_nifti(tmp_path / "ok.nii.gz")), plugin=PLUGIN)
    assert len(viewer.layers) == 1


def test_writer_saves_labels_in_source_geometry(make_napari_viewer, tmp_path):
    src = ras_nifti(tmp_path / "scan.nii.gz")
    viewer = make_napari_viewer()
    [image] = viewer.open(str(src), plugin=PLUGIN)
    labels = viewer.add_labels((np.asarray(image.data) > 250).astype(np.uint8),
                               scale=image.scale, translate=image.translate,
                               metadata=dict(image.metadata), name="seg")
    [out] = labels.save(str(tmp_path / "out" / "seg.nii.gz"), plugin=PLUGIN)
    back, orig = nib.load(out), nib.load(str(src))
    np.testing.assert_array_equal(back.affine, orig.affine)
    assert back.shape == orig.shape and back.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asarray(back.dataobj), np.asarray(labels.data).T)

    [img_out] = image.save(str(tmp_path / "out" / "img.nii.gz"), plugin=PLUGIN)
    np.testing.assert_array_equal(nib.load(img_out).affine, orig.affine)
    assert nib.load(img_out).get_data_dtype() == np.int16  # the image keeps its dtype
    np.testing.assert_array_equal(np.asarray(nib.load(img_out).dataobj), orig.dataobj)


def test_writer_without_source_uses_layer_scale_and_translate(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    layer = viewer.add_labels(np.zeros((4, 6, 8), np.uint8), scale=(2.0, 0.8, 0.9),
                              translate=(-30.0, 12.5, 4.0))
    [out] = layer.save(str(tmp_path / "plain.nii.gz"), plugin=PLUGIN)
    image = sitk.ReadImage(out)  # world axes (z, y, x) read as (S, P, L)
    assert image.GetSize() == (8, 6, 4)
    np.testing.assert_allclose(image.GetSpacing(), (0.9, 0.8, 2.0), atol=1e-6)
    np.testing.assert_allclose(image.GetOrigin(), (4.0, 12.5, -30.0), atol=1e-5)
    np.testing.assert_allclose(image.GetDirection(), np.eye(3).ravel(), atol=1e-6)
    # and it reads back onto the same place
    [again] = viewer.open(out, plugin=PLUGIN)
    np.testing.assert_allclose(again.scale, layer.scale, atol=1e-5)
    np.testing.assert_allclose(again.translate, layer.translate, atol=1e-5)


def test_broken_series_is_reported_and_the_others_open(make_napari_viewer, tmp_path):
    write_dicom_series(np.zeros((3, 8, 8)), tmp_path / "study" / "good", series_number=1)
    bad = write_dicom_series(np.ones((3, 8, 8)), tmp_path / "study" / "bad", series_number=2,
                             prefix="b")
    bad[1].write_bytes(bad[1].read_bytes()[:-100])
    viewer = make_napari_viewer()
    with pytest.warns(UserWarning, match="pixel data"):
        layers = viewer.open(str(tmp_path / "study"), plugin=PLUGIN)
    assert [lyr.data.shape for lyr in layers] == [(3, 8, 8)]
    assert not np.asarray(layers[0].data).any()  # the good (all-zero) series

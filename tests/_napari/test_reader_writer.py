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
from support.phantoms import label_blobs

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


def test_a_malformed_slice_is_left_out_and_every_series_opens(make_napari_viewer, tmp_path):
    """A slice cut short is left out of its series with a warning naming it (README);
    the series opens from its other slices, the one beside it as it is."""
    write_dicom_series(np.zeros((3, 8, 8)), tmp_path / "study" / "good", series_number=1)
    bad = write_dicom_series(np.ones((3, 8, 8)), tmp_path / "study" / "bad", series_number=2,
                             prefix="b")
    bad[1].write_bytes(bad[1].read_bytes()[:-100])
    viewer = make_napari_viewer()
    with pytest.warns(UserWarning, match=rf"{bad[1].name} left out of this series "
                      r"\(malformed pixel data: truncated"):
        layers = viewer.open(str(tmp_path / "study"), plugin=PLUGIN)
    assert [lyr.data.shape for lyr in layers] == [(3, 8, 8), (2, 8, 8)]
    assert not np.asarray(layers[0].data).any()  # the good (all-zero) series
    assert np.asarray(layers[1].data).all()  # the bad one's two sound slices


# --- label maps stay labels ------------------------------------------------------------------

NAMES = ["background", "liver", "tumour"]


def assert_named_labels(layer, names=NAMES) -> None:
    assert layer._type_string == "labels"
    assert list(layer.features["class"]) == names
    colors = [tuple(np.round(layer.colormap.map(v), 3)) for v in range(len(names))]
    assert colors[0][3] == 0 and len(set(colors)) == len(names)  # one colour per class


def test_saved_labels_reopen_as_labels_with_names_and_colours(make_napari_viewer, tmp_path):
    src = ras_nifti(tmp_path / "scan.nii.gz")
    viewer = make_napari_viewer()
    [image] = viewer.open(str(src), plugin=PLUGIN)
    labels = viewer.add_labels(label_blobs(image.data.shape), name="organs",
                               metadata=image.metadata,
                               features={"index": [0, 1, 2], "class": NAMES},
                               **{k: getattr(image, k) for k in ("scale", "translate")})
    viewer.layers.selection = {labels}
    [out] = viewer.layers.save(str(tmp_path / "organs.nii.gz"), selected=True, plugin=PLUGIN)
    np.testing.assert_array_equal(nib.load(out).affine, nib.load(str(src)).affine)
    [again] = viewer.open(out, plugin=PLUGIN)
    assert_named_labels(again)
    np.testing.assert_array_equal(again.data, labels.data)
    np.testing.assert_allclose(again.scale, image.scale)
    np.testing.assert_allclose(again.translate, image.translate)


def test_plain_labels_files_from_other_tools_open_as_labels(make_napari_viewer, tmp_path):
    nib.Nifti1Image(label_blobs((6, 8, 10)).T.astype(np.int16), np.eye(4)).to_filename(
        str(tmp_path / "case_seg.nii.gz"))
    nib.Nifti1Image(label_blobs((6, 8, 10)).T.astype(np.int16), np.eye(4)).to_filename(
        str(tmp_path / "case.nii.gz"))
    viewer = make_napari_viewer()
    [seg] = viewer.open(str(tmp_path / "case_seg.nii.gz"), plugin=PLUGIN)
    [scan] = viewer.open(str(tmp_path / "case.nii.gz"), plugin=PLUGIN)
    assert seg._type_string == "labels" and seg.data.dtype == np.uint8
    assert scan._type_string == "image"  # same values, but nothing says labels


def test_dicom_seg_opens_as_labels_alone_and_with_its_scan(make_napari_viewer, tmp_path):
    from napari_unet.io import write_dicom_seg

    study = tmp_path / "study"
    data = np.random.default_rng(1).integers(0, 900, (5, 16, 20)).astype(np.int16)
    write_dicom_series(data, study / "ct", spacing=(3.0, 0.8, 0.7), origin=(-50.0, 20.0, 7.5),
                       direction=AXIAL, modality="CT")
    scan = read_volume(study / "ct")
    labels = label_blobs(scan.spatial_shape)
    from napari_unet.io.class_codes import class_codes_from_texts, palette_rgb

    with pytest.warns(UserWarning, match="without a coded concept"):
        write_dicom_seg(labels, study / "seg" / "organs.dcm", like=scan, class_names=NAMES,
                        class_codes=class_codes_from_texts(["Liver#336699", "-"], 3))

    viewer = make_napari_viewer()
    [alone] = viewer.open(str(study / "seg" / "organs.dcm"), plugin=PLUGIN)
    assert_named_labels(alone)
    # the colours the SEG recommends: the model's for 1, the palette's for 2 (CIELab there)
    for value, rgb in ((1, (0x33, 0x66, 0x99)), (2, palette_rgb(2))):
        shown = np.asarray(alone.colormap.map(np.array([value])))[0, :3] * 255
        assert np.abs(shown - rgb).max() <= 1.5, value
    assert (np.asarray(alone.data) == 2).sum() == (labels == 2).sum()
    for index in np.argwhere(np.asarray(alone.data) == 2):  # lands on the tumour
        at = np.linalg.solve(scan.affine, [*alone.metadata["napari_unet_volume"].affine
                                           @ [*index, 1]])[:3]
        assert labels[tuple(np.round(at).astype(int))] == 2

    image, on_scan = viewer.open(str(study), plugin=PLUGIN)
    assert image._type_string == "image"
    assert_named_labels(on_scan)
    np.testing.assert_array_equal(on_scan.data, labels)
    np.testing.assert_allclose(on_scan.scale, image.scale)
    np.testing.assert_allclose(on_scan.translate, image.translate)
    [out] = on_scan.save(str(tmp_path / "organs.nii.gz"), plugin=PLUGIN)
    assert nib.load(out).header.get_intent()[0] == "label"


def test_looks_like_labels_warns_for_label_maps_only(make_napari_viewer, tmp_path):
    from napari_unet._napari.layers import looks_like_labels

    viewer = make_napari_viewer()
    [scan] = viewer.open(str(ras_nifti(tmp_path / "scan.nii.gz")), plugin=PLUGIN)
    assert not looks_like_labels(scan)
    as_image = viewer.add_image(label_blobs((6, 8, 10)))  # a label map someone opened as image
    assert looks_like_labels(as_image)
    assert looks_like_labels(viewer.add_labels(np.zeros((4, 4, 4), np.uint8)))
    assert not looks_like_labels(viewer.add_image(np.random.default_rng(0).random((4, 5, 6))))


@pytest.mark.parametrize("typed", ["organs.nii.gz", "organs"])
def test_file_save_selected_layers_menu_writes_named_labels(make_napari_viewer, tmp_path, typed):
    """Typed with or without the extension, the file is ``organs.nii.gz``."""
    from support.napari_doors import menu_action, watch_dialogs

    src = ras_nifti(tmp_path / "scan.nii.gz")
    viewer = make_napari_viewer()
    [image] = viewer.open(str(src), plugin=PLUGIN)
    labels = viewer.add_labels(label_blobs(image.data.shape), name="organs",
                               metadata=image.metadata,
                               features={"index": [0, 1, 2], "class": NAMES})
    viewer.layers.selection = {labels}
    target = tmp_path / "saved" / "organs.nii.gz"
    target.parent.mkdir()
    with watch_dialogs() as dialogs:
        dialogs.file_name, dialogs.file_type = str(target.parent / typed), "class names"
        menu_action(viewer, "napari.window.file.save_layers_dialog.selected").trigger()
    assert dialogs.titles == ["Save selected layers"] and not dialogs.errors
    np.testing.assert_array_equal(nib.load(target).affine, nib.load(str(src)).affine)
    [again] = viewer.open(str(target), plugin=PLUGIN)
    assert_named_labels(again)
    np.testing.assert_array_equal(again.data, labels.data)


def test_layer_without_source_is_written_by_its_anatomical_axes(make_napari_viewer, tmp_path):
    """A layer drawn over a sagittal scan (its placement copied, no source kept) is saved
    where it is shown, through its axis labels."""
    from napari_unet._napari.layers import geometry_kwargs
    from support.phantoms import write_phantom_nifti

    src = write_phantom_nifti(tmp_path / "sag.nii.gz", "sagittal")
    viewer = make_napari_viewer()
    [image] = viewer.open(str(src), plugin=PLUGIN)
    assert image.axis_labels[0] == "R→L"
    drawn = viewer.add_labels(label_blobs(image.data.shape), **geometry_kwargs(image))
    [out] = drawn.save(str(tmp_path / "drawn.nii.gz"), plugin=PLUGIN)
    np.testing.assert_allclose(nib.load(out).affine, nib.load(src).affine, atol=1e-5)
    np.testing.assert_array_equal(read_volume(out).array, drawn.data)


def test_tilted_ct_lines_up_and_file_save_writes_what_itk_and_nibabel_agree_on(
        make_napari_viewer, tmp_path):
    """A gantry-tilted CT shows each voxel at its own place (the shear as layer affine);
    labels drawn on it and saved through napari (``viewer.layers.save``, as File > Save
    does) are resampled onto an orthogonal grid, and reopen where the scan is."""
    from napari_unet._napari.layers import data_to_world, geometry_kwargs
    from support import geometry_cases as cases
    from support.nifti_checks import assert_content_in_place, assert_nifti_agrees, read_itk

    folder = cases.tilted_ct(tmp_path / "ct", shape=(8, 32, 36))
    viewer = make_napari_viewer()
    [image] = viewer.open(str(folder), plugin=PLUGIN)
    w = anatomical_axes(image.metadata["napari_unet_volume"].direction)
    centres = cases.dicom_voxel_centres(folder)
    index = np.stack(np.meshgrid(*[np.arange(n) for n in image.data.shape], indexing="ij"), -1)
    shown = (data_to_world(image) @ np.c_[index.reshape(-1, 3), np.ones(index[..., 0].size)].T)
    np.testing.assert_allclose(shown[:3].T, centres.reshape(-1, 3) @ w.T, atol=1e-4)

    labels = viewer.add_labels((np.asarray(image.data) > 0).astype(np.uint8), name="ball",
                               metadata=dict(image.metadata), **geometry_kwargs(image),
                               features={"index": [0, 1], "class": ["background", "ball"]})
    viewer.layers.selection = {labels}
    [out] = viewer.layers.save(str(tmp_path / "ball.nii.gz"), selected=True, plugin=PLUGIN)
    assert_nifti_agrees(out)
    assert_content_in_place(out, folder, cases.ball, labels=True)
    [again] = viewer.open(out, plugin=PLUGIN)
    assert again._type_string == "labels"
    itk = read_itk(out)
    index = np.stack(np.meshgrid(*[np.arange(n) for n in again.data.shape], indexing="ij"), -1)
    shown = (data_to_world(again) @ np.c_[index.reshape(-1, 3), np.ones(index[..., 0].size)].T)
    np.testing.assert_allclose(shown[:3].T, itk.centres.reshape(-1, 3) @ w.T, atol=1e-4)

    ramp = cases.tilted_ct(tmp_path / "ramp", shape=(8, 32, 36), content="ramp")
    [ramp_layer] = viewer.open(str(ramp), plugin=PLUGIN)
    [img_out] = ramp_layer.save(str(tmp_path / "ct.nii.gz"), plugin=PLUGIN)
    assert_nifti_agrees(img_out)  # an int16 image: linear, rounded back to whole HU
    assert_content_in_place(img_out, ramp, cases.ramp, labels=False, tolerance=1.0)

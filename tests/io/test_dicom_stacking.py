"""What GDCM assumes of the slices' stacking, checked against their own headers: every
array slice must sit at its own ImagePositionPatient with its own rescale (gantry tilt,
enhanced files with frames out of order or with per-frame rescale)."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from napari_unet.io import ScanWarning, read_volume, write_dicom_seg, write_volume
from napari_unet.io.write import ResampledWarning
from support.dicom_factory import new_uid, oblique, write_dicom_series
from support.nifti_checks import assert_nifti_agrees

SHAPE = (6, 9, 11)
AXIAL_IOP = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]  # rows along L, columns along P: normal S


def scan(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 1000, SHAPE).astype(np.int16)


def read_quietly(path) -> tuple:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        vol = read_volume(path)
    return vol, [str(w.message) for w in caught if issubclass(w.category, ScanWarning)]


def slide(files: list[Path], shift_per_mm: tuple[float, float, float]) -> list[np.ndarray]:
    """Shift each slice by ``shift_per_mm`` times its distance along z from the first
    (a gantry tilt when along y); return the new positions."""
    positions = []
    z0 = float(pydicom.dcmread(files[0]).ImagePositionPatient[2])
    for f in files:
        ds = pydicom.dcmread(f)
        p = np.array(ds.ImagePositionPatient, float)
        p += (p[2] - z0) * np.asarray(shift_per_mm)
        ds.ImagePositionPatient = [f"{v:.10g}" for v in p]
        ds.GantryDetectorTilt = 20
        ds.save_as(f)
        positions.append(p)
    return positions


def world_of_slices(affine: np.ndarray, n: int) -> np.ndarray:
    return np.array([(affine @ [k, 0, 0, 1])[:3] for k in range(n)])


def source_positions(vol) -> np.ndarray:
    return np.array([pydicom.dcmread(f).ImagePositionPatient for f in vol.source.files], float)


@pytest.mark.parametrize("shift", [(0.0, math.tan(math.radians(20)), 0.0), (0.7, 0.0, 0.0)],
                         ids=["gantry-tilt", "shear-x"])
def test_tilted_series_keeps_every_slice_at_its_position(tmp_path, shift):
    write_dicom_series(scan(), tmp_path / "ct", spacing=(2.0, 0.8, 0.7),
                       origin=(-10.0, 5.0, 40.0), modality="CT")
    slide(sorted((tmp_path / "ct").glob("*.dcm")), shift)
    vol, notes = read_quietly(tmp_path / "ct")
    assert any("stacked obliquely" in n and "shear" in n for n in notes), notes
    assert any("stacked obliquely" in n for n in vol.source.warnings)
    ipp = source_positions(vol)
    np.testing.assert_allclose(world_of_slices(vol.affine, len(ipp)), ipp, atol=1e-3)
    np.testing.assert_allclose(vol.direction[:, 1:], [[0, 1], [1, 0], [0, 0]], atol=1e-9)


def test_tilted_series_outputs_open_everywhere_and_the_seg_keeps_the_slices(tmp_path):
    """The labels NIfTI is resampled onto an orthogonal grid through the slice planes
    (ITK refuses shear); the DICOM SEG references each source slice at its own place."""
    write_dicom_series(scan(1), tmp_path / "ct", spacing=(2.0, 0.8, 0.7), modality="CT")
    slide(sorted((tmp_path / "ct").glob("*.dcm")), (0.0, math.tan(math.radians(20)), 0.0))
    vol, _ = read_quietly(tmp_path / "ct")
    labels = (vol.array > 500).astype(np.uint8)
    with pytest.warns(ResampledWarning, match="20.0 degrees"):
        out = write_volume(labels, tmp_path / "out" / "labels.nii.gz", like=vol)
    assert_nifti_agrees(out)
    img = nib.load(out)
    lps = np.diag([-1, -1, 1, 1]) @ img.affine
    ipp = source_positions(vol)
    normal = lps[:3, 2] / np.linalg.norm(lps[:3, 2])  # NIfTI k: the slices' normal
    np.testing.assert_allclose((ipp - lps[:3, 3]) @ normal,  # slice k on plane k
                               np.arange(SHAPE[0]) * np.linalg.norm(lps[:3, 2]), atol=1e-3)
    seg = pydicom.dcmread(write_dicom_seg(labels, tmp_path / "out" / "seg.dcm", like=vol,
                                          class_names=["bg", "bright"]))
    seg_pos = {tuple(np.round(np.array(f.PlanePositionSequence[0].ImagePositionPatient,
                                       float), 3)) for f in seg.PerFrameFunctionalGroupsSequence}
    assert seg_pos <= {tuple(np.round(p, 3)) for p in ipp}


def test_straight_oblique_series_keeps_orthogonal_geometry(tmp_path):
    write_dicom_series(scan(2), tmp_path / "mr", spacing=(2.5, 0.8, 0.7),
                       origin=(-10.0, 5.0, 40.0), direction=oblique(25))
    vol, notes = read_quietly(tmp_path / "mr")
    assert not notes
    np.testing.assert_allclose(vol.direction.T @ vol.direction, np.eye(3), atol=1e-6)


# --- enhanced multi-frame files crafted with pydicom ------------------------------------------


def enhanced(path: Path, positions, frames: np.ndarray, rescales=None) -> Path:
    """An enhanced MR file whose frame k has ``frames[k]`` at ``positions[k]`` and, when
    given, its own (slope, intercept) ``rescales[k]`` (else one shared identity)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4.1"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = new_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        setattr(ds, keyword, new_uid())
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "MR", 5, 1
    ds.PatientName, ds.PatientID, ds.ImageType = "Doe^Jane", "PID-1", ["ORIGINAL", "PRIMARY"]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.NumberOfFrames, ds.Rows, ds.Columns = frames.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.SharedFunctionalGroupsSequence = [_shared(rescales is None)]
    ds.PerFrameFunctionalGroupsSequence = [
        _frame(k, p, None if rescales is None else rescales[k]) for k, p in enumerate(positions)]
    ds.PixelData = frames.astype(np.int16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def _shared(identity_rescale: bool) -> Dataset:
    shared, measures, plane = Dataset(), Dataset(), Dataset()
    measures.PixelSpacing, measures.SliceThickness = [0.8, 0.7], 1.0
    measures.SpacingBetweenSlices = 1.0
    plane.ImageOrientationPatient = AXIAL_IOP
    shared.PixelMeasuresSequence, shared.PlaneOrientationSequence = [measures], [plane]
    if identity_rescale:
        shared.PixelValueTransformationSequence = [_rescale(1, 0)]
    return shared


def _frame(k: int, position, rescale) -> Dataset:
    frame, plane, content = Dataset(), Dataset(), Dataset()
    plane.ImagePositionPatient = [f"{v:.10g}" for v in position]
    content.InStackPositionNumber, content.StackID = k + 1, "1"
    frame.PlanePositionSequence, frame.FrameContentSequence = [plane], [content]
    if rescale is not None:
        frame.PixelValueTransformationSequence = [_rescale(*rescale)]
    return frame


def _rescale(slope, intercept) -> Dataset:
    item = Dataset()
    item.RescaleSlope, item.RescaleIntercept, item.RescaleType = slope, intercept, "US"
    return item


def straight(n: int, z0: float = 40.0) -> list[np.ndarray]:
    return [np.array([-10.0, 5.0, z0 + k]) for k in range(n)]


def test_enhanced_tilted_frames_sit_at_their_positions(tmp_path):
    positions = [p + [0, (p[2] - 40) * math.tan(math.radians(15)), 0] for p in straight(6)]
    vol, notes = read_quietly(enhanced(tmp_path / "e.dcm", positions, scan(3)))
    assert any("stacked obliquely" in n for n in notes), notes
    np.testing.assert_allclose(world_of_slices(vol.affine, 6), positions, atol=1e-3)
    np.testing.assert_array_equal(vol.array, scan(3))


def test_enhanced_frames_out_of_order_are_put_in_order_and_the_seg_follows(tmp_path):
    """GDCM stacks frames in file order: frames stored shuffled are sorted by position,
    and a DICOM SEG still gives each source frame its own labels."""
    import highdicom as hd

    order = [3, 0, 5, 1, 4, 2]
    data = scan(4)
    path = enhanced(tmp_path / "shuffled.dcm", [straight(6)[k] for k in order], data[order])
    vol, notes = read_quietly(path)
    assert any("not stored in spatial order" in n for n in notes), notes
    np.testing.assert_array_equal(vol.array, data)
    np.testing.assert_allclose(world_of_slices(vol.affine, 6), straight(6), atol=1e-6)
    assert vol.source.slice_index == tuple(order)
    np.testing.assert_array_equal(read_volume(tmp_path).array, data)
    labels = (np.arange(6)[:, None, None] % 3 * np.ones_like(data)).astype(np.uint8)
    seg = hd.seg.segread(write_dicom_seg(labels, tmp_path / "seg.dcm", like=vol,
                                         class_names=["bg", "a", "b"]))
    for frame, k in enumerate(order, start=1):  # source frame -> its slice's labels
        mine = seg.get_pixels_by_source_frame(vol.source.sop_instance_uids[0], [frame],
                                              combine_segments=True)
        np.testing.assert_array_equal(mine[0], labels[k])


def test_enhanced_frames_in_descending_order_are_read(tmp_path):
    positions = straight(6)[::-1]
    vol, notes = read_quietly(enhanced(tmp_path / "desc.dcm", positions, scan(5)))
    assert not notes
    np.testing.assert_allclose(world_of_slices(vol.affine, 6), positions, atol=1e-6)
    np.testing.assert_array_equal(vol.array, scan(5))


@pytest.mark.parametrize("rescales", [
    [(1, -100 * k) for k in range(6)],
    [(2, -5), (0.5, 1.25), (1, 0), (3, 7), (0.25, -1000), (1.5, 0.5)],
], ids=["integer", "fractional"])
def test_enhanced_per_frame_rescale_is_applied_to_each_frame(tmp_path, rescales):
    stored = scan(6)
    vol, _ = read_quietly(enhanced(tmp_path / "r.dcm", straight(6), stored, rescales))
    expected = np.stack([stored[k] * s + i for k, (s, i) in enumerate(rescales)])
    np.testing.assert_allclose(vol.array, expected, rtol=1e-6, atol=1e-3)
    if all(float(v).is_integer() for pair in rescales for v in pair):
        assert np.issubdtype(vol.array.dtype, np.integer)

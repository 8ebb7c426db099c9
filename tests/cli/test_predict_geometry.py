"""``napari-unet predict`` on scans whose geometry other tools read differently: every
NIfTI it writes (labels, denoised, probabilities, uncertainty) opens in SimpleITK and
nibabel at the same place; a gantry-tilted CT's NIfTIs are resampled (said in
report.json), its DICOM SEG still references each source slice."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from napari_unet.errors import VolumeReadError
from napari_unet.io import read_volume
from support import geometry_cases as cases
from support.batch_data import tiny_model
from support.cli_run import by_name, console, load_report, run_cli
from support.nifti_checks import assert_nifti_agrees, read_itk


@pytest.fixture(scope="module")
def tilted(tmp_path_factory):
    return cases.tilted_ct(tmp_path_factory.mktemp("in") / "tilted", shape=(8, 32, 36))


def seg_labels_at(seg_path, series, points) -> np.ndarray:
    """The SEG's label at LPS ``points``: highdicom decodes it per source slice, the
    point's nearest pixel is found by hand from the source headers."""
    import highdicom as hd

    seg = hd.seg.segread(seg_path)
    slices = cases.dicom_slices(series)
    per_slice = seg.get_pixels_by_source_instance(
        [ds.SOPInstanceUID for ds in slices], combine_segments=True,
        assert_missing_frames_are_empty=True)
    k, rc, _, size = cases.dicom_pixel_coordinates(series, points)
    r, c = np.clip(np.rint(rc), 0, size - 1).astype(int).T
    inside = np.all((rc >= -0.5) & (rc <= size - 0.5), axis=1)
    return np.where(inside, per_slice[k, r, c], 0)


@pytest.mark.slow
def test_tilted_ct_outputs_open_everywhere_and_agree_with_the_seg(tmp_path, tilted):
    model = tiny_model(tmp_path / "m.safetensors")
    done = console("predict", tilted, "-o", tmp_path / "out", "--model", model,
                   "--format", "both", "--probabilities", "--quiet")
    assert done.returncode == 0, done.stderr
    (entry,) = load_report(tmp_path / "out")["scans"]
    assert entry["status"] == "ok"
    niftis = sorted(o for o in entry["outputs"] if o.endswith(".nii.gz"))
    assert [n.rsplit("_", 1)[1] for n in niftis] == \
        ["labels.nii.gz", "probabilities.nii.gz", "uncertainty.nii.gz"]
    note = entry["resampled"]
    assert sorted(note["outputs"]) == niftis and note["shear_degrees"] == pytest.approx(15, 0.01)
    assert any("resampled onto an orthogonal grid" in w for w in entry["warnings"])
    for name in niftis:
        assert_nifti_agrees(tmp_path / "out" / name)
    labels = read_itk(tmp_path / "out" / niftis[0])
    seg = next(o for o in entry["outputs"] if o.endswith("_seg.dcm"))
    expected = seg_labels_at(tmp_path / "out" / seg, tilted, labels.centres.reshape(-1, 3))
    np.testing.assert_array_equal(labels.values.reshape(-1), expected)
    for path in (tmp_path / "out").iterdir():  # our reader opens or names what it cannot
        try:
            read_volume(path)
        except VolumeReadError as e:
            assert str(path) in str(e)
    referenced = {ref.ReferencedSOPInstanceUID
                  for f in pydicom.dcmread(tmp_path / "out" / seg).PerFrameFunctionalGroupsSequence
                  for ref in f.DerivationImageSequence[0].SourceImageSequence}
    assert referenced <= {ds.SOPInstanceUID for ds in cases.dicom_slices(tilted)}


@pytest.mark.slow
def test_denoised_tilted_ct_is_resampled_linearly_and_said_so(tmp_path, tilted):
    model = tiny_model(tmp_path / "d.safetensors", "denoise")
    code, log = run_cli("predict", tilted, "-o", tmp_path / "out", "--model", model,
                        "--quiet")
    assert code == 0, log
    (entry,) = load_report(tmp_path / "out")["scans"]
    (name,) = entry["outputs"]
    assert name.endswith("_denoised.nii.gz") and entry["resampled"]["outputs"] == [name]
    assert_nifti_agrees(tmp_path / "out" / name)
    values = read_itk(tmp_path / "out" / name).values
    assert values.dtype == np.float32 and np.isfinite(values).all()


def split_model(scan, path):
    """A tiny binary model whose labels vary from voxel to voxel on ``scan`` (an untrained
    one gives one label everywhere): its threshold moved to its median probability."""
    import math

    import torch

    from napari_unet import predict
    from support.tiny_models import tiny_model as random_model

    model = random_model("segment", n_classes=1)
    p = float(np.median(predict(read_volume(scan), model, probabilities=True).probabilities))
    with torch.no_grad():
        model.net.outc.conv.bias -= math.log(p / (1 - p))
    return model.save(path)


@pytest.mark.slow
def test_a_ct_in_zones_of_slice_spacing_gets_niftis_on_even_slices_at_its_own(tmp_path):
    """Slices 1 mm then 2.5 mm apart: at the mean spacing (1.7 mm) the labels sat up to
    6 mm from their slices. Now each NIfTI voxel holds the label the SEG gives its
    nearest source slice there, and every source slice has a NIfTI slice within half a
    step of its ImagePositionPatient."""
    import nibabel as nib

    series = cases.zoned_ct(tmp_path / "zones")
    model = split_model(series, tmp_path / "m.safetensors")
    done = console("predict", series, "-o", tmp_path / "out", "--model", model,
                   "--format", "both", "--probabilities", "--quiet", "--no-qc")
    assert done.returncode == 0, done.stderr
    (entry,) = load_report(tmp_path / "out")["scans"]
    niftis = sorted(o for o in entry["outputs"] if o.endswith(".nii.gz"))
    for name in (niftis[0], niftis[2]):  # labels (nearest), uncertainty (linear)
        assert_nifti_agrees(tmp_path / "out" / name)
    labels = read_itk(tmp_path / "out" / niftis[0])
    values = labels.values.reshape(-1)
    assert len(np.unique(values)) > 1  # the check below is not all background
    seg = next(o for o in entry["outputs"] if o.endswith("_seg.dcm"))
    expected = seg_labels_at(tmp_path / "out" / seg, series, labels.centres.reshape(-1, 3))
    np.testing.assert_array_equal(values, expected)
    z_out = labels.centres[:, 0, 0, 2]
    z_src = np.array([float(ds.ImagePositionPatient[2]) for ds in cases.dicom_slices(series)])
    step = nib.load(tmp_path / "out" / niftis[0]).header.get_zooms()[2]
    assert step == pytest.approx(1.0, abs=1e-4)
    assert np.abs(z_src[:, None] - z_out[None, :]).min(axis=1).max() <= step / 2 + 1e-3
    assert len(niftis) == 3 and sorted(entry["resampled"]["outputs"]) == niftis
    assert entry["resampled"]["even_slices"] is True
    assert any("evenly spaced slices 1 mm apart" in w for w in entry["warnings"])


def test_a_batch_resamples_only_the_tilted_scan(tmp_path, tilted):
    """Three scans in one run: the tilted CT is resampled, the rounded oblique MR and
    nibabel's Siemens pair are written on their own voxels where the source puts them."""
    mr = cases.rounded_oblique_mr(tmp_path / "in" / "mr", shape=(6, 32, 36))
    pair = cases.siemens_pair(tmp_path / "in" / "pair")
    model = tiny_model(tmp_path / "m.safetensors")
    code, log = run_cli("predict", tilted, mr, pair, "-o", tmp_path / "out", "--model", model,
                        "--quiet", "--no-qc")
    assert code == 0, log
    entries = list(by_name(load_report(tmp_path / "out")).values())
    assert [e["status"] for e in entries] == ["ok"] * 3
    for e in entries:
        (labels,) = e["outputs"]
        path = tmp_path / "out" / labels
        if e["name"].startswith("CT"):
            assert e["resampled"]["outputs"] == [labels]
            assert_nifti_agrees(path)
            continue
        assert e["resampled"] is None
        assert not [w for w in e["warnings"] if "oblique" in w or "uneven" in w], e["warnings"]
        folder = mr if "test_series" in e["name"] else pair
        assert_nifti_agrees(path, cases.dicom_voxel_centres(folder))


@pytest.mark.parametrize("unit", ["micron", "meter"])
def test_a_nifti_in_microns_or_metres_keeps_its_unit(tmp_path, unit):
    """ITK scales a NIfTI's numbers by its spatial unit (to mm), nibabel reads them as
    they are: the labels must say the source's unit, or ITK puts them 1000 times away
    from the scan."""
    import nibabel as nib
    import SimpleITK as sitk

    affine = np.array([[0.0, 0.0, -2.5, 40.0], [0.9, 0.0, 0.0, -12.5],
                       [0.0, 1.1, 0.0, 7.0], [0.0, 0.0, 0.0, 1.0]])
    i, j, k = np.indices((20, 24, 6))
    ball = ((i - 10) ** 2 + (j - 12) ** 2 + (4 * (k - 3)) ** 2 < 50).astype(np.float32)
    img = nib.Nifti1Image(900 * ball, affine)
    img.header.set_xyzt_units(xyz=unit)
    nib.save(img, tmp_path / "scan.nii.gz")
    done = console("predict", tmp_path / "scan.nii.gz", "-o", tmp_path / "out", "--model",
                   tiny_model(tmp_path / "m.safetensors"), "--quiet", "--no-qc")
    assert done.returncode == 0, done.stderr
    out = tmp_path / "out" / "scan_labels.nii.gz"
    assert nib.load(out).header.get_xyzt_units()[0] == unit
    np.testing.assert_allclose(nib.load(out).affine, affine, atol=1e-5)
    source, labels = sitk.ReadImage(str(tmp_path / "scan.nii.gz")), sitk.ReadImage(str(out))
    for get in ("GetOrigin", "GetSpacing", "GetDirection"):
        np.testing.assert_allclose(getattr(labels, get)(), getattr(source, get)(), atol=1e-4)

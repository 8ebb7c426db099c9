"""Small real inputs for the batch and predict CLI tests: tiny models, NIfTI files, DICOM.

DICOM series carry a fake patient (``Doe^Jane`` / ``PID-12345``) so tests can check that
no patient name or ID reaches output names, reports or logs.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np

PATIENT_NAME = "Doe^Jane"
PATIENT_ID = "PID-12345"
PATIENT_STRINGS = ("Doe", "Jane", PATIENT_ID)
# nibabel array (x, y, z) -> napari-unet volume (z, y, x) = (6, 32, 40)
NIFTI_SHAPE = (40, 32, 6)


def tiny_model(path: Path, kind: str = "segment", n_classes: int = 3, seed: int = 0) -> Path:
    import torch

    from napari_unet.model.checkpoint import Model
    from napari_unet.model.tasks import make_task

    torch.manual_seed(seed)
    names = {3: ["background", "grey", "white"], 1: ["background", "lesion"]}.get(n_classes)
    task = (make_task("denoise") if kind == "denoise"
            else make_task("segment", n_classes=n_classes, class_names=names))
    return Model.new(task, base=4, patch_size=(32, 48), name=f"tiny-{kind}").save(path)


def nifti_scan(path: Path, seed: int = 0, shape=NIFTI_SHAPE) -> Path:
    """A smooth random volume with an oblique-free, non-trivial affine."""
    rng = np.random.default_rng(seed)
    data = rng.normal(100.0, 30.0, size=shape).astype(np.float32)
    data[shape[0] // 4: 3 * shape[0] // 4, shape[1] // 4: 3 * shape[1] // 4] += 150.0
    affine = np.diag([1.0, 1.25, 2.5, 1.0])
    affine[:3, 3] = (-20.0 + seed, 10.0, 5.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def dicom_series(folder: Path, seed: int, number: int, description: str,
                 prefix: str = "slice") -> list[Path]:
    """A 6 x 32 x 40 MR series whose files name the fake patient (name and ID)."""
    import pydicom

    from support.dicom_factory import write_dicom_series

    rng = np.random.default_rng(seed)
    data = rng.integers(0, 800, size=(6, 32, 40))
    paths = write_dicom_series(data, folder, spacing=(2.5, 1.0, 1.0), patient_name=PATIENT_NAME,
                               series_description=description, series_number=number,
                               prefix=prefix)
    for p in paths:
        ds = pydicom.dcmread(p)
        ds.PatientID = PATIENT_ID
        ds.save_as(p)
    return paths


def broken_nifti(path: Path) -> Path:
    """A real NIfTI file cut in half (as after a failed copy)."""
    nifti_scan(path, seed=99)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    return path


def broken_dicom(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not a dicom file at all\n" * 20)
    return path


def non_image_dicom(path: Path, name: str = "rtstruct.dcm") -> Path:
    from pydicom.data import get_testdata_file

    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(get_testdata_file(name), path)
    return path


def mixed_folder(root: Path) -> Path:
    """3 NIfTI files (one nested), a DICOM folder with 2 series and an RTSTRUCT, 2 broken
    files and a 2-channel scan that fails inside predict (1-channel model)."""
    nifti_scan(root / "scan_a.nii.gz", seed=1)
    nifti_scan(root / "scan_b.nii.gz", seed=2)
    nifti_scan(root / "nested" / "scan_c.nii.gz", seed=3)
    dicom_series(root / "dicom", seed=4, number=3, description="T1 axial", prefix="t1_")
    dicom_series(root / "dicom", seed=5, number=7, description="T2 axial", prefix="t2_")
    non_image_dicom(root / "dicom" / "structures.dcm")
    broken_nifti(root / "broken.nii.gz")
    broken_dicom(root / "junk" / "corrupt.dcm")
    two_channels = np.zeros((*NIFTI_SHAPE, 2), np.float32)  # readable, but not for the model
    nib.save(nib.Nifti1Image(two_channels, np.eye(4)), str(root / "two_channels.nii.gz"))
    (root / "notes.txt").write_text("not a scan; ignored\n")
    return root


def all_text(folder: Path, skip: tuple[str, ...] = ()) -> str:
    """Every file name under ``folder`` and the content of every file (gunzipped), but
    the content of files whose names end with one of ``skip``."""
    parts = []
    for p in sorted(folder.rglob("*")):
        parts.append(str(p.relative_to(folder)))
        if p.is_file() and not (skip and p.name.endswith(skip)):
            raw = p.read_bytes()
            if p.name.endswith(".gz"):
                raw = gzip.decompress(raw)
            parts.append(raw.decode("latin-1"))
    return "\n".join(parts)


def series_with_a_gap(folder: Path, seed: int = 6) -> Path:
    """A DICOM series with its third slice missing: the reader warns (assumed geometry)."""
    paths = dicom_series(folder, seed=seed, number=9, description="gap")
    paths[2].unlink()
    return folder


def rtdose(folder: Path) -> Path:
    """pydicom's multi-frame RTDOSE: readable as a volume, but no DICOM SEG source."""
    return non_image_dicom(folder / "rtdose.dcm", "rtdose.dcm").parent


def process_scan_or_die(scan, job):
    """``process_scan`` that SIGKILLs its own worker on scans named ``die*`` (as the
    out-of-memory killer would); tests put it in place with monkeypatch."""
    import os
    import signal

    from napari_unet.batch.scan_job import process_scan

    if scan.name.startswith("die"):
        os.kill(os.getpid(), signal.SIGKILL)
    return process_scan(scan, job)

"""File names of the formats napari-unet reads: one list of suffixes, one way to name a scan."""

from __future__ import annotations

from pathlib import Path

NIFTI_SUFFIXES = (".nii.gz", ".nii")
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")


def is_nifti_path(path: str | Path) -> bool:
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def has_dicom_suffix(path: str | Path) -> bool:
    return str(path).lower().endswith(DICOM_SUFFIXES)


def nifti_stem(path: str | Path) -> str:
    """``scan_01.nii.gz`` -> ``scan_01`` (other names lose their last suffix only)."""
    name = Path(path).name
    for ext in NIFTI_SUFFIXES:
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return Path(path).stem

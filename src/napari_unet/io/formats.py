"""File names of the formats napari-unet reads: one list of suffixes, one way to name a scan."""

from __future__ import annotations

import os
import stat
from pathlib import Path

NIFTI_SUFFIXES = (".nii.gz", ".nii")
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
# formats people pass by mistake, by suffix: named in the error instead of "not DICOM"
UNSUPPORTED_FORMATS = {
    ".mgz": "FreeSurfer MGH/MGZ", ".mgh": "FreeSurfer MGH/MGZ",
    ".img": "Analyze 7.5 (.hdr/.img)", ".hdr": "Analyze 7.5 (.hdr/.img)",
    ".nrrd": "NRRD", ".nhdr": "NRRD", ".mha": "MetaImage", ".mhd": "MetaImage",
    ".mnc": "MINC", ".nii.bz2": "bzip2-compressed NIfTI",
}


def is_nifti_path(path: str | Path) -> bool:
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def has_dicom_suffix(path: str | Path) -> bool:
    return str(path).lower().endswith(DICOM_SUFFIXES)


def unsupported_format(path: str | Path) -> str | None:
    """The name of a known image format napari-unet does not read, from the suffix."""
    lower = str(path).lower()
    return next((name for ext, name in UNSUPPORTED_FORMATS.items() if lower.endswith(ext)),
                None)


def nifti_stem(path: str | Path) -> str:
    """``scan_01.nii.gz`` -> ``scan_01`` (other names lose their last suffix only)."""
    name = Path(path).name
    for ext in NIFTI_SUFFIXES:
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return Path(path).stem


def has_dicm_magic(path: Path) -> bool:
    """The DICOM preamble's magic; opened non-blocking and checked to be a regular file."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        os.lseek(fd, 128, os.SEEK_SET)
        return os.read(fd, 4) == b"DICM"
    except OSError:
        return False
    finally:
        os.close(fd)


def scans_from_files(paths: list[str]) -> list[str]:
    """Files a person picked in a file dialog -> the scans they mean: a NIfTI file is one
    scan, DICOM files stand for their folder's series (a dialog cannot pick folders, and
    each slice on its own is no scan), in the order first picked."""
    out: list[str] = []
    for path in map(Path, paths):
        dicom = not is_nifti_path(path) and (has_dicom_suffix(path) or has_dicm_magic(path))
        scan = str(path.parent) if dicom else str(path)
        if scan not in out:
            out.append(scan)
    return out

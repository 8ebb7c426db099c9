"""``read_volume``: one entry point for NIfTI files, DICOM files and DICOM folders."""

from __future__ import annotations

from pathlib import Path

from ..errors import VolumeReadError
from .formats import has_dicm_magic, is_nifti_path, unsupported_format
from .volume import Volume


def read_volume(
    path: str | Path, series: int | str | None = None, volume_index: int | None = None
) -> Volume:
    """Read a scan into a slices-first ``Volume`` (array as ``sitk.GetArrayFromImage``).

    ``path``: a ``.nii``/``.nii.gz`` file, a DICOM file (just that file: one slice or a
    multi-frame volume; pass its folder for the whole series), or a folder of DICOM
    files (searched recursively). In a folder with several image series, ``series`` (index in
    ``list_series(folder)``, SeriesInstanceUID or its short hash) must say which one:
    there is no silent choice, the error lists the series. ``volume_index`` picks one
    volume of a 4D NIfTI file (default: a short 4th axis becomes channels).
    Geometry is LPS (``io.geometry``). Anything unreadable raises ``VolumeReadError``
    naming the file and the reason.
    """
    from . import dicom, nifti

    path = Path(path)
    if not path.exists():
        raise VolumeReadError(f"{path}: no such file or folder (removed, or renamed, since "
                              "it was given?).")
    if path.is_dir():
        return dicom.read_dicom_folder(path, series)
    if path.stat().st_size == 0:
        raise VolumeReadError(f"{path}: the file is empty (0 bytes).")
    if is_nifti_path(path):
        return nifti.read_nifti(path, volume_index)
    other = unsupported_format(path)
    if other and not has_dicm_magic(path):  # DICOM whatever its suffix
        raise VolumeReadError(f"{path}: {other} files are not supported; napari-unet reads "
                              "NIfTI (.nii, .nii.gz) and DICOM: convert it to NIfTI first.")
    return dicom.read_dicom_file(path)


"""DICOM reading: single files, multi-frame files and folders of one or several series.

Finding, sorting and checking the slices of a series is ``io.series``' job. Pixels and
geometry come from SimpleITK (GDCM): rescale slope/intercept applied (CT in HU; int16
when the values fit, float32 when the rescale is fractional), compressed transfer
syntaxes as far as GDCM decodes them. Missing slices or uneven spacing give a
``SliceSpacingWarning`` naming the series and the gaps, also kept in
``Volume.source.warnings``; the volume then has SimpleITK's mean spacing.
A single file is read on its own (pass its folder to read its whole series).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np

from ..errors import VolumeReadError
from . import geometry
from .series import (  # noqa: F401 - re-exported: the batch helper imports them from here
    NON_IMAGE_MODALITIES,
    SeriesInfo,
    SeriesList,
    SliceSpacingWarning,
    check_series,
    choose_series,
    frames_in,
    list_series,
    non_image_reason,
    read_header,
    scan_folder,
    uid_hash,
)
from .source import DicomSource
from .volume import Volume

# --- reading -----------------------------------------------------------------------------


def read_dicom_file(path: str | Path) -> Volume:
    """One DICOM file: a single slice (1 x rows x cols) or a multi-frame volume."""
    path = Path(path)
    ds, reason = read_header(path)
    if ds is None:
        raise VolumeReadError(f"{path}: {reason}.")
    reason = non_image_reason(ds)
    if reason:
        raise VolumeReadError(f"{path}: not an image to open: {reason}.")
    notes = check_series(str(path), [(str(path), ds)])
    for note in notes:
        warnings.warn(note, SliceSpacingWarning, stacklevel=3)
    return _read_members(path, path.stem, [(str(path), ds)], notes)


def read_dicom_folder(folder: str | Path, series: int | str | None = None) -> Volume:
    """One series of a folder (``series``: index, SeriesInstanceUID or its short hash)."""
    folder = Path(folder)
    listing, groups = scan_folder(folder)
    info = choose_series(folder, listing, series)
    return _read_series(folder, listing, groups, info)


def read_all_series(
    folder: str | Path, scan: tuple[SeriesList, dict] | None = None
) -> list[tuple[SeriesInfo, Volume | VolumeReadError]]:
    """Every image series of a folder, scanning the headers once (``scan``: the result of
    ``scan_folder`` when the caller has it); failures are returned (not raised) so that
    one broken series does not hide the others."""
    folder = Path(folder)
    listing, groups = scan if scan is not None else scan_folder(folder)
    choose_series(folder, listing, 0)  # raises the "no image series" error
    out = []
    for info in listing:
        try:
            out.append((info, _read_series(folder, listing, groups, info)))
        except VolumeReadError as e:
            out.append((info, e))
    return out


def _read_series(folder: Path, listing: SeriesList, groups: dict, info: SeriesInfo) -> Volume:
    members = groups[info.uid]
    label = f"{folder} (series {info.uid_hash})"
    if len(members) > 1 and any(frames_in(ds) > 1 for _, ds in members):
        raise VolumeReadError(f"{label}: mixes multi-frame files with other files; "
                              "open the multi-frame file itself.")
    notes = check_series(label, members)
    for note in notes:
        warnings.warn(note, SliceSpacingWarning, stacklevel=4)
    name = folder.name if len(listing) == 1 else f"{folder.name}_{info.uid_hash}"
    return _read_members(folder, name, members, notes)


def _read_members(path: Path, name: str, members: list, notes: list[str]) -> Volume:
    import SimpleITK as sitk

    files = [f for f, _ in members]
    try:
        if len(files) == 1:
            reader = sitk.ImageFileReader()
            reader.SetImageIO("GDCMImageIO")
            reader.SetFileName(files[0])
        else:
            reader = sitk.ImageSeriesReader()
            reader.SetImageIO("GDCMImageIO")
            reader.SetFileNames(files)
        image = reader.Execute()
        array = sitk.GetArrayFromImage(image)
    except RuntimeError as e:
        reason = next((ln for ln in str(e).splitlines() if "ERROR" in ln), str(e))
        reason = re.sub(r"\(0x[0-9a-fA-F]+\)", "", reason)  # drop ITK object addresses
        raise VolumeReadError(
            f"{path}: SimpleITK/GDCM cannot read the pixel data ({reason.strip()}); "
            "the file may be truncated or use an unsupported compression."
        ) from e
    if image.GetDimension() == 2:  # some IOs give 2D for a single slice
        image = sitk.JoinSeries(image)
        array = array[None]
    spacing, origin, direction = geometry.geometry_from_sitk(image)
    ds0 = members[0][1]
    source = DicomSource(
        path=str(Path(path).resolve()),
        files=tuple(str(Path(f).resolve()) for f in files),
        sop_instance_uids=tuple(str(ds.get("SOPInstanceUID", "")) for _, ds in members),
        series_uid=str(ds0.get("SeriesInstanceUID", "")),
        study_uid=str(ds0.get("StudyInstanceUID", "")),
        frame_of_reference_uid=str(ds0.get("FrameOfReferenceUID", "")),
        multi_frame=frames_in(ds0) > 1,
        warnings=tuple(notes),
    )
    return Volume(_compact(array), spacing, origin, direction,
                  str(ds0.get("Modality", "OT")), source, name)


def _compact(array: np.ndarray) -> np.ndarray:
    """float64 -> float32; wide integers -> int16 when the values fit (CT in HU)."""
    if array.dtype == np.float64:
        return array.astype(np.float32)
    if array.dtype in (np.int32, np.int64, np.uint32) and array.size:
        lo, hi = int(array.min()), int(array.max())
        if lo >= -32768 and hi <= 32767:
            return array.astype(np.int16)
    return array

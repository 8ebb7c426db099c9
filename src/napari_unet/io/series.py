"""DICOM folders: find the image series, describe them, sort and check their slices.

- Headers are read with pydicom (no pixel data) to group files by SeriesInstanceUID and
  skip non-image objects (SR, RTSTRUCT, RTPLAN, SEG, ...) with a reason.
- Slices are sorted **geometrically**: by ImagePositionPatient projected on the slice
  normal (row x column of ImageOrientationPatient), never by InstanceNumber (only the
  fallback when positions are missing).
- A series whose slices differ in size or orientation, or repeat a position, is refused
  (``VolumeReadError``). Missing slices or uneven spacing are *reported* as warnings that
  name the series by a short hash of its UID.
- Series are described without patient information (``SeriesInfo.describe``).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import VolumeReadError

NON_IMAGE_MODALITIES = {
    "SR": "structured report",
    "RTSTRUCT": "RT structure set (contours, not an image)",
    "RTPLAN": "RT plan",
    "RTRECORD": "RT treatment record",
    "KO": "key object selection",
    "PR": "presentation state",
    "SEG": "segmentation object, not a scan",
    "REG": "registration object",
    "DOC": "encapsulated document",
}


class SliceSpacingWarning(UserWarning):
    """A DICOM series with missing slices or uneven slice spacing."""


def uid_hash(uid: str) -> str:
    """Short, stable, non-identifying handle for a SeriesInstanceUID."""
    return hashlib.sha1(uid.encode()).hexdigest()[:8]


@dataclass
class SeriesInfo:
    """One image series in a folder. ``describe()`` never shows patient information."""

    uid: str
    modality: str
    description: str
    n_slices: int
    size: tuple[int, int]  # rows, columns of each slice
    files: list[str] = field(repr=False)  # sorted geometrically when possible
    number: int | None = None

    @property
    def uid_hash(self) -> str:
        return uid_hash(self.uid)

    def describe(self) -> str:
        desc = f" '{self.description}'" if self.description else ""
        rows, cols = self.size
        return (f"{self.modality}{desc}, {self.n_slices} slices of {rows}x{cols} "
                f"(series {self.uid_hash})")


class SeriesList(list):
    """``list[SeriesInfo]`` plus ``skipped``: (file, reason) for every file not used."""

    def __init__(self, series=(), skipped=(), folder: str = ""):
        super().__init__(series)
        self.skipped: list[tuple[str, str]] = list(skipped)
        self.folder = folder

    def describe(self) -> str:
        lines = [f"{i}: {s.describe()}" for i, s in enumerate(self)]
        return "\n".join(lines) or "no image series"


# --- headers ---------------------------------------------------------------------------------


def read_header(path: str | Path):
    """(pydicom Dataset without pixels, None) or (None, reason it is not usable)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(str(path), stop_before_pixels=True)
    except InvalidDicomError:
        if not _starts_like_dataset(path):
            return None, "not a DICOM file"
        try:  # old files without the 128-byte preamble (e.g. pydicom's rtstruct.dcm)
            ds = pydicom.dcmread(str(path), stop_before_pixels=True, force=True)
        except Exception:
            return None, "not a DICOM file"
        if "SOPClassUID" not in ds:
            return None, "not a DICOM file"
    except Exception as e:
        return None, f"unreadable DICOM header ({type(e).__name__}: {e})"
    return ds, None


def _starts_like_dataset(path) -> bool:
    """A file without preamble is parsed only if it starts with a group 0002/0008 tag,
    so that arbitrary large files in a folder are not parsed as DICOM."""
    try:
        with open(path, "rb") as f:
            head = f.read(2)
    except OSError:
        return False
    return head in (b"\x02\x00", b"\x08\x00", b"\x00\x02", b"\x00\x08")


def non_image_reason(ds) -> str | None:
    """Why a DICOM object holds no image to segment, or None for an image."""
    modality = str(ds.get("Modality", "")).upper()
    sop = ds.get("SOPClassUID")
    sop_name = getattr(sop, "name", str(sop))
    if modality in NON_IMAGE_MODALITIES:
        return f"{modality} ({sop_name}): {NON_IMAGE_MODALITIES[modality]}"
    if "Rows" not in ds or "Columns" not in ds:
        return f"{modality or 'unknown modality'} ({sop_name}): no image data"
    return None


def frames_in(ds) -> int:
    return int(ds.get("NumberOfFrames", 1) or 1)


# --- folders ---------------------------------------------------------------------------------


def _candidate_files(folder: Path) -> list[Path]:
    files = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files += [Path(root, n) for n in sorted(names) if not n.startswith(".")]
    return files


def scan_folder(folder: str | Path) -> tuple[SeriesList, dict[str, list]]:
    """Group a folder's (recursive) DICOM image files by series; also return the headers."""
    folder = Path(folder)
    groups: dict[str, list] = {}
    skipped = []
    for f in _candidate_files(folder):
        ds, reason = read_header(f)
        if ds is not None:
            reason = non_image_reason(ds)
        if reason is None and "SeriesInstanceUID" not in ds:
            reason = "image without SeriesInstanceUID"
        if reason:
            skipped.append((str(f), reason))
            continue
        groups.setdefault(str(ds.SeriesInstanceUID), []).append((str(f), ds))
    series = []
    for uid, members in groups.items():
        members = _sort_members(members)
        groups[uid] = members
        ds0 = members[0][1]
        series.append(SeriesInfo(
            uid=uid,
            modality=str(ds0.get("Modality", "OT")),
            description=str(ds0.get("SeriesDescription", "")),
            n_slices=sum(frames_in(ds) for _, ds in members),
            size=(int(ds0.Rows), int(ds0.Columns)),
            files=[f for f, _ in members],
            number=_int_or_none(ds0.get("SeriesNumber")),
        ))
    series.sort(key=lambda s: (s.number is None, s.number or 0, s.uid))
    return SeriesList(series, skipped, str(folder)), groups


def _int_or_none(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _normal(ds) -> np.ndarray | None:
    iop = ds.get("ImageOrientationPatient")
    if iop is None or len(iop) != 6:
        return None
    row, col = np.asarray(iop[:3], float), np.asarray(iop[3:], float)
    return np.cross(row, col)


def _position(ds, normal) -> float | None:
    ipp = ds.get("ImagePositionPatient")
    if ipp is None or normal is None or len(ipp) != 3:
        return None
    return float(np.dot(np.asarray(ipp, float), normal))


def _sort_members(members: list) -> list:
    """Sort (file, header) pairs along the slice normal; InstanceNumber only as fallback."""
    normal = _normal(members[0][1])
    pos = [_position(ds, normal) for _, ds in members]
    if all(p is not None for p in pos):
        order = np.argsort(pos, kind="stable")
    else:
        order = np.argsort([_int_or_none(ds.get("InstanceNumber")) or 0 for _, ds in members],
                           kind="stable")
    return [members[i] for i in order]


def list_series(folder: str | Path) -> SeriesList:
    """Every image series in ``folder`` (recursive), plus ``.skipped`` files with reasons.

    Each entry gives modality, series description, number of slices, slice size and a
    short hash of its SeriesInstanceUID; never patient name or ID.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise VolumeReadError(f"{folder}: not a folder.")
    return scan_folder(folder)[0]


def choose_series(folder: Path, listing: SeriesList, series: int | str | None) -> SeriesInfo:
    """Pick a series by index, SeriesInstanceUID or its short hash; refuse ambiguity."""
    if not listing:
        reasons = sorted({r for _, r in listing.skipped})
        why = f" ({len(listing.skipped)} files skipped: {'; '.join(reasons[:5])})" \
            if reasons else ""
        raise VolumeReadError(f"{folder}: no DICOM image series found{why}.")
    if series is None:
        if len(listing) == 1:
            return listing[0]
        raise VolumeReadError(
            f"{folder}: {len(listing)} image series; choose one with series=<index> or "
            f"series=<SeriesInstanceUID>:\n{listing.describe()}"
        )
    if isinstance(series, (int, np.integer)) and not isinstance(series, bool):
        if -len(listing) <= series < len(listing):
            return listing[series]
    else:
        for s in listing:
            if str(series) in (s.uid, s.uid_hash):
                return s
    raise VolumeReadError(f"{folder}: no series {series!r}; available:\n{listing.describe()}")


# --- checks ------------------------------------------------------------------------------


def check_series(name: str, members: list) -> list[str]:
    """Refuse inconsistent series; return warnings about missing slices / uneven spacing."""
    sizes = {(int(ds.Rows), int(ds.Columns)) for _, ds in members}
    if len(sizes) > 1:
        raise VolumeReadError(
            f"{name}: slices of different sizes in one series ({sorted(sizes)}); "
            "the files do not form one volume."
        )
    if len(members) < 2:
        return _multi_frame_notes(name, members[0][1])
    normals = [_normal(ds) for _, ds in members]
    if any(n is None for n in normals):
        return [f"{name}: slices have no ImageOrientationPatient; sorted by InstanceNumber."]
    if any(not np.allclose(n, normals[0], atol=1e-3) for n in normals):
        raise VolumeReadError(f"{name}: slices with different orientations in one series.")
    pos = [_position(ds, normals[0]) for _, ds in members]
    if any(p is None for p in pos):
        return [f"{name}: slices have no ImagePositionPatient; sorted by InstanceNumber."]
    return _spacing_warnings(name, np.asarray(pos))


def _spacing_warnings(name: str, pos: np.ndarray) -> list[str]:
    gaps = np.diff(pos)
    if np.any(gaps < 1e-4):
        raise VolumeReadError(
            f"{name}: several slices share a position (echoes or time points mixed in "
            "one series?); cannot form one volume."
        )
    step = float(np.median(gaps))
    uneven = np.abs(gaps - step) > max(1e-3, 0.01 * step)
    if not uneven.any():
        return []
    missing = [i for i in np.flatnonzero(uneven) if gaps[i] > 1.5 * step]
    if missing:
        where = ", ".join(f"{pos[i]:.2f}..{pos[i + 1]:.2f} mm" for i in missing[:5])
        return [f"{name}: missing slice(s) (usual spacing {step:.3g} mm, gaps at {where}); "
                "the volume uses the mean spacing, so positions there are approximate."]
    return [f"{name}: uneven slice spacing ({gaps.min():.3g}..{gaps.max():.3g} mm); "
            "the volume uses the mean spacing, so positions are approximate."]


def _multi_frame_notes(name: str, ds) -> list[str]:
    """Spacing warnings for an enhanced multi-frame file from its per-frame positions."""
    frames = ds.get("PerFrameFunctionalGroupsSequence")
    shared = (ds.get("SharedFunctionalGroupsSequence") or [None])[0]
    if frames_in(ds) < 2 or not frames:
        return []
    try:
        group = shared if "PlaneOrientationSequence" in (shared or {}) else frames[0]
        iop = group.PlaneOrientationSequence[0].ImageOrientationPatient
        normal = np.cross(np.asarray(iop[:3], float), np.asarray(iop[3:], float))
        pos = [float(np.dot(np.asarray(f.PlanePositionSequence[0].ImagePositionPatient,
                                       float), normal)) for f in frames]
    except (AttributeError, IndexError, KeyError):
        return []
    return _spacing_warnings(name, np.sort(pos))

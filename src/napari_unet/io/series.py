"""DICOM folders: find the image series, describe them, sort and check their slices.

- Headers are read and checked by ``dicom_header`` (no pixel data) to group files by
  SeriesInstanceUID and skip non-image objects (SR, RTSTRUCT, RTPLAN, SEG, ...) and
  malformed files with a reason; the series of a malformed file is read from the others;
  a second file of the same instance (the same SOPInstanceUID) is left out, noted.
  A file that cannot be parsed at all is noted on every series beside it (its own series
  cannot be told), so a gap it leaves is never taken for the series' spacing in silence.
- Slices are sorted **geometrically**: by ImagePositionPatient projected on the slice
  normal (row x column of ImageOrientationPatient), never by InstanceNumber (only the
  fallback when positions are missing).
- A series whose slices differ in size or orientation, or repeat a position, is refused
  (``VolumeReadError``); an enhanced multi-frame file whose frames are not in spatial
  order is noted (the reader puts them in order). Missing slices or
  uneven spacing are *reported* as warnings that name the series by a short hash of its
  UID.
- Series are described without patient information (``SeriesInfo.describe``).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import VolumeReadError
from .dicom_header import (
    NOT_DICOM,
    decimal_step,
    floats_tag,
    frame_group,
    frames_in,
    functional_groups,
    int_tag,
    non_image_reason,
    parse_header,
    series_key,
    text_tag,
)
from .formats import has_dicom_suffix
from .geometry import rounding_mm
from .source import ScanWarning

# what a hand-made or damaged functional group raises when it is not what the standard says
_UNUSABLE = (AttributeError, IndexError, KeyError, TypeError, ValueError)


class SliceSpacingWarning(ScanWarning):
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
    notes: tuple[str, ...] = ()  # files left out, grouping assumed: warnings when read

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


# --- folders ---------------------------------------------------------------------------------


def _candidate_files(folder: Path) -> list[Path]:
    files = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files += [Path(root, n) for n in sorted(names) if not n.startswith(".")]
    return files


def scan_folder(folder: str | Path) -> tuple[SeriesList, dict[str, list]]:
    """Group a folder's (recursive) DICOM image files by series; also return the headers.

    A malformed file is skipped with its reason and noted on its series, which is read
    from its good files; files without SeriesInstanceUID are grouped by ``series_key``.
    """
    folder = Path(folder)
    groups: dict[str, list] = {}
    skipped, notes, unreadable = [], {}, []
    seen: dict[tuple[str, str], Path] = {}  # (series, SOPInstanceUID) -> its first file
    for f in _candidate_files(folder):
        ds, reason = parse_header(f)
        if ds is not None:
            reason = non_image_reason(ds) or reason or _copy_of(ds, f, seen)
        if reason:
            skipped.append((str(f), reason))
            if ds is None and (reason != NOT_DICOM or has_dicom_suffix(f)):
                unreadable.append((f, reason))
            if ds is not None and reason.startswith(("malformed", "a copy of")):
                notes.setdefault(series_key(ds), []).append(
                    f"{f.name} left out of this series ({reason})")
            continue
        key = series_key(ds)
        if key not in groups and not text_tag(ds, "SeriesInstanceUID"):
            notes.setdefault(key, []).insert(0, (
                "the files have no SeriesInstanceUID; grouped by study, frame of reference, "
                "series number, modality, size and orientation"))
        groups.setdefault(key, []).append((str(f), ds))
    _note_unreadable(unreadable, groups, notes)
    series = []
    for key, members in groups.items():
        members, odd = _odd_ones_out(members)
        for f, why in odd:
            skipped.append((f, why))
            notes.setdefault(key, []).append(f"{Path(f).name} left out of this series ({why})")
        groups[key] = members = _sort_members(members)
        series.append(_series_info(key, members, notes.get(key, [])))
    series.sort(key=lambda s: (s.number is None, s.number or 0, s.uid))
    return SeriesList(series, skipped, str(folder)), groups


def _copy_of(ds, f: Path, seen: dict) -> str | None:
    """Why ``f`` is left out when another file of its series holds the same instance (the
    same SOPInstanceUID: a second copy in an export, a compressed twin), else None."""
    uid = text_tag(ds, "SOPInstanceUID")
    if not uid:
        return None
    first = seen.setdefault((series_key(ds), uid), f)
    return None if first == f else f"a copy of {first.name} (the same SOPInstanceUID)"


def _odd_ones_out(members: list) -> tuple[list, list[tuple[str, str]]]:
    """(members, [(file, why)]): a few slices (a quarter at most) of another size or
    orientation than the rest of their series (a damaged Rows tag, a localizer filed in
    the series) are left out, so that the rest still form a volume; more than a few, and
    all stay (``check_series`` then refuses the series: it is no one volume)."""
    def shape(ds) -> tuple:
        try:
            normal = _normal(ds)
        except ValueError:
            normal = None
        turn = None if normal is None else tuple(np.round(normal, 2) + 0.0)
        return int_tag(ds, "Rows"), int_tag(ds, "Columns"), turn

    if len(members) < 3:
        return members, []
    shapes = [shape(ds) for _, ds in members]
    common = max(set(shapes), key=shapes.count)
    n = shapes.count(common)
    if n == len(shapes) or 4 * (len(shapes) - n) > len(shapes):
        return members, []
    kept = [m for m, sh in zip(members, shapes, strict=True) if sh == common]
    odd = []
    for (f, _), sh in zip(members, shapes, strict=True):
        if sh == common:
            continue
        if sh[:2] != common[:2]:
            why = (f"Rows x Columns {sh[0]} x {sh[1]}; the series' other {n} slices are "
                   f"{common[0]} x {common[1]}")
        else:
            why = f"its orientation differs from the series' other {n} slices"
        odd.append((f, why))
    return kept, odd


def _note_unreadable(unreadable: list, groups: dict, notes: dict) -> None:
    """A file that cannot be parsed may be a slice of any series beside it: each of them
    says so, so that its gap is never taken for the series' own spacing in silence."""
    for f, reason in unreadable:
        for key, members in groups.items():
            if any(Path(m).parent == f.parent for m, _ in members):
                notes.setdefault(key, []).append(
                    f"{f.name} beside this series could not be read ({reason}); if it is "
                    "one of its slices, the series is missing it")


def _series_info(key: str, members: list, notes: list[str]) -> SeriesInfo:
    ds0 = members[0][1]
    try:
        number = int_tag(ds0, "SeriesNumber")
    except ValueError:
        number = None
    return SeriesInfo(
        uid=key,
        modality=text_tag(ds0, "Modality") or "OT",
        description=text_tag(ds0, "SeriesDescription"),
        n_slices=sum(frames_in(ds) for _, ds in members),
        size=(int_tag(ds0, "Rows"), int_tag(ds0, "Columns")),
        files=[f for f, _ in members],
        number=number,
        notes=tuple(notes),
    )


def _normal(ds) -> np.ndarray | None:
    iop = floats_tag(ds, "ImageOrientationPatient", 6)
    return None if iop is None else np.cross(iop[:3], iop[3:])


def _position(ds, normal) -> float | None:
    ipp = floats_tag(ds, "ImagePositionPatient", 3)
    return None if ipp is None or normal is None else float(np.dot(ipp, normal))


def _sort_members(members: list) -> list:
    """Sort (file, header) pairs along the slice normal; InstanceNumber only as fallback."""
    normal = _normal(members[0][1])
    pos = [_position(ds, normal) for _, ds in members]
    if all(p is not None for p in pos):
        order = np.argsort(pos, kind="stable")
    else:
        order = np.argsort([_instance_number(ds) for _, ds in members], kind="stable")
    return [members[i] for i in order]


def _instance_number(ds) -> int:
    try:
        return int_tag(ds, "InstanceNumber", 0)
    except ValueError:
        return 0


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
    sizes = {(int_tag(ds, "Rows"), int_tag(ds, "Columns")) for _, ds in members}
    if len(sizes) > 1:
        raise VolumeReadError(
            f"{name}: slices of different sizes in one series ({sorted(sizes)}); "
            "the files do not form one volume."
        )
    if len(members) < 2:
        return _multi_frame_notes(name, members[0])
    normals = [_normal(ds) for _, ds in members]
    if any(n is None for n in normals):
        return [f"{name}: slices have no ImageOrientationPatient; sorted by InstanceNumber."]
    if any(not np.allclose(n, normals[0], atol=1e-3) for n in normals):
        raise VolumeReadError(f"{name}: slices with different orientations in one series.")
    pos = [_position(ds, normals[0]) for _, ds in members]
    if any(p is None for p in pos):
        return [f"{name}: slices have no ImagePositionPatient; sorted by InstanceNumber."]
    return _spacing_warnings(name, np.asarray(pos), position_step(members))


def _spacing_warnings(name: str, pos: np.ndarray, rounding_step: float | None = None
                      ) -> list[str]:
    """Missing slices or uneven spacing; gaps that differ by no more than the rounding of
    the positions (``rounding_step``: their decimal step) are even."""
    gaps = np.diff(pos)
    if np.any(gaps < 1e-4):
        raise VolumeReadError(
            f"{name}: several slices share a position (echoes or time points mixed in "
            "one series?); cannot form one volume."
        )
    step = float(np.median(gaps))
    # a gap and the median gap each carry the rounding of two positions
    uneven = np.abs(gaps - step) > max(1e-3, 0.01 * step, 2 * rounding_mm(rounding_step))
    if not uneven.any():
        return []
    missing = [i for i in np.flatnonzero(uneven) if gaps[i] > 1.5 * step]
    if missing:
        where = ", ".join(f"{pos[i]:.2f}..{pos[i + 1]:.2f} mm" for i in missing[:5])
        how = ("blank slices stand in for them, so every slice keeps its own position"
               if grid_indices(pos) is not None else
               "the volume uses the mean spacing (positions there approximate); NIfTI "
               "outputs are resampled onto even slices through the scan's own")
        return [f"{name}: missing slice(s) (usual spacing {step:.3g} mm, gaps at {where}); "
                f"{how}."]
    return [f"{name}: uneven slice spacing ({gaps.min():.3g}..{gaps.max():.3g} mm); "
            "the volume uses the mean spacing (positions approximate); NIfTI outputs are "
            "resampled onto even slices through the scan's own."]


def grid_indices(along: np.ndarray) -> np.ndarray | None:
    """Where each slice lies on an evenly spaced grid when some are missing: every gap a
    whole number (>= 1) of the usual step, at least one of them 2 or more; else None.

    ``along``: the slices' positions along the stack (mm, in stacking order).
    """
    gaps = np.abs(np.diff(np.asarray(along, float)))
    step = float(np.median(gaps)) if gaps.size else 0.0
    if step <= 0:
        return None
    whole = np.round(gaps / step)
    off = np.abs(gaps - whole * step).max()
    if whole.min() < 1 or whole.max() < 2 or off > max(1e-3, 0.01 * step):
        return None
    return np.concatenate([[0], np.cumsum(whole)]).astype(int)


def _multi_frame_notes(name: str, member: tuple) -> list[str]:
    """Spacing warnings for an enhanced multi-frame file from its per-frame positions.

    GDCM stacks the frames in file order, evenly spaced from the first; frames out of
    spatial order are put in order by the reader (``dicom``), said here.
    """
    file, ds = member
    positions = frame_positions(ds)
    if positions is None or len(positions) < 2:
        return []
    normal = frame_normal(ds)
    if normal is None:
        return []
    pos = positions @ normal
    notes = _spacing_warnings(name, np.sort(pos), position_step([member]))  # or raises
    if frame_order(positions, normal) is not None:
        where = name if name == file else f"{name}: {file}"
        notes.append(f"{where}: the frames are not stored in spatial order; they are put in "
                     "order of their positions (a DICOM SEG still references each frame)")
    return notes


def frame_order(positions: np.ndarray, normal: np.ndarray | None = None) -> np.ndarray | None:
    """The order that sorts frames along the slice normal when they are stored out of
    order (neither ascending nor descending); None when they are in order."""
    if normal is None:
        normal = positions[-1] - positions[0]
    along = positions @ normal
    gaps = np.diff(along)
    if np.all(gaps > 0) or np.all(gaps < 0):
        return None
    return np.argsort(along, kind="stable")


def frame_normal(ds) -> np.ndarray | None:
    """The slice normal of an enhanced file's frames (row x column), or None."""
    try:
        frames, shared = functional_groups(ds)
        plane = frame_group(frames[0], shared, "PlaneOrientationSequence")
        iop = None if plane is None else floats_tag(plane, "ImageOrientationPatient", 6)
    except _UNUSABLE:
        return None
    return None if iop is None else np.cross(iop[:3], iop[3:])


def frame_positions(ds) -> np.ndarray | None:
    """ImagePositionPatient of each frame of an enhanced file (frames x 3), in file
    order; None when a frame has none (legacy multi-frame objects, RT dose)."""
    try:
        frames, shared = functional_groups(ds)
        if frames_in(ds) < 2 or len(frames) != frames_in(ds):
            return None
        groups = [frame_group(f, shared, "PlanePositionSequence") for f in frames]
        pos = [None if g is None else floats_tag(g, "ImagePositionPatient", 3)
               for g in groups]
    except _UNUSABLE:
        return None
    return None if any(p is None for p in pos) else np.asarray(pos)


def position_step(members: list) -> float | None:
    """The finest decimal step in which the slices' (or an enhanced file's frames')
    ImagePositionPatient values are written: how precisely the scanner placed them."""
    if len(members) == 1 and frames_in(members[0][1]) > 1:
        try:
            frames, shared = functional_groups(members[0][1])
            items = [frame_group(f, shared, "PlanePositionSequence") for f in frames]
        except _UNUSABLE:
            return None
    else:
        items = [ds for _, ds in members]
    steps = [decimal_step(item, "ImagePositionPatient") for item in items if item is not None]
    steps = [s for s in steps if s is not None]
    return min(steps) if steps else None


def slice_positions(members: list) -> np.ndarray | None:
    """ImagePositionPatient of each array slice (n x 3) in the order GDCM stacks them
    (the sorted files, or a multi-frame file's frames); None when any is missing."""
    if len(members) == 1 and frames_in(members[0][1]) > 1:
        return frame_positions(members[0][1])
    try:
        pos = [floats_tag(ds, "ImagePositionPatient", 3) for _, ds in members]
    except ValueError:  # MalformedTag: such files were left out of the series already
        return None
    return None if any(p is None for p in pos) else np.asarray(pos)

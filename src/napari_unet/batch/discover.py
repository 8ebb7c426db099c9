"""Find the scans under the inputs: NIfTI files and DICOM series, searched recursively.

One scan per NIfTI file and one per DICOM series (files grouped by folder and
SeriesInstanceUID). Non-image DICOM (structured reports, RT structures, SEG, ...) becomes
a skipped scan with the reason; a file that looks like DICOM but cannot be parsed
becomes a failed scan, so the report accounts for every file the user pointed at.
Patient names/IDs are read only to be redacted from messages, never stored in a Scan.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..io.formats import has_dicom_suffix, is_nifti_path
from .naming import (
    OUTPUT_SUFFIXES,
    dicom_name,
    make_unique,
    nifti_name,
    sanitise,
    uid_hash,
)
from .qc import QC_DIR


@dataclass(frozen=True)
class Scan:
    """One unit of batch work; ``name`` is the non-identifying output stem."""

    input: str  # a file, or the folder holding a DICOM series
    name: str
    kind: str  # "nifti", "dicom" or "file" (any other file the user named explicitly)
    series: str | None = None  # SeriesInstanceUID of a DICOM series (never logged)
    skip_reason: str | None = None
    error: str | None = None


@dataclass
class Discovery:
    scans: list[Scan] = field(default_factory=list)
    identifiers: set[str] = field(default_factory=set)  # to redact from messages


@dataclass
class _Series:
    folder: str
    uid: str
    modality: str | None
    number: object
    description: str | None
    skip_reason: str | None


def discover_scans(inputs: list[str | os.PathLike], exclude: str | os.PathLike | None = None,
                   series: str | None = None) -> Discovery:
    """Scans under ``inputs`` in a stable order; ``exclude`` (the output folder) is ignored."""
    found = Discovery()
    excluded = Path(exclude).resolve() if exclude else None
    groups: dict[tuple[str, str], _Series] = {}
    for root in inputs:
        root = Path(root).resolve()
        files = [root] if root.is_file() else _walk(root, excluded)
        for path in files:
            _classify(path, explicit=path == root, found=found, groups=groups)
    found.scans += _series_scans(groups, series)
    return _unique(found)


def _walk(folder: Path, excluded: Path | None) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                             and (excluded is None or here / d != excluded))
        if here == excluded:  # inputs and outputs share a folder: skip our own outputs
            dirnames[:] = [d for d in dirnames if d != QC_DIR]
            filenames = [f for f in filenames if not f.endswith(OUTPUT_SUFFIXES)]
        out += [here / f for f in sorted(filenames) if not f.startswith(".")]
    return out


def _classify(path: Path, explicit: bool, found: Discovery, groups: dict) -> None:
    lower = path.name.lower()
    if is_nifti_path(lower):
        found.scans.append(Scan(str(path), nifti_name(path.name), "nifti"))
    elif has_dicom_suffix(lower) or _has_dicm_magic(path):
        _add_dicom_file(path, found, groups)
    elif explicit:
        found.scans.append(Scan(str(path), sanitise(path.name) or "scan", "file"))


def _has_dicm_magic(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def _add_dicom_file(path: Path, found: Discovery, groups: dict) -> None:
    from ..io.dicom_header import non_image_reason, read_header, series_key

    ds, reason = read_header(path)
    if ds is None:
        found.scans.append(Scan(str(path), sanitise(path.name) or "dicom", "dicom",
                                error=f"{path}: {reason}"))
        return
    patient: set[str] = set()
    _remember_identifiers(ds, patient)
    found.identifiers |= patient
    uid = series_key(ds)  # files without SeriesInstanceUID: grouped by what else they share
    key = (str(path.parent), uid or f"file:{path}")
    if key not in groups:
        skip = non_image_reason(ds)
        description = redact(str(ds.get("SeriesDescription", "") or ""), patient, "")
        groups[key] = _Series(str(path.parent), uid, ds.get("Modality"), ds.get("SeriesNumber"),
                              description, f"non-image DICOM: {skip}" if skip else None)


def _remember_identifiers(ds, identifiers: set[str]) -> None:
    for tag in ("PatientName", "PatientID"):
        value = str(ds.get(tag, "") or "").strip()
        if value:
            identifiers.add(value)
            identifiers.update(p for p in value.replace("^", " ").split() if len(p) > 2)


def _series_scans(groups: dict[tuple[str, str], _Series], wanted: str | None) -> list[Scan]:
    by_folder: dict[str, list[_Series]] = {}
    for s in groups.values():
        by_folder.setdefault(s.folder, []).append(s)
    scans = []
    for folder in sorted(by_folder):
        ordered = sorted(by_folder[folder], key=_series_order)
        for index, s in enumerate(ordered):
            if wanted is not None and wanted not in (s.uid, uid_hash(s.uid), str(index)):
                continue
            name = dicom_name(s.modality, s.number, s.description, s.uid)
            scans.append(Scan(folder, name, "dicom", series=s.uid or None,
                              skip_reason=s.skip_reason))
    return scans


def _series_order(s: _Series) -> tuple:
    try:
        number = int(s.number)
    except (TypeError, ValueError):
        number = 1 << 30
    return number, s.uid


def _unique(found: Discovery) -> Discovery:
    keys = [f"{s.input}|{s.series}" for s in found.scans]
    names = make_unique([s.name for s in found.scans], keys)
    found.scans = [Scan(s.input, n, s.kind, s.series, s.skip_reason, s.error)
                   for s, n in zip(found.scans, names, strict=True)]
    return found


def redact(text: str | None, identifiers: set[str], by: str = "[redacted]") -> str | None:
    """Replace any patient name/ID seen during discovery (whole words) with ``by``."""
    if not text or not identifiers:
        return text
    alternatives = "|".join(re.escape(i) for i in sorted(identifiers, key=len, reverse=True))
    return re.sub(rf"(?<!\w)(?:{alternatives})(?!\w)", by, text)

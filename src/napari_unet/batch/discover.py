"""Find the scans under the inputs: NIfTI files and DICOM series, searched recursively.

One scan per NIfTI file and one per DICOM series (files grouped by folder and
SeriesInstanceUID). Non-image DICOM (structured reports, RT structures, SEG, ...) becomes
a skipped scan with the reason; a file that looks like DICOM but cannot be parsed
(a 'DICM' preamble followed by junk included) becomes a failed scan, so the report
accounts for every file the user pointed at.

Only regular files are ever opened: named pipes, sockets and devices are skipped with
the reason (opening a FIFO would block forever), links are followed, and a folder
reached twice (a link loop) is walked once. What the operating system refuses (a file or
folder that cannot be read, a path longer than it allows, one that vanished while the
folder was walked) fails on its own, with the reason in plain words and without its
path; the walk goes on. A file reached twice (given twice, through a
link, or also through its folder) is one scan, whose entry says so. A subfolder that is
another run's output folder (it holds that run's state) is skipped with the reason: a
rerun on a folder that holds its results must not predict the results. Patient names/IDs are
read only to be redacted from names and messages, never stored in a Scan.

A BIDS dataset (or a subject folder or file in one) is one input among others here:
:mod:`.bids` picks its images by entities and names each scan by its BIDS file name.
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..io.bids import BidsImage, BidsSelection
from ..io.formats import has_dicm_magic, has_dicom_suffix, is_nifti_path, unsupported_format
from ..io.series import uid_hash
from .naming import (
    OUTPUT_SUFFIXES,
    dicom_name,
    file_name,
    make_unique,
    short_hash,
)
from .outdir import STATE_DIR
from .patient_names import PatientIdentifiers
from .privacy import identifiers_of, redact

_NON_REGULAR = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"),
                (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                (stat.S_ISDIR, "a folder"))


@dataclass(frozen=True)
class Scan:
    """One unit of batch work; ``name`` is the patient-free output stem."""

    input: str  # a file, or the folder holding a DICOM series
    name: str
    kind: str  # "nifti", "dicom", "file" (anything else met on the way) or "folder"
    series: str | None = None  # SeriesInstanceUID of a DICOM series (never logged)
    skip_reason: str | None = None
    error: str | None = None
    notes: tuple[str, ...] = ()  # warnings from discovery (no paths): its report entry's
    bids: BidsImage | None = None  # an image of a BIDS dataset: outputs named by entities
    files: tuple[str, ...] = ()  # a DICOM series' files (resume: a series that changed)


@dataclass
class Discovery:
    scans: list[Scan] = field(default_factory=list)
    # to redact from messages: patients' names and IDs, however spelled
    identifiers: PatientIdentifiers = field(default_factory=PatientIdentifiers)
    file_names: set[str] = field(default_factory=set)  # of the inputs (for --names counter)
    bids: BidsSelection | None = None  # the BIDS dataset the inputs are (part of)


@dataclass
class _Series:
    folder: str
    uid: str
    modality: str | None
    number: object
    description: str | None
    skip_reason: str | None
    files: list[str] = field(default_factory=list)


def discover_scans(inputs: list[str | os.PathLike], exclude: str | os.PathLike | None = None,
                   series: str | None = None, bids=None) -> Discovery:
    """Scans under ``inputs`` in a stable order; ``exclude`` (the output folder) is ignored.

    ``bids`` (a :class:`.bids.BidsRequest`) chooses the images of a BIDS input; a filter
    without a BIDS input is a usage error.
    """
    from . import bids as bids_in

    root, within = bids_in.split_inputs(inputs)
    if root is not None:
        request = bids or bids_in.BidsRequest()
        exclude_path = Path(exclude).resolve() if exclude else None
        if exclude_path is not None:
            bids_in.check_output_place(root, exclude_path, exclude)
        selection = bids_in.select(root, within, exclude_path, request)
        return _unique(Discovery(bids_in.scans(selection, request.task_kind), bids=selection))
    if bids is not None and bids.filters:
        raise bids_in.BidsError("--bids-filter chooses images of a BIDS dataset, and no input "
                                "is one (a folder with dataset_description.json)")
    found = Discovery()
    excluded = _identity(Path(exclude)) if exclude else None
    groups: dict[tuple[str, str], _Series] = {}
    times: dict[str, int] = {}  # resolved path -> how often the inputs reach it
    for root in inputs:
        root = Path(root).resolve()
        for path, problem in _files(root, excluded):
            key = _file_key(path)  # a file given twice, or also via a link: one scan
            found.file_names.add(path.name)
            if key in times:
                times[key] += 1
            elif isinstance(problem, Refused):
                found.scans.append(Scan(str(path), "", problem.kind, error=str(problem)))
                times[key] = 1
            elif problem:
                found.scans.append(Scan(str(path), "", "file", skip_reason=problem))
                times[key] = 1
            elif _classify(path, root, found=found, groups=groups):
                times[key] = 1
    found.scans = [_named(_repeated(s, times), found.identifiers) for s in found.scans]
    found.scans += _series_scans(groups, series, found.identifiers)
    return _unique(found)


def _repeated(scan: Scan, times: dict[str, int]) -> Scan:
    """The scan, noting (once, on its own entry) that its file was given several times."""
    n = times.get(_file_key(Path(scan.input)), 1)
    if n < 2:
        return scan
    return replace(scan, notes=(f"the same file was given {n} times (directly, in a folder "
                                "or through a link); predicted once",))


def _file_key(path: Path) -> str:
    """One key per file however it is reached: its device and inode (a hard link is the
    same file under another name), else (no inode numbers here) its resolved path."""
    identity = _identity(path)
    return f"{identity[0]}:{identity[1]}" if identity and identity[1] else str(path.resolve())


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


class Refused(str):
    """Why the operating system refused a path (its scan fails); ``kind`` says whether
    it was a file or a folder."""

    kind = "file"


def _refused(exc: OSError, kind: str = "file") -> Refused:
    from ..os_errors import plain

    what = "this folder cannot be read" if kind == "folder" else "this file cannot be read"
    why = Refused(plain(OSError(exc.errno, exc.strerror), what, advice=True))
    why.kind = kind
    return why


def _files(root: Path, excluded) -> Iterator[tuple[Path, str | None]]:
    """(regular file, None), (anything else, why it is skipped) or (a path the OS
    refused, :class:`Refused`) under ``root``."""
    what = _not_regular(root)
    if what == "a folder":
        yield from _walk(root, excluded)
    elif isinstance(what, Refused):
        yield root, what
    else:
        yield root, _skip_reason(what)


def _walk(folder: Path, excluded) -> Iterator[tuple[Path, str | None]]:
    # inputs and outputs share a folder: napari-unet's own outputs there (those its
    # manifests record, and files named like one beside the inputs: ground truth) are not
    # inputs; its subfolders' other files are (a person's scans in a folder named qc/)
    shared = _identity(folder) == excluded
    own = _recorded_outputs(folder) if shared else frozenset()
    seen: set = set()
    refused: list[OSError] = []  # folders os.walk could not list (it goes on without)
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True,
                                                onerror=refused.append):
        yield from _refused_folders(refused)
        here = Path(dirpath)
        key = _identity(here)
        if key in seen or (key == excluded and here != folder):
            dirnames[:] = []  # a link loop, a folder reached twice, or the output folder
            continue
        if here != folder and (here / STATE_DIR).is_dir():
            dirnames[:] = []
            yield here, EARLIER_OUTPUT
            continue
        seen.add(key)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        names = sorted(f for f in filenames if not f.startswith("."))
        if shared and here == folder:
            names = [f for f in names if not f.endswith(OUTPUT_SUFFIXES)]
        for name in names:
            path = here / name
            if own and path.relative_to(folder).as_posix() in own:
                continue
            what = _not_regular(path)
            yield path, what if isinstance(what, Refused) else _skip_reason(what)
    yield from _refused_folders(refused)


def _recorded_outputs(folder: Path) -> frozenset[str]:
    """Every file (relative path) the folder's manifests record as napari-unet's own."""
    state = folder / STATE_DIR
    if state.is_symlink() or not state.is_dir():
        return frozenset()
    found: set[str] = set()
    for entry in os.scandir(state):
        if not entry.name.endswith(".json") or not entry.is_file(follow_symlinks=False):
            continue
        try:
            record = json.loads(Path(entry.path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            continue
        files = record.get("files") if isinstance(record, dict) else None
        if isinstance(files, dict):
            found.update(k for k in files if isinstance(k, str))
    return frozenset(found)


def _refused_folders(refused: list[OSError]) -> Iterator[tuple[Path, Refused]]:
    while refused:
        exc = refused.pop(0)
        if exc.filename is not None and exc.errno != errno.ENOENT:  # ENOENT: gone since
            yield Path(exc.filename), _refused(exc, "folder")


EARLIER_OUTPUT = ("the output folder of another napari-unet run: skipped, so that results are "
                  "not predicted again (give this folder as an input to process its files)")


def _skip_reason(what: str | None) -> str | None:
    return f"{what}, not a regular file: skipped without opening it" if what else None


def _not_regular(path: Path) -> str | None:
    """None for a regular file (links followed) that can be opened; else what it is, or
    why the operating system refuses it (:class:`Refused`); FIFOs are never opened."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ELOOP) and os.path.islink(path):
            return "a link to nothing"
        return _refused(exc)
    if stat.S_ISREG(mode):
        try:  # opened as the reader will (no data read): unreadable files fail here
            os.close(os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)))
        except OSError as exc:
            return _refused(exc)
        return None
    return next((what for test, what in _NON_REGULAR if test(mode)), "not a regular file")


def _classify(path: Path, root: Path, found: Discovery, groups: dict) -> bool:
    """Add the file as a scan or to its DICOM series; False when it is not one of ours."""
    lower = path.name.lower()
    if is_nifti_path(lower):
        found.scans.append(Scan(str(path), "", "nifti"))
    elif has_dicom_suffix(lower) or has_dicm_magic(path):
        _add_dicom_file(path, root, found, groups)
    elif path == root:  # named on its own: reported, whatever it is
        found.scans.append(Scan(str(path), "", "file"))
    elif fmt := unsupported_format(lower):  # a scan in a folder, in a format not read
        found.scans.append(Scan(str(path), "", "file", skip_reason=(
            f"{fmt}: napari-unet reads NIfTI and DICOM; convert it to NIfTI (e.g. "
            "SimpleITK, mri_convert) to include it")))
    else:
        return False
    return True


def _add_dicom_file(path: Path, root: Path, found: Discovery, groups: dict) -> None:
    """Add the file to its series: one per SeriesInstanceUID under an input, wherever its
    files lie below it (the reader reads a folder's subfolders too); files without that
    UID group per folder."""
    from ..io.dicom_header import parse_header, series_key, text_tag

    # a malformed slice still joins its series: the reader leaves it out with a warning
    ds, reason = parse_header(path)
    if ds is None:
        found.scans.append(Scan(str(path), "", "dicom", error=f"{path}: {reason}"))
        return
    patient = identifiers_of(ds)
    found.identifiers |= patient
    uid = series_key(ds)  # files without SeriesInstanceUID: grouped by what else they share
    key = (str(root) if text_tag(ds, "SeriesInstanceUID") else str(path.parent), uid)
    if key in groups:
        group = groups[key]
        group.folder = os.path.commonpath([group.folder, str(path.parent)])
        group.files.append(str(path))
        return
    description = _without(patient, str(ds.get("SeriesDescription", "") or ""))
    groups[key] = _Series(str(path.parent), uid, ds.get("Modality"), ds.get("SeriesNumber"),
                          description, _non_image(ds), [str(path)])


def _without(patient: PatientIdentifiers, text: str) -> str:
    """``text`` with the patient's identifiers and the separators around them taken out
    (``T1 Doe^Jane`` -> ``T1``)."""
    marked = redact(text, patient, "\0")
    return re.sub(r"[\s^_.,;:/\\-]*\0[\s^_.,;:/\\-]*", " ", marked or "").strip()


def _non_image(ds) -> str | None:
    from ..io.dicom_header import non_image_reason

    why = non_image_reason(ds)
    return f"non-image DICOM: {why}" if why else None


def _named(scan: Scan, identifiers: PatientIdentifiers) -> Scan:
    if scan.kind == "folder":  # folders' names may carry patients' names: never used
        return replace(scan, name=f"folder_{short_hash(scan.input)}")
    return replace(scan, name=file_name(Path(scan.input).name, scan.input, identifiers))


def _series_scans(groups: dict[tuple[str, str], _Series], wanted: str | None,
                  identifiers: set[str]) -> list[Scan]:
    by_folder: dict[str, list[_Series]] = {}
    for s in groups.values():
        by_folder.setdefault(s.folder, []).append(s)
    scans = []
    for folder in sorted(by_folder):
        ordered = sorted(by_folder[folder], key=_series_order)
        for index, s in enumerate(ordered):
            if wanted is not None and wanted not in (s.uid, uid_hash(s.uid), str(index)):
                continue
            name = dicom_name(s.modality, s.number, s.description, s.uid, identifiers)
            scans.append(Scan(folder, name, "dicom", series=s.uid, skip_reason=s.skip_reason,
                              files=tuple(sorted(s.files))))
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
    found.scans = [replace(s, name=n) for s, n in zip(found.scans, names, strict=True)]
    return found

"""Output names that never carry patient data.

A file (NIfTI, or any file named explicitly) is named after its own file name, never its
folders, unless that name looks identifying (:func:`privacy.looks_identifying`): then it
is ``scan_<hash of its path>``. A DICOM series is named after non-identifying series
attributes (modality, series number, a sanitised series description) plus a short hash
of the SeriesInstanceUID, so two series never collide and no name or ID leaks into
file names, reports or logs.
"""

from __future__ import annotations

import contextlib
import hashlib
import re

from ..io.formats import nifti_stem
from ..io.series import uid_hash
from .privacy import looks_identifying

OUTPUT_SUFFIXES = ("_labels.nii.gz", "_denoised.nii.gz", "_probabilities.nii.gz",
                   "_uncertainty.nii.gz", "_seg.dcm")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def sanitise(text: str, max_len: int = 40) -> str:
    """Keep letters, digits, dot, dash and underscore; collapse the rest to one '_'."""
    return _UNSAFE.sub("_", text).strip("._-")[:max_len].strip("._-")


def short_hash(text: str, n: int = 8) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def file_name(name: str, path: str, identifiers: set[str] = frozenset()) -> str:
    """``scan_01.nii.gz`` -> ``scan_01``; an identifying name -> ``scan_<hash of path>``."""
    stem = nifti_stem(name)
    safe = "" if looks_identifying(stem, identifiers) else sanitise(stem, 80)
    return safe or f"scan_{short_hash(path)}"


def dicom_name(modality: str | None, series_number: object, description: str | None,
               series_uid: str, identifiers: set[str] = frozenset()) -> str:
    """E.g. ``MR_s003_T1_MPRAGE_1a2b3c4d`` (no patient attribute is ever used)."""
    parts = [sanitise(modality or "", 8) or "OT"]
    with contextlib.suppress(TypeError, ValueError):
        parts.append(f"s{int(series_number):03d}")
    desc = sanitise(description or "")
    if desc and not looks_identifying(description, identifiers):
        parts.append(desc)
    parts.append(uid_hash(series_uid))
    return "_".join(parts)


def make_unique(names: list[str], keys: list[str]) -> list[str]:
    """Names that occur more than once, in any case (``A`` and ``a`` are one file on the
    usual macOS and Windows disks), get a short hash of their key (e.g. the path)."""
    seen: dict[str, int] = {}
    for name in names:
        seen[name.casefold()] = seen.get(name.casefold(), 0) + 1
    return [with_key(n, k) if seen[n.casefold()] > 1 else n
            for n, k in zip(names, keys, strict=True)]


def with_key(name: str, key: str) -> str:
    """``name`` told apart from another input's by a short hash of this input's key."""
    return f"{name}_{short_hash(key, 6)}"


def output_names(stem: str, kind: str, fmt: str, dicom_input: bool,
                 probabilities: bool) -> dict[str, str]:
    """Role -> file (or folder) name for one scan: what the batch writes and resume checks.

    ``nifti``: NIfTI; ``dicom``: a DICOM SEG (segmentation) or a derived series, the
    folder ``<stem>_denoised`` (denoising); ``dicom-seg``: the SEG; ``both``: NIfTI, and
    DICOM where the input is DICOM.
    """
    names = {}
    nifti = fmt in ("nifti", "both")
    dicom = fmt in ("dicom", "dicom-seg") or (fmt == "both" and dicom_input)
    if kind == "denoise":
        if nifti:
            names["image"] = f"{stem}_denoised.nii.gz"
        if dicom:
            names["series"] = f"{stem}_denoised"
    else:
        if nifti:
            names["labels"] = f"{stem}_labels.nii.gz"
        if dicom:
            names["seg"] = f"{stem}_seg.dcm"
        if probabilities:
            names["probabilities"] = f"{stem}_probabilities.nii.gz"
    if probabilities:
        names["uncertainty"] = f"{stem}_uncertainty.nii.gz"
    return names

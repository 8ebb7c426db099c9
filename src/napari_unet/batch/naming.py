"""Output names that never carry patient data.

NIfTI outputs are named after the input file; DICOM outputs after non-identifying series
attributes (modality, series number, a sanitised series description) plus a short hash
of the SeriesInstanceUID, so two series never collide and no name or ID leaks into
file names, reports or logs.
"""

from __future__ import annotations

import contextlib
import hashlib
import re

from ..io.formats import nifti_stem

OUTPUT_SUFFIXES = ("_labels.nii.gz", "_denoised.nii.gz", "_probabilities.nii.gz",
                   "_uncertainty.nii.gz", "_seg.dcm")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def sanitise(text: str, max_len: int = 40) -> str:
    """Keep letters, digits, dot, dash and underscore; collapse the rest to one '_'."""
    return _UNSAFE.sub("_", text).strip("._-")[:max_len].strip("._-")


def short_hash(text: str, n: int = 8) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def uid_hash(uid: str) -> str:
    """The short series handle the I/O layer also shows and accepts (``series=``)."""
    from ..io.series import uid_hash as io_uid_hash

    return io_uid_hash(uid)


def nifti_name(file_name: str) -> str:
    """``scan_01.nii.gz`` -> ``scan_01``, made safe as a file name."""
    return sanitise(nifti_stem(file_name), 80) or "scan"


def dicom_name(modality: str | None, series_number: object, description: str | None,
               series_uid: str) -> str:
    """E.g. ``MR_s003_T1_MPRAGE_1a2b3c4d`` (no patient attribute is ever used)."""
    parts = [sanitise(modality or "", 8) or "OT"]
    with contextlib.suppress(TypeError, ValueError):
        parts.append(f"s{int(series_number):03d}")
    desc = sanitise(description or "")
    if desc:
        parts.append(desc)
    parts.append(uid_hash(series_uid))
    return "_".join(parts)


def make_unique(names: list[str], keys: list[str]) -> list[str]:
    """Names that occur more than once get a short hash of their key (e.g. the path)."""
    seen: dict[str, int] = {}
    for name in names:
        seen[name] = seen.get(name, 0) + 1
    return [f"{n}_{short_hash(k, 6)}" if seen[n] > 1 else n
            for n, k in zip(names, keys, strict=True)]


def output_names(stem: str, kind: str, fmt: str, dicom_input: bool,
                 probabilities: bool) -> dict[str, str]:
    """Role -> file name for one scan: what the batch writes and resume checks."""
    names = {}
    if kind == "denoise":
        names["image"] = f"{stem}_denoised.nii.gz"
    else:
        if fmt in ("nifti", "both"):
            names["labels"] = f"{stem}_labels.nii.gz"
        if fmt == "dicom-seg" or (fmt == "both" and dicom_input):
            names["seg"] = f"{stem}_seg.dcm"
        if probabilities:
            names["probabilities"] = f"{stem}_probabilities.nii.gz"
    if probabilities:
        names["uncertainty"] = f"{stem}_uncertainty.nii.gz"
    return names

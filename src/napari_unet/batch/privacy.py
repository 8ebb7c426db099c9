"""Keeping patient data out of names, messages and pages.

Three rules, applied to everything the batch prints or writes (file names, stderr,
``index.html``, SEG descriptions, error texts in ``report.json``):

- Patient names and IDs seen in DICOM headers during discovery are redacted wherever
  they appear, however they are spelled (:mod:`.patient_names`: case, accents,
  apostrophes, separators, order, initials, IDs inside longer tokens).
- Input paths are replaced by the scan's name: folders (which often carry a patient's
  name or an MRN) never appear. Other absolute paths shrink to their last part, or to
  ``<path>`` when that part looks identifying.
- A name taken from a file name is kept only if it does not look identifying
  (:func:`looks_identifying`); otherwise the scan is called ``scan_<hash>``.
"""

from __future__ import annotations

import re

from .patient_names import PatientIdentifiers, as_identifiers

_NOT_ALNUM_BEFORE = r"(?<![A-Za-z0-9])"
# what a file name that carries patient data tends to contain: a DICOM person name
# separator, a run of 6+ digits (MRNs, accession numbers, dates like 19800101), a date
# with separators, or words that announce an identifier
_IDENTIFYING = re.compile(
    r"\^|\d{6,}|(?:19|20)\d\d[-_.](?:0[1-9]|1[0-2])[-_.]\d\d"
    rf"|{_NOT_ALNUM_BEFORE}(?:mrn|dob|pid|ssn|nhs|patient|birth|accession)",
    re.IGNORECASE)
_ABS_PATH = re.compile(r"(?<![\w.:/])/(?:[^\s/:'\"()\[\],]+/)*[^\s/:'\"()\[\],]*")


def looks_identifying(text: str, identifiers=frozenset()) -> bool:
    """True when ``text`` may carry patient data (see the module docstring);
    ``identifiers``: :class:`PatientIdentifiers`, or plain names/IDs."""
    return bool(_IDENTIFYING.search(text)) or as_identifiers(identifiers).found_in(text)


def redact(text: str | None, identifiers, by: str = "[redacted]") -> str | None:
    """Replace every patient name/ID seen during discovery with ``by``, however spelled."""
    if not text or not identifiers:
        return text
    return as_identifiers(identifiers).redact(text, by)


def scrub(text: str | None, paths: dict[str, str], identifiers: set[str]) -> str | None:
    """``text`` fit to print: each path in ``paths`` replaced by its given name, other
    absolute paths by their last part (or ``<path>``), patient names/IDs redacted."""
    if not text:
        return text
    for path in sorted(paths, key=len, reverse=True):  # whole paths only, longest first
        end = "" if path.endswith(("/", "\\")) else r"(?=$|[\s/\\:'\"()\[\],;])"
        text = re.sub(re.escape(path) + end, lambda _, new=paths[path]: new, text)
    text = _ABS_PATH.sub(lambda m: _last_part(m.group(0), identifiers), text)
    return redact(text, identifiers)


def _last_part(path: str, identifiers: set[str]) -> str:
    last = path.rstrip("/").rsplit("/", 1)[-1]
    return "<path>" if not last or looks_identifying(last, identifiers) else last


def identifiers_of(ds) -> PatientIdentifiers:
    """Every patient identifier of a DICOM header (names, IDs, accession number, birth
    date), to be recognised however spelled."""
    found = PatientIdentifiers()
    found.add_dataset(ds)
    return found


def patient_free_name(name: str, volume=None) -> str:
    """``name`` (a scan's file or folder name) as a model's provenance may record it: kept
    unless it looks identifying, by the rules above and the patient identifiers of the
    scan's own DICOM header (when it came from DICOM); else ``scan_<hash>``. Model files
    are made to be shared: no patient's name may travel in them."""
    import hashlib

    identifiers = PatientIdentifiers()
    files = getattr(getattr(volume, "source", None), "files", None) or ()
    if files:
        from ..io.dicom_header import parse_header

        ds, _ = parse_header(files[0])
        if ds is not None:
            identifiers.add_dataset(ds)
    if not looks_identifying(name, identifiers):
        return name
    return f"scan_{hashlib.sha256(name.encode()).hexdigest()[:8]}"

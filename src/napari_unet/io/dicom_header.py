"""One DICOM file's header, read without pixels and checked before any pixel is decoded.

Every value that sizes memory or places voxels (Rows, Columns, NumberOfFrames,
SamplesPerPixel, BitsAllocated, ImageOrientationPatient, ImagePositionPatient) is parsed
and range-checked here, so a malformed file is reported with its tag and value instead of
failing a whole folder later. A data set encoded differently from what its transfer
syntax says (implicit VR under an explicit-VR syntax, or the reverse) is flagged: GDCM
reads its element lengths from the wrong bytes (pydicom's ``SC_rgb_jpeg.dcm``: the text
"DERI" of ImageType read as a 1.2 GB length), so the reader re-encodes such files first.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np

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
# sane ranges of the integer tags that size the pixel data
_INT_RANGES = {
    "Rows": (1, 65535),
    "Columns": (1, 65535),
    "NumberOfFrames": (1, 2**31 - 1),
    "SamplesPerPixel": (1, 4),
    "BitsAllocated": (1, 64),
    "BitsStored": (1, 64),
    "PixelRepresentation": (0, 1),
}
_BITS_ALLOCATED = (1, 8, 16, 32, 64)
MISENCODED = "napari_unet_misencoded"
PIXELS_AT = "napari_unet_pixels_at"  # file offset of the pixel data element
NOT_DICOM = "not a DICOM file"
# a file with the 'DICM' preamble of which pydicom parses none of these is corrupt, not an
# object without an image: it may be a broken slice of a series, so it must fail loudly
_IDENTIFYING = ("SOPClassUID", "SOPInstanceUID", "Modality", "SeriesInstanceUID",
                "StudyInstanceUID", "Rows", "Columns", "DirectoryRecordSequence")
CORRUPT = ("unreadable DICOM file: it has a DICOM preamble ('DICM') but no readable "
           "tag after it (corrupt)")
# values this long (private blobs, or a length field that lies) stay on disk until used
DEFER_BYTES = 2**20  # attribute set on data sets that need re-encoding


class MalformedTag(ValueError):
    """A tag whose value cannot be what the standard allows; the message names both."""


def read_header(path: str | Path):
    """(pydicom Dataset without pixels, None) or (None, reason it is not usable).

    A header with malformed image tags is not usable: the reason names the tag and value.
    """
    ds, reason = parse_header(path)
    return (None, reason) if reason else (ds, None)


def parse_header(path: str | Path):
    """Like ``read_header``, but a malformed header comes back with its reason (a folder
    scan notes it on the file's series). pydicom's own warnings about the values are
    silenced: the reason says what is wrong."""
    from .pixel_data import pixel_data_problem

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds, reason = _parse(path)
        if ds is not None and reason is None:
            reason = header_problem(ds)
        if ds is not None and reason is None and getattr(ds, PIXELS_AT, None) is not None \
                and not non_image_reason(ds):
            reason = pixel_data_problem(path, ds, getattr(ds, PIXELS_AT))
    return ds, reason


def _parse(path: str | Path):
    from pydicom.errors import InvalidDicomError

    try:
        ds = _read_to_pixels(path, force=False)
    except InvalidDicomError:
        if not _starts_like_dataset(path):
            return None, NOT_DICOM
        try:  # old files without the 128-byte preamble (e.g. pydicom's rtstruct.dcm)
            ds = _read_to_pixels(path, force=True)
        except Exception:
            return None, NOT_DICOM
        if "SOPClassUID" not in ds:
            return None, NOT_DICOM
    except Exception as e:
        from ..os_errors import is_known, plain

        if is_known(e):  # the OS refused it: said plainly, without the path
            return None, f"cannot be read: {plain(OSError(e.errno, e.strerror))}" \
                if isinstance(e, OSError) else f"cannot be read: {plain(e)}"
        return None, f"unreadable DICOM header ({type(e).__name__}: {e})"
    if not any(k in ds for k in _IDENTIFYING):
        return None, CORRUPT
    setattr(ds, MISENCODED, _misencoded(ds))
    return ds, None


def _read_to_pixels(path, force: bool):
    """The header, read up to the pixel data; where that starts is kept (``PIXELS_AT``)
    so that ``pixel_data`` can check it without reading the pixels."""
    import pydicom

    with open(path, "rb") as f:
        ds = pydicom.dcmread(f, stop_before_pixels=True, force=force, defer_size=DEFER_BYTES)
        setattr(ds, PIXELS_AT, f.tell())
    return ds


def _starts_like_dataset(path) -> bool:
    """A file without preamble is parsed only if it starts with a group 0002/0008 tag,
    so that arbitrary large files in a folder are not parsed as DICOM."""
    try:
        with open(path, "rb") as f:
            head = f.read(2)
    except OSError:
        return False
    return head in (b"\x02\x00", b"\x08\x00", b"\x00\x02", b"\x00\x08")


def _misencoded(ds) -> bool:
    """True when the elements were found in the other VR encoding than the transfer
    syntax declares (pydicom copes; GDCM takes lengths from the wrong bytes)."""
    from pydicom.dataelem import RawDataElement

    try:
        declared = ds.file_meta.TransferSyntaxUID.is_implicit_VR
    except Exception:  # no file meta, or a private/unknown syntax: GDCM guesses itself
        return False
    for tag in ds.keys():  # noqa: SIM118 - iterating a Dataset would convert the elements
        elem = ds.get_item(tag)
        if isinstance(elem, RawDataElement):
            return bool(elem.is_implicit_VR) != bool(declared)
    return False


def non_image_reason(ds) -> str | None:
    """Why a DICOM object holds no image to segment, or None for an image."""
    if "DirectoryRecordSequence" in ds:  # a DICOMDIR: no SOP class of its own
        return "DICOMDIR (Media Storage Directory): an index of the files, not an image"
    modality = text_tag(ds, "Modality").upper()
    sop = ds.get("SOPClassUID")
    sop_name = getattr(sop, "name", str(sop))
    if modality in NON_IMAGE_MODALITIES:
        return f"{modality} ({sop_name}): {NON_IMAGE_MODALITIES[modality]}"
    if "Rows" not in ds or "Columns" not in ds:
        return f"{modality or 'unknown modality'} ({sop_name}): no image data"
    return None


def header_problem(ds) -> str | None:
    """Why an image header cannot be trusted (naming the tag and its value), or None."""
    try:
        for keyword in _INT_RANGES:
            if int_tag(ds, keyword) is None and keyword in ("Rows", "Columns") and \
                    keyword in ds:
                raise MalformedTag(f"{keyword} is empty")
        bits = int_tag(ds, "BitsAllocated")
        if bits is not None and bits not in _BITS_ALLOCATED:
            raise MalformedTag(f"BitsAllocated {bits} (allowed: 1, 8, 16, 32, 64)")
        if (int_tag(ds, "BitsStored") or 0) > (bits or 64):
            raise MalformedTag(f"BitsStored {int_tag(ds, 'BitsStored')} > BitsAllocated {bits}")
        orientation = floats_tag(ds, "ImageOrientationPatient", 6)
        floats_tag(ds, "ImagePositionPatient", 3)
        floats_tag(ds, "RescaleSlope", 1)
        floats_tag(ds, "RescaleIntercept", 1)
        if orientation is not None:
            _check_orientation(orientation)
    except MalformedTag as e:
        return f"malformed DICOM header: {e}"
    return None


def _check_orientation(iop: np.ndarray) -> None:
    row, col = iop[:3], iop[3:]
    norms = np.linalg.norm(row), np.linalg.norm(col)
    if abs(norms[0] - 1) > 0.05 or abs(norms[1] - 1) > 0.05 or abs(np.dot(row, col)) > 0.05:
        raise MalformedTag(f"ImageOrientationPatient {iop.tolist()} is not two perpendicular "
                           "unit vectors")


def _get(ds, keyword: str):
    try:
        value = ds.get(keyword)
    except Exception as e:  # pydicom converts lazily: a broken value fails on access
        from pydicom.datadict import tag_for_keyword

        raw = getattr(ds.get_item(tag_for_keyword(keyword)), "value", b"")
        raise MalformedTag(f"{keyword} {_show(raw)} (not a value of its type)") from e
    return None if value is None or (hasattr(value, "__len__") and not len(value)) else value


def int_tag(ds, keyword: str, default: int | None = None) -> int | None:
    """An integer tag within its sane range (``_INT_RANGES``), or ``default`` if absent."""
    value = _get(ds, keyword)
    if value is None:
        return default
    try:
        number = int(value)  # pydicom hands an invalid IS ('1A') back as a str
    except (TypeError, ValueError):
        raise MalformedTag(f"{keyword} {_show(value)}") from None
    lo, hi = _INT_RANGES.get(keyword, (-(2**63), 2**63 - 1))
    if not lo <= number <= hi:
        raise MalformedTag(f"{keyword} {number} (expected {lo}..{hi})")
    return number


def floats_tag(ds, keyword: str, n: int) -> np.ndarray | None:
    """``n`` finite numbers (a DS tag such as ImagePositionPatient), or None if absent."""
    value = _get(ds, keyword)
    if value is None:
        return None
    items = [value] if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") \
        else list(value)
    try:
        numbers = np.asarray([float(v) for v in items], float)
    except (TypeError, ValueError):
        raise MalformedTag(f"{keyword} {_show(value)}") from None
    if numbers.shape != (n,) or not np.all(np.isfinite(numbers)):
        raise MalformedTag(f"{keyword} {_show(value)} (expected {n} finite numbers)")
    return numbers


def decimal_step(ds, keyword: str) -> float | None:
    """The finest decimal step in which a DS tag's values are written (0.01 for
    '-112.3\\40.25'), or None when absent or not decimal text.

    How precisely a scanner wrote ImagePositionPatient says how far apart rounding alone
    can put slices that lie on one straight stack (``geometry.shear_noise_mm``).
    """
    from decimal import Decimal, InvalidOperation

    try:
        value = _get(ds, keyword)
    except MalformedTag:
        return None
    if value is None:
        return None
    items = [value] if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") \
        else list(value)
    steps = []
    for v in items:
        text = getattr(v, "original_string", None) or str(v)
        try:
            exponent = Decimal(str(text).strip()).as_tuple().exponent
        except (InvalidOperation, ValueError):
            return None
        if not isinstance(exponent, int):  # NaN, infinity
            return None
        steps.append(10.0 ** exponent)
    return min(steps) if steps else None


def text_tag(ds, keyword: str) -> str:
    """A tag as stripped text; '' when absent or unreadable (for names and keys only)."""
    try:
        return str(ds.get(keyword, "") or "").strip()
    except Exception:
        return ""


def _show(value) -> str:
    if isinstance(value, bytes):
        value = value.decode("latin-1").strip()
    text = repr(value if isinstance(value, str) else str(value))
    return text if len(text) <= 40 else text[:37] + "..."


def frames_in(ds) -> int:
    return int_tag(ds, "NumberOfFrames", 1)


def pixel_samples(ds) -> int:
    """Samples GDCM will decode for this file (rows x columns x frames x samples)."""
    return (int_tag(ds, "Rows", 0) * int_tag(ds, "Columns", 0) * frames_in(ds)
            * int_tag(ds, "SamplesPerPixel", 1))


def functional_groups(ds) -> tuple[list, object | None]:
    """(per-frame functional group items, shared item or None) of an enhanced file."""
    frames = list(ds.get("PerFrameFunctionalGroupsSequence") or [])
    shared = (ds.get("SharedFunctionalGroupsSequence") or [None])[0]
    return frames, shared


def frame_group(frame, shared, keyword: str):
    """The item of functional group ``keyword`` that applies to a frame (shared first,
    as the standard puts a group in one place or the other), or None."""
    for group in (shared, frame):
        if group is not None and keyword in group and len(group[keyword].value):
            return group[keyword].value[0]
    return None


def frame_rescales(ds) -> list[tuple[float, float]] | None:
    """(RescaleSlope, RescaleIntercept) of each frame of an enhanced multi-frame file, from
    its PixelValueTransformationSequence (shared or per frame; (1, 0) where a frame has
    none); None when no group has one (the top-level tags, if any, then apply)."""
    frames, shared = functional_groups(ds)
    groups = [frame_group(f, shared, "PixelValueTransformationSequence") for f in frames]
    if all(g is None for g in groups):
        return None
    return [(1.0, 0.0) if g is None else _rescale_of(g) for g in groups]


def _rescale_of(item) -> tuple[float, float]:
    slope = floats_tag(item, "RescaleSlope", 1)
    intercept = floats_tag(item, "RescaleIntercept", 1)
    return (1.0 if slope is None else float(slope[0]),
            0.0 if intercept is None else float(intercept[0]))


def series_key(ds) -> str:
    """The SeriesInstanceUID; for files without one, a stable key made of what else
    identifies a series (so such files form series of their own, with distinct handles)."""
    uid = text_tag(ds, "SeriesInstanceUID")
    if uid:
        return uid
    parts = [text_tag(ds, k) for k in ("StudyInstanceUID", "FrameOfReferenceUID",
                                       "SeriesNumber", "Modality", "SeriesDescription",
                                       "Rows", "Columns")]
    try:
        iop = floats_tag(ds, "ImageOrientationPatient", 6)
        parts.append(str(None if iop is None else np.round(iop, 3).tolist()))
    except MalformedTag:
        parts.append("?")
    return "no-series-uid-" + hashlib.sha1("|".join(parts).encode()).hexdigest()[:12]

"""Does a DICOM file's pixel data hold what its header says? Checked before decoding.

The header is read without the pixels (``dicom_header``), which leaves the file at the
PixelData element; its own header (tag, VR, length) is read from there. A slice whose
pixel data is cut short (a copy that stopped), missing, or of another size than Rows x
Columns x frames x samples x bits says (a Rows tag that does not match its data) is
*malformed*: a folder's series is read without it, with a warning naming the file,
instead of GDCM failing the whole series on it (or reading it as another size).
Compressed (encapsulated) pixel data is checked item by item up to its delimiter.
"""

from __future__ import annotations

import os
import struct

_PIXEL_DATA = 0x7FE00010
_PIXEL_DATA_TAGS = (b"\xe0\x7f\x10\x00", b"\x7f\xe0\x00\x10")  # little, big endian
_ITEM, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE0DD
_LONG_VRS = {b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"UN", b"SQ", b"UT", b"UC", b"UR"}
_MAX_ITEMS = 1 << 20
UNDEFINED = 0xFFFFFFFF


def pixel_data_problem(path, ds, offset: int) -> str | None:
    """Why the pixel data at ``offset`` (where a header-only read of ``path`` stopped)
    is not what the header ``ds`` describes, or None."""
    syntax = _syntax(ds)
    if syntax is None:  # deflated or unknown: the bytes cannot be walked here
        return None
    implicit, little, compressed = syntax
    if getattr(ds, "napari_unet_misencoded", False):  # encoded against its syntax
        implicit = not implicit
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            f.seek(offset)
            element = _element_header(f, implicit, little)
            if element is None:
                f.seek(max(0, offset - 16))
                if any(tag in f.read() for tag in _PIXEL_DATA_TAGS):
                    return ("malformed pixel data: truncated (the file ends inside the "
                            "PixelData element's own header)")
                return ("malformed pixel data: none at all (the header describes an image "
                        "but the file has no PixelData element)")
            tag, length, start = element
            if tag != _PIXEL_DATA:
                return None  # float pixel data, or data after the pixels: not ours to judge
            if length == UNDEFINED:
                return _encapsulated_problem(f, start, size, little) if compressed else \
                    "malformed pixel data: undefined length in an uncompressed transfer syntax"
    except OSError:
        return None  # the reader says what the OS refused, with its own words
    if start + length > size:
        return (f"malformed pixel data: truncated (the file ends {start + length - size:,} "
                f"bytes short of the {length:,} bytes its header announces)")
    if compressed:
        return None
    return _size_problem(ds, length)


def _syntax(ds) -> tuple[bool, bool, bool] | None:
    """(implicit VR, little endian, compressed) of the data set; None when deflated."""
    try:
        ts = ds.file_meta.TransferSyntaxUID
        if ts.is_deflated:
            return None
        return bool(ts.is_implicit_VR), bool(ts.is_little_endian), bool(ts.is_compressed)
    except Exception:  # noqa: BLE001 - no file meta, or a private syntax: how pydicom read
        return bool(getattr(ds, "is_implicit_VR", True)), \
            bool(getattr(ds, "is_little_endian", True)), False


def _element_header(f, implicit: bool, little: bool) -> tuple[int, int, int] | None:
    """(tag, value length, where the value starts) of the element at the file position;
    None at the end of the file."""
    order = "<" if little else ">"
    raw = f.read(8)
    if len(raw) < 8:
        return None
    group, element = struct.unpack(order + "HH", raw[:4])
    tag = group << 16 | element
    if implicit:
        length = struct.unpack(order + "I", raw[4:])[0]
        return tag, length, f.tell()
    vr = raw[4:6]
    if vr in _LONG_VRS:
        more = f.read(4)
        if len(more) < 4:
            return tag, UNDEFINED - 1, f.tell()  # cut inside the element header
        return tag, struct.unpack(order + "I", more)[0], f.tell()
    return tag, struct.unpack(order + "H", raw[6:])[0], f.tell()


def _encapsulated_problem(f, start: int, size: int, little: bool) -> str | None:
    """Walk the items of encapsulated pixel data up to the sequence delimiter."""
    order = "<" if little else ">"
    position = start
    for frames in range(_MAX_ITEMS):
        f.seek(position)
        raw = f.read(8)
        if len(raw) < 8:
            return ("malformed pixel data: truncated (the compressed data ends before its "
                    f"delimiter, after {max(frames - 1, 0)} fragment(s))")
        group, element, length = struct.unpack(order + "HHI", raw)
        tag = group << 16 | element
        if tag == _SEQUENCE_END:
            return None if frames > 1 else "malformed pixel data: the compressed data is empty"
        if tag != _ITEM or length == UNDEFINED:
            return "malformed pixel data: the compressed data is not a sequence of items"
        position += 8 + length
        if position > size:
            return (f"malformed pixel data: truncated (the file ends {position - size:,} "
                    "bytes short of a compressed fragment)")
    return "malformed pixel data: too many compressed fragments"


def _size_problem(ds, length: int) -> str | None:
    """Uncompressed pixel data must hold at least rows x columns x frames x samples x bits
    (more is padding, as pydicom and GDCM read it; a Rows tag too small for its data is
    found beside the other slices of its series, ``series``)."""
    from .dicom_header import MalformedTag, frames_in, int_tag, text_tag

    try:
        rows, cols = int_tag(ds, "Rows", 0), int_tag(ds, "Columns", 0)
        frames, samples = frames_in(ds), int_tag(ds, "SamplesPerPixel", 1)
        bits = int_tag(ds, "BitsAllocated", 16)
    except MalformedTag:
        return None  # the header's own check names it
    if samples == 3 and text_tag(ds, "PhotometricInterpretation").upper() == "YBR_FULL_422":
        samples = 2  # chroma stored for every other pixel
    expected = (rows * cols * frames * samples * bits + 7) // 8
    if length < expected:
        return (f"malformed pixel data: it holds {length:,} bytes, but Rows {rows} x Columns "
                f"{cols} x {frames} frame(s) x {samples} sample(s) x {bits} bits need "
                f"{expected:,}: the header does not match the data")
    return None

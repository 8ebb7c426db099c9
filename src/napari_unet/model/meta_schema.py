"""What a model file's metadata may hold: every field's type and range, and no unknown field.

A model file can come from anywhere; its metadata drives allocation (widths, patch size)
and inference (axis, classes), so it is checked before anything is built from it. The
relations between fields (channels agree with the task rules, lower < upper) are checked
afterwards by the dataclasses themselves.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

FORMAT = "napari-unet-model"
FORMAT_VERSION = 1
HASH_PATTERN = re.compile(r"sha256:[0-9a-f]{64}")
MAX_TEXT = 200  # characters of a name or class name


class MetaFieldError(ValueError):
    """One field that cannot be right; the message starts with the field's dotted name."""


@dataclass(frozen=True)
class Field:
    kind: str  # int, number, text, bool, mapping, pair, spacing, names, class_codes,
    #            profile, hash
    low: float | None = None
    high: float | None = None
    choices: tuple = ()
    required: bool = True


SCHEMA = {
    "format": Field("text", choices=(FORMAT,)),
    "format_version": Field("int", 1, required=False),
    "name": Field("text", required=False),
    "architecture": Field("mapping"),
    "task": Field("mapping"),
    "normalization": Field("mapping"),
    "default_axis": Field("int", 0, 2, required=False),
    "patch_size": Field("pair", 1, required=False),
    "pixel_spacing": Field("spacing", 0.001, 1000.0, required=False),  # mm, rows x columns
    "slice_context": Field("int", 0, 8, required=False),  # neighbours either side (2.5D)
    "default_planes": Field("text", choices=("one", "all"), required=False),
    # per label value: a DICOM SEG segment's coded concept and colour (io.class_codes)
    "class_codes": Field("class_codes", required=False),
    "provenance": Field("mapping", required=False),
    # the training scans' normalised intensities (model.intensity_profile): quality scores
    "intensity_profile": Field("profile", required=False),
    "hash": Field("hash"),
}
SECTIONS = {
    "architecture": {
        "in_channels": Field("int", 1),
        "out_channels": Field("int", 1),
        "base": Field("int", 1),  # how wide is too wide depends on memory: see unet
        "upsampling": Field("text", choices=("bilinear", "transposed")),
        "variant": Field("text", choices=("original", "milesial"), required=False),
    },
    "task": {
        "kind": Field("text", choices=("segment", "denoise")),
        "in_channels": Field("int", 1, required=False),
        "n_classes": Field("int", 0, 65536, required=False),  # labels fit uint16
        "class_names": Field("names", required=False),
        "threshold": Field("number", 0, 1, required=False),
    },
    "normalization": {
        "kind": Field("text", choices=("percentile", "window"), required=False),
        "lower": Field("number"),
        "upper": Field("number"),
        "clip": Field("bool", required=False),
    },
}


def check_metadata(meta) -> None:
    """Raise :class:`MetaFieldError` for the first field that is missing, unknown, of the
    wrong type or out of range."""
    _check_mapping("", meta, SCHEMA)
    if meta.get("format_version", 1) > FORMAT_VERSION:
        raise MetaFieldError(f"format_version {meta['format_version']}: written by a newer "
                             f"napari-unet (this one reads version {FORMAT_VERSION})")
    for section, fields in SECTIONS.items():
        _check_mapping(f"{section}.", meta[section], fields)


def _check_mapping(prefix: str, mapping, fields: dict[str, Field]) -> None:
    if not isinstance(mapping, dict):
        raise MetaFieldError(f"{prefix.rstrip('.') or 'metadata'} must be a JSON object")
    unknown = sorted(set(mapping) - set(fields))
    if unknown:
        raise MetaFieldError(f"{prefix}{unknown[0]} is not a known field")
    for key, spec in fields.items():
        if key in mapping:
            _check_value(f"{prefix}{key}", mapping[key], spec)
        elif spec.required:
            raise MetaFieldError(f"{prefix}{key} is missing")


def _check_value(name: str, value, spec: Field) -> None:
    problem = _KINDS[spec.kind](value, spec)
    if problem:
        raise MetaFieldError(f"{name} {problem} (got {_show(value)})")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _in_range(value, spec: Field) -> bool:
    return ((spec.low is None or value >= spec.low)
            and (spec.high is None or value <= spec.high))


def _range_words(spec: Field) -> str:
    if spec.high is None:
        return f">= {spec.low:g}"
    return f"in {spec.low:g}..{spec.high:g}"


def _int(value, spec: Field) -> str | None:
    if not _is_int(value) or not _in_range(value, spec):
        return f"must be an integer {_range_words(spec)}"
    return None


def _number(value, spec: Field) -> str | None:
    ok = (_is_int(value) or isinstance(value, float)) and math.isfinite(value)
    if not ok or not _in_range(value, spec):
        return "must be a finite number" + (f" {_range_words(spec)}" if spec.low is not None
                                            else "")
    return None


def _text(value, spec: Field) -> str | None:
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        return f"must be a text of at most {MAX_TEXT} characters"
    if spec.choices and value not in spec.choices:
        return f"must be one of {', '.join(map(repr, spec.choices))}"
    return None


def _pair(value, spec: Field) -> str | None:
    if not isinstance(value, list) or len(value) != 2 or any(_int(v, spec) for v in value):
        return f"must be two integers {_range_words(spec)}"
    return None


def _spacing(value, spec: Field) -> str | None:
    if not isinstance(value, list) or len(value) != 2 or any(_number(v, spec) for v in value):
        return f"must be two numbers (mm) {_range_words(spec)}"
    return None


def _names(value, spec: Field) -> str | None:
    if not isinstance(value, list) or any(_text(v, Field("text")) for v in value):
        return f"must be a list of texts of at most {MAX_TEXT} characters"
    return None


def _quantiles(value) -> bool:
    from .intensity_profile import LEVELS

    ok = (isinstance(value, list) and len(value) == len(LEVELS)
          and all(_number(v, Field("number", -1e9, 1e9)) is None for v in value))
    return ok and all(a <= b for a, b in zip(value, value[1:], strict=False))


def _scan_profile(value) -> str | None:
    from .intensity_profile import MAX_CLASSES

    if not isinstance(value, dict) or set(value) - {"quantiles", "voxels", "noise", "scans",
                                                     "classes"}:
        return "each scan must be an object of quantiles, voxels, noise, scans, classes"
    if not _quantiles(value.get("quantiles")):
        return "each scan's quantiles must be 21 finite non-decreasing numbers"
    if _int(value.get("voxels"), Field("int", 1)) or _int(value.get("scans", 1),
                                                            Field("int", 1)):
        return "each scan's voxels and scans must be integers >= 1"
    if _number(value.get("noise", 0.0), Field("number", 0, 1e9)):
        return "each scan's noise must be a finite number >= 0"
    classes = value.get("classes", [])
    if not isinstance(classes, list) or len(classes) > MAX_CLASSES or any(
            q is not None and not _quantiles(q) for q in classes):
        return (f"each scan's classes must be a list of at most {MAX_CLASSES} quantile "
                "lists (or null)")
    return None


def _profile(value, spec: Field) -> str | None:
    """An ``intensity_profile``: the quantiles of each training scan (see
    ``model.intensity_profile``), all finite, each list in order."""
    from .intensity_profile import LEVELS, MAX_SCANS

    if not isinstance(value, dict) or set(value) - {"levels", "scans", "noise_added"}:
        return "must be an object of levels, scans and noise_added"
    if value.get("levels") != len(LEVELS):
        return f"must give quantiles at {len(LEVELS)} levels"
    scans = value.get("scans")
    if not isinstance(scans, list) or not 1 <= len(scans) <= MAX_SCANS:
        return f"must list 1 to {MAX_SCANS} scans"
    problem = next((p for p in map(_scan_profile, scans) if p), None)
    if problem:
        return problem
    added = value.get("noise_added")
    if added is not None and (_spacing(added, Field("number", 0, 1)) or added[0] > added[1]):
        return "noise_added must be two levels low <= high in 0..1"
    return None


def _class_codes(value, spec: Field) -> str | None:
    from ..io.class_codes import problem

    return problem(value)


_KINDS = {
    "int": _int,
    "number": _number,
    "text": _text,
    "bool": lambda v, s: None if isinstance(v, bool) else "must be true or false",
    "mapping": lambda v, s: None if isinstance(v, dict) else "must be a JSON object",
    "pair": _pair,
    "spacing": _spacing,
    "names": _names,
    "profile": _profile,
    "class_codes": _class_codes,
    "hash": lambda v, s: None if isinstance(v, str) and HASH_PATTERN.fullmatch(v) else
    "must be 'sha256:' and 64 hex digits: a model file without its content hash cannot be "
    "checked for corruption",
}


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."

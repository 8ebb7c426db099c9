"""Label maps in files: is this file a segmentation, what are its class names; DICOM SEG
read as labels in the geometry of its frames.

A label map must reopen as labels (a person goes on correcting it), never as a grey
image that a model would then denoise. How a file says it holds labels:

- NIfTI written by napari-unet: intent code ``label`` (NIfTI's own "values are labels")
  and the class names as JSON in a ``comment`` header extension
  (``{"napari-unet": {"class_names": [...]}}``), which other tools show or ignore.
- any other NIfTI: intent ``label``, or a name with a ``labels``/``label``/``seg``/
  ``segmentation``/``mask`` part (``brain_labels.nii.gz``, ``case_seg.nii``) and integer
  values with at most ``MAX_NAMED_LABELS`` distinct values in a bounded sample.
- DICOM SEG (highdicom): one class per segment, named by its SegmentLabel, with its
  coded concept and recommended display colour (``class_codes``); the labels
  take the geometry of the scan whose instances the SEG references when that scan is
  at hand, else the SEG's own frame positions.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import VolumeReadError
from ..limits import check_allocation
from .source import DicomSource
from .volume import Volume

EXTENSION_KEY = "napari-unet"
LABEL_NAME = re.compile(r"(^|[._-])(labels?|seg|segmentation|mask)([._-]|$)", re.IGNORECASE)
MAX_NAMED_LABELS = 256  # distinct values a file named like labels may have
MAX_UNNAMED_LABELS = 16  # distinct values that make any integer data look like labels
SAMPLE_VOXELS = 1_000_000  # values looked at to count distinct values
MAX_CLASS_NAMES = 65536  # names kept per label map (uint16 labels)
MAX_EXTENSION_BYTES = 1 << 20  # a class-name extension larger than this is ignored
BACKGROUND = "background"


@dataclass
class LabelMap:
    """A label Volume and its class names (``class_names[v]`` names value v), or None
    when the file names no classes."""

    volume: Volume
    class_names: tuple[str, ...] | None = None
    # per label value, what a DICOM SEG's segment says it is and its colour
    class_codes: tuple | None = None


def named_like_labels(path: str | Path) -> bool:
    return LABEL_NAME.search(Path(path).name) is not None


def sample(array) -> np.ndarray:
    """At most about ``SAMPLE_VOXELS`` values of ``array``, spread over all of it."""
    shape = np.shape(array)
    if not shape:
        return np.asarray(array).reshape(1)
    step = max(1, int(np.ceil((np.prod(shape) / SAMPLE_VOXELS) ** (1 / len(shape)))))
    return np.asarray(array[tuple(slice(None, None, step) for _ in shape)])


def few_label_values(array, max_values: int = MAX_UNNAMED_LABELS) -> bool:
    """Non-negative integer values (in any dtype), at most ``max_values`` distinct ones,
    judged on a bounded sample (``sample``)."""
    dtype = np.dtype(array.dtype) if hasattr(array, "dtype") else np.asarray(array).dtype
    if np.issubdtype(dtype, np.bool_):
        return True
    if not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
        return False
    values = sample(array)
    if values.size == 0:
        return False
    fractional = np.issubdtype(values.dtype, np.floating) and (
        not np.all(np.isfinite(values)) or np.any(values != np.round(values)))
    return not fractional and values.min() >= 0 and np.unique(values).size <= max_values


def as_label_array(array: np.ndarray) -> np.ndarray:
    """Integral values as the smallest unsigned dtype napari's Labels accept."""
    if array.dtype == bool or np.issubdtype(array.dtype, np.unsignedinteger):
        return array.astype(np.uint8) if array.dtype == bool else array
    top = float(array.max(initial=0))
    dtype = np.uint8 if top <= 255 else np.uint16 if top <= 65535 else np.uint32
    return array.astype(dtype)


def class_names_for(n_labels: int, names=None) -> tuple[str, ...]:
    """``names`` padded to ``n_labels`` ("background", then "class i"), at most
    ``MAX_CLASS_NAMES`` of them (a label value read from a file can be anything)."""
    names = list(names or [])[:MAX_CLASS_NAMES]
    out = [names[i] if i < len(names) and names[i] else
           (BACKGROUND if i == 0 else f"class {i}")
           for i in range(min(n_labels, MAX_CLASS_NAMES))]
    return tuple(out)


# --- NIfTI -----------------------------------------------------------------------------------


def class_names_extension(class_names):
    """The NIfTI header extension that carries class names (see the module docstring)."""
    import nibabel as nib

    content = json.dumps({EXTENSION_KEY: {"class_names": [str(c) for c in class_names]}})
    return nib.nifti1.Nifti1Extension("comment", content.encode("utf-8"))


def nifti_label_info(header) -> tuple[bool, tuple[str, ...] | None]:
    """(intent says labels, class names from our extension) of a NIfTI header."""
    names = None
    for ext in getattr(header, "extensions", ()):
        if ext.get_code() != 6 or len(ext.get_content()) > MAX_EXTENSION_BYTES:  # comment
            continue
        try:
            found = json.loads(ext.get_content().decode("utf-8"))[EXTENSION_KEY]["class_names"]
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
        if isinstance(found, list) and all(isinstance(n, str) for n in found):
            names = class_names_for(len(found), found)
    try:
        intent = header.get_intent()[0]
    except Exception:  # unknown intent codes
        intent = ""
    return intent == "label" or names is not None, names


def nifti_label_map(volume: Volume, path: str | Path) -> LabelMap | None:
    """A NIfTI Volume as labels when its file says so (module docstring), else None."""
    import nibabel as nib

    if volume.has_channels:
        return None
    try:
        header = nib.load(str(path)).header  # lazy: header and extensions only
    except Exception:
        header = None
    flagged, names = nifti_label_info(header) if header is not None else (False, None)
    if not flagged:
        if not (named_like_labels(path) and few_label_values(volume.array, MAX_NAMED_LABELS)):
            return None
    elif not few_label_values(volume.array, max_values=np.iinfo(np.uint32).max):
        return None  # says labels but holds fractions or negatives: show it as it is
    volume.array = as_label_array(volume.array)
    if names is not None:
        names = class_names_for(max(len(names), int(volume.array.max(initial=0)) + 1), names)
    return LabelMap(volume, names)


# --- DICOM SEG ---------------------------------------------------------------------------------


def is_dicom_seg(ds) -> bool:
    return str(ds.get("Modality", "")).upper() == "SEG"


def seg_series_uid(ds) -> str:
    """SeriesInstanceUID of the scan a SEG was drawn on ("" when it does not say)."""
    for ref in ds.get("ReferencedSeriesSequence", []) or []:
        return str(ref.get("SeriesInstanceUID", ""))
    return ""


def read_dicom_seg(path: str | Path, like: Volume | None = None) -> LabelMap:
    """A DICOM SEG as one label map: value = segment number, named by SegmentLabel.

    With ``like`` (the scan the SEG references, read from single-frame DICOM), the labels
    are laid on that scan's grid, slice by slice through the referenced instances, and
    share its geometry and source; otherwise the SEG's own frame geometry is used.
    """
    import highdicom as hd

    path = Path(path)
    try:
        seg = hd.seg.segread(str(path))
        numbers = [int(n) for n in seg.segment_numbers]
        names = {n: str(seg.get_segment_description(n).segment_label) for n in numbers}
        codes = {n: _segment_code(seg.get_segment_description(n)) for n in numbers}
        n_frames = int(seg.get("NumberOfFrames", 1) or 1)
        check_allocation(n_frames * int(seg.Rows) * int(seg.Columns) * 2,
                         f"{path}: the DICOM SEG", VolumeReadError)
        volume = (_on_scan(seg, path, like) if _references(seg, like) else None) \
            or _own_geometry(seg, path)
    except VolumeReadError:
        raise
    except Exception as e:  # highdicom/pydicom raise many types for odd files
        raise VolumeReadError(f"{path}: cannot read this DICOM SEG "
                              f"({type(e).__name__}: {e}).") from e
    volume.array = as_label_array(volume.array)
    top = min(max([*numbers, int(volume.array.max(initial=0))], default=0),
              MAX_CLASS_NAMES - 1)
    class_names = tuple(BACKGROUND if v == 0 else names.get(v, f"segment {v}")
                        for v in range(top + 1))
    return LabelMap(volume, class_names, tuple(codes.get(v) for v in range(top + 1)))


def _segment_code(description):
    """A segment's category, type and colour as a ``ClassCode`` (None where unreadable)."""
    from .class_codes import ClassCode, Concept

    try:
        category, kind = (description[k][0] for k in ("SegmentedPropertyCategoryCodeSequence",
                                                      "SegmentedPropertyTypeCodeSequence"))
        concepts = [Concept(str(c.CodingSchemeDesignator), str(c.CodeValue), str(c.CodeMeaning))
                    for c in (category, kind)]
        color = None
        if "RecommendedDisplayCIELabValue" in description:
            import highdicom as hd

            color = tuple(int(v) for v in hd.color.CIELabColor.from_dicom_value(
                description.RecommendedDisplayCIELabValue).to_rgb())
        return ClassCode(*concepts, color)
    except (AttributeError, IndexError, KeyError, TypeError, ValueError):
        return None


def _references(seg, like: Volume | None) -> bool:
    src = like.source if like is not None else None
    return (isinstance(src, DicomSource) and not src.multi_frame
            and seg_series_uid(seg) == src.series_uid != "")


def _on_scan(seg, path: Path, like: Volume) -> Volume | None:
    try:
        array = seg.get_pixels_by_source_instance(
            list(like.source.sop_instance_uids), combine_segments=True,
            assert_missing_frames_are_empty=True)
    except (ValueError, KeyError, RuntimeError):
        return None  # e.g. spatial locations not preserved: fall back on the SEG's frames
    index = like.source.slice_index
    if index is not None and len(index) == len(array):  # blank slices of the scan: empty
        full = np.zeros(like.spatial_shape, array.dtype)
        full[list(index)] = array
        array = full
    if tuple(array.shape) != tuple(like.spatial_shape):
        return None
    return Volume(array, like.spacing, like.origin, like.direction, "SEG", like.source,
                  f"{like.name} {path.stem}")


def _own_geometry(seg, path: Path) -> Volume:
    from . import geometry

    vol = seg.get_volume(combine_segments=True)
    array = np.asarray(vol.array)
    spacing, origin, direction = geometry.geometry_from_affine(vol.affine)
    if np.dot(direction[:, 0], np.cross(direction[:, 2], direction[:, 1])) < 0:
        # slices in the order a DICOM series is read (along row x column), like its scan
        origin = tuple(np.asarray(origin) + direction[:, 0] * spacing[0] * (len(array) - 1))
        direction[:, 0] *= -1
        array = array[::-1]
    source = DicomSource(
        path=str(path.resolve()), files=(str(path.resolve()),),
        sop_instance_uids=(str(seg.SOPInstanceUID),),
        series_uid=str(seg.get("SeriesInstanceUID", "")),
        study_uid=str(seg.get("StudyInstanceUID", "")),
        frame_of_reference_uid=str(seg.get("FrameOfReferenceUID", "")), multi_frame=True)
    return Volume(np.ascontiguousarray(array), spacing, origin, direction, "SEG", source,
                  path.stem)

"""DICOM SEG output (highdicom) for segmentations of DICOM input.

One segment per class except background (label 0), labelled with the model's class
names, BINARY segmentation type, referencing the source instances it was computed on
(their SOPInstanceUIDs, frame of reference and per-frame positions come from the source
files listed in ``Volume.source``, which must still exist). Each segment carries its
class's coded concept (Segmented Property Category and Type from DICOM's context groups)
and display colour (RecommendedDisplayCIELabValue): the model's ``class_codes``, else
the generic "Tissue" with the class name as label and the palette's colour, with one
:class:`UncodedClassWarning` per SEG naming those classes (``io.class_codes``).

The source files are checked first: a source whose kind of DICOM cannot carry a SEG
(a legacy multi-frame file such as an RT Dose, an image without patient geometry such
as a Secondary Capture, a missing attribute the SEG cannot do without) is an
``UnsupportedSourceError`` naming the file and the attribute (never a raw
highdicom error); source files that cannot be read are a ``VolumeWriteError``. Missing
type 2 patient/study attributes (allowed to be empty) are taken as empty. The
SeriesDescription names the algorithm (the model), never the scan: folder and scan names
may carry patient names.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import UnsupportedSourceError
from .class_codes import FALLBACK, ClassCode, class_codes_for_labels, class_color
from .source import DicomSource
from .volume import Volume
from .write import VolumeWriteError, atomic_path, check_target

UNCODED = "DICOM SEG segments of classes without a coded concept in the model"


class UncodedClassWarning(UserWarning):
    """Classes whose DICOM SEG segments get the generic concept "Tissue": the model file
    says nothing more of them."""


# what a SEG copies from any source and cannot invent (the geometry it needs depends on
# the source's IOD: highdicom's missing attribute is reported by name)
REQUIRED = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID",
            "Modality", "Rows", "Columns")
PLANE = ("PixelSpacing", "ImageOrientationPatient", "ImagePositionPatient")  # for series
MULTI_FRAME = ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence")
# type 2 attributes (present, may be empty) that anonymised sources often drop
MAY_BE_EMPTY = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate",
                "StudyTime", "AccessionNumber", "ReferringPhysicianName", "StudyID")


def write_dicom_seg(
    labels: np.ndarray,
    path: str | Path,
    like: Volume,
    class_names: list[str] | None = None,
    algorithm: str = "napari-unet",
    class_codes: list[ClassCode | None] | None = None,
) -> Path:
    """Write ``labels`` (slices-first, values 0..N-1) as a DICOM SEG next to ``like``'s series.

    ``class_names[i]`` names label i (``class_names[0]`` is background and gets no
    segment); missing names become ``class <i>``. ``class_codes[i]`` (a model's
    ``meta.class_codes``) codes it; see the module docstring for classes without one.
    ``algorithm`` (the model's name) also makes the SeriesDescription. Atomic write;
    raises ``VolumeWriteError`` for non-DICOM ``like``, a shape mismatch or unreadable
    sources, ``UnsupportedSourceError`` for sources that cannot carry a SEG.
    """
    path = Path(path)
    src = like.source
    if not isinstance(src, DicomSource):
        raise VolumeWriteError(f"{path}: a DICOM SEG needs a DICOM source scan.")
    labels = np.asarray(labels)
    if labels.shape != tuple(like.spatial_shape):
        raise VolumeWriteError(
            f"{path}: labels of shape {labels.shape} do not match the scan {like.spatial_shape}."
        )
    check_target(path, like)
    n_classes = max(len(class_names or []), int(labels.max(initial=0)) + 1, 2)
    names = [(class_names or [])[i] if i < len(class_names or []) else f"class {i}"
             for i in range(n_classes)]
    datasets = _source_datasets(path, src)
    if src.slice_index is not None:  # blank slices stood in for missing ones: no source
        labels = labels[list(src.slice_index)]
    codes = class_codes_for_labels(n_classes, class_codes)
    try:
        seg = _segmentation(labels, datasets, names, codes, algorithm)
    except AttributeError as e:
        missing = re.search(r"has no attribute '(\w+)'", str(e))
        what = missing.group(1) if missing else str(e)
        raise UnsupportedSourceError(f"{path}: the source {src.path} has no {what}, which a "
                                     "DICOM SEG of this kind of image needs.") from e
    except (KeyError, IndexError, TypeError, ValueError) as e:
        raise UnsupportedSourceError(f"{path}: highdicom cannot build a DICOM SEG on "
                                     f"{src.path} ({type(e).__name__}: {e}).") from e
    _warn_uncoded(algorithm, names, codes)
    with atomic_path(path, ".dcm") as tmp:
        seg.save_as(str(tmp))
    return path


def _source_datasets(path: Path, src: DicomSource) -> list:
    import pydicom

    try:
        datasets = [pydicom.dcmread(f, stop_before_pixels=True) for f in src.files]
    except (OSError, pydicom.errors.InvalidDicomError) as e:
        raise VolumeWriteError(
            f"{path}: the source DICOM files are needed for a DICOM SEG but cannot be read "
            f"({e})."
        ) from e
    for f, ds in zip(src.files, datasets, strict=True):
        _check_source(path, f, ds, len(datasets))
        for keyword in MAY_BE_EMPTY:
            if keyword not in ds:
                setattr(ds, keyword, "")  # in memory only: the source file is untouched
    return datasets


def _check_source(path: Path, file: str, ds, n_sources: int) -> None:
    multi_frame = int(ds.get("NumberOfFrames", 1) or 1) > 1
    if multi_frame and not all(k in ds for k in MULTI_FRAME):
        raise UnsupportedSourceError(
            f"{path}: {file} is a multi-frame {ds.get('Modality', '')} file without "
            "per-frame functional groups (a legacy multi-frame object); a DICOM SEG cannot "
            "reference its frames.")
    # to place each frame: a series' slices, or a single image without patient geometry
    # (a Secondary Capture: the SEG would lack what its IOD requires instead of it)
    needed = REQUIRED + (PLANE if n_sources > 1 or not multi_frame else ())
    missing = [k for k in needed if not ds.get(k)]
    if missing:
        raise UnsupportedSourceError(
            f"{path}: the source {file} has no {', '.join(missing)}, which a DICOM SEG "
            "needs.")


def _segmentation(labels, datasets, names, codes, algorithm):
    import highdicom as hd
    from pydicom.sr.codedict import codes as dicom_codes

    algo = hd.AlgorithmIdentificationSequence(
        name=long_string(algorithm), family=dicom_codes.cid7162.ArtificialIntelligence,
        version=__version__,
    )
    descriptions = []
    for i in range(1, len(names)):
        code = codes[i] or FALLBACK
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=i,
            segment_label=long_string(names[i]),
            segmented_property_category=code.category.code(),
            segmented_property_type=code.type.code(),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algo,
            display_color=hd.color.CIELabColor.from_rgb(*class_color(i, codes[i])),
        ))
    dtype = np.uint8 if len(names) <= 256 else np.uint16
    return hd.seg.Segmentation(
        source_images=datasets,
        pixel_array=labels.astype(dtype),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=999,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="napari-unet",
        manufacturer_model_name=long_string(algorithm),
        software_versions=__version__,
        device_serial_number="none",
        series_description=long_string(f"{algorithm} segmentation"),
        omit_empty_frames=bool(labels.any()),
    )


def _warn_uncoded(algorithm: str, names: list[str], codes) -> None:
    uncoded = [f"{i} {names[i]}" for i in range(1, len(names)) if codes[i] is None]
    if uncoded:
        warnings.warn(
            f"{long_string(algorithm)}: {UNCODED} ({', '.join(uncoded)}) are coded as "
            f"{FALLBACK.type}, labelled by their class names; give the model codes "
            "(napari-unet train or import --class-codes) so that viewers know what they show",
            UncodedClassWarning, stacklevel=3)


def long_string(text: str) -> str:
    """A DICOM LO value: printable, no backslash (the value separator), 64 characters."""
    text = "".join(c if c.isprintable() and c != "\\" else " " for c in str(text))
    return " ".join(text.split())[:64] or "napari-unet"

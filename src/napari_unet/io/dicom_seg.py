"""DICOM SEG output (highdicom) for segmentations of DICOM input.

One segment per class except background (label 0), labelled with the model's class
names, BINARY segmentation type, referencing the source instances it was computed on
(their SOPInstanceUIDs, frame of reference and per-frame positions come from the source
files listed in ``Volume.source``, which must still exist).

The source files are checked first: a missing attribute the SEG cannot do without is a
``VolumeWriteError`` naming the file and the attribute (never a raw highdicom error);
missing type 2 patient/study attributes (allowed to be empty) are taken as empty. The
SeriesDescription names the algorithm (the model), never the scan: folder and scan names
may carry patient names.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .. import __version__
from .source import DicomSource
from .volume import Volume
from .write import VolumeWriteError, atomic_path, check_target

# Segment type codes for class names that have no standard code: a local scheme
LOCAL_SCHEME = "99NAPUNET"
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
) -> Path:
    """Write ``labels`` (slices-first, values 0..N-1) as a DICOM SEG next to ``like``'s series.

    ``class_names[i]`` names label i (``class_names[0]`` is background and gets no
    segment); missing names become ``class <i>``. ``algorithm`` (the model's name) also
    makes the SeriesDescription. Atomic write; raises ``VolumeWriteError`` for non-DICOM
    ``like``, a shape mismatch, or sources that lack what a SEG needs.
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
    try:
        seg = _segmentation(labels, datasets, names, algorithm)
    except AttributeError as e:
        missing = re.search(r"has no attribute '(\w+)'", str(e))
        what = missing.group(1) if missing else str(e)
        raise VolumeWriteError(f"{path}: the source {src.path} has no {what}, which a DICOM "
                               "SEG of this kind of image needs.") from e
    except (KeyError, IndexError, TypeError, ValueError) as e:
        raise VolumeWriteError(f"{path}: highdicom cannot build a DICOM SEG on {src.path} "
                               f"({type(e).__name__}: {e}).") from e
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
        raise VolumeWriteError(
            f"{path}: {file} is a multi-frame {ds.get('Modality', '')} file without "
            "per-frame functional groups (a legacy multi-frame object); a DICOM SEG cannot "
            "reference its frames.")
    needed = REQUIRED + (PLANE if n_sources > 1 else ())  # to place each slice's frame
    missing = [k for k in needed if not ds.get(k)]
    if missing:
        raise VolumeWriteError(
            f"{path}: the source {file} has no {', '.join(missing)}, which a DICOM SEG "
            "needs.")


def _segmentation(labels, datasets, names, algorithm):
    import highdicom as hd
    from pydicom.sr.codedict import codes

    algo = hd.AlgorithmIdentificationSequence(
        name=_long_string(algorithm), family=codes.cid7162.ArtificialIntelligence,
        version=__version__,
    )
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=i,
            segment_label=names[i][:64],
            segmented_property_category=codes.SCT.Tissue,
            segmented_property_type=hd.sr.CodedConcept(
                value=f"C{i}", scheme_designator=LOCAL_SCHEME, meaning=names[i][:64]
            ),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algo,
        )
        for i in range(1, len(names))
    ]
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
        manufacturer_model_name=_long_string(algorithm),
        software_versions=__version__,
        device_serial_number="none",
        series_description=_long_string(f"{algorithm} segmentation"),
        omit_empty_frames=bool(labels.any()),
    )


def _long_string(text: str) -> str:
    """A DICOM LO value: printable, no backslash (the value separator), 64 characters."""
    text = "".join(c if c.isprintable() and c != "\\" else " " for c in str(text))
    return " ".join(text.split())[:64] or "napari-unet"

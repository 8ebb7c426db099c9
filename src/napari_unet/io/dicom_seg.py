"""DICOM SEG output (highdicom) for segmentations of DICOM input.

One segment per class except background (label 0), labelled with the model's class
names, BINARY segmentation type, referencing the source instances it was computed on
(their SOPInstanceUIDs, frame of reference and per-frame positions come from the source
files listed in ``Volume.source``, which must still exist).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import __version__
from .source import DicomSource
from .volume import Volume
from .write import VolumeWriteError, atomic_path, check_target

# Segment type codes for class names that have no standard code: a local scheme
LOCAL_SCHEME = "99NAPUNET"


def write_dicom_seg(
    labels: np.ndarray,
    path: str | Path,
    like: Volume,
    class_names: list[str] | None = None,
    algorithm: str = "napari-unet",
) -> Path:
    """Write ``labels`` (slices-first, values 0..N-1) as a DICOM SEG next to ``like``'s series.

    ``class_names[i]`` names label i (``class_names[0]`` is background and gets no
    segment); missing names become ``class <i>``. Atomic write; raises
    ``VolumeWriteError`` for non-DICOM ``like`` or a shape mismatch.
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
    seg = _segmentation(labels, _source_datasets(path, src), names, algorithm, like.name)
    with atomic_path(path, ".dcm") as tmp:
        seg.save_as(str(tmp))
    return path


def _source_datasets(path: Path, src: DicomSource) -> list:
    import pydicom

    try:
        return [pydicom.dcmread(f, stop_before_pixels=True) for f in src.files]
    except (OSError, pydicom.errors.InvalidDicomError) as e:
        raise VolumeWriteError(
            f"{path}: the source DICOM files are needed for a DICOM SEG but cannot be read "
            f"({e})."
        ) from e


def _segmentation(labels, datasets, names, algorithm, series_description):
    import highdicom as hd
    from pydicom.sr.codedict import codes

    algo = hd.AlgorithmIdentificationSequence(
        name=algorithm, family=codes.cid7162.ArtificialIntelligence, version=__version__
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
        manufacturer_model_name=algorithm[:64],
        software_versions=__version__,
        device_serial_number="none",
        series_description=f"{series_description} segmentation"[:64],
        omit_empty_frames=bool(labels.any()),
    )

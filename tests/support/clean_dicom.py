"""Small DICOM series written attribute by attribute with pydicom, clean in ``dciodvfy``.

The SimpleITK-written series of :mod:`support.dicom_factory` lack attributes the CT and MR
Image IODs require (GDCM writes what it knows), so ``dciodvfy`` finds faults in them
before napari-unet touches them. Series from here have none (the tests check that), so
every finding in an output made from them is of napari-unet's making.

Geometry follows the Volume convention (``support.dicom_factory``): ``spacing`` in array
order (z, y, x), ``origin`` the LPS point of voxel (0, 0, 0), ``direction[:, a]`` the LPS
unit vector of array axis a. ``tilt`` (degrees) slides each slice along its columns'
direction by ``tan(tilt)`` times its distance along the slice normal, as a CT gantry tilt
does; ``shuffle`` writes the files under names (and InstanceNumbers) out of spatial
order.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from support.dicom_factory import AXIAL, new_uid

SOP = {"MR": "1.2.840.10008.5.1.4.1.1.4", "CT": "1.2.840.10008.5.1.4.1.1.2"}
PATIENT = {"PatientName": "Doe^Jane", "PatientID": "PID-12345", "PatientBirthDate": "19700101",
           "PatientSex": "F"}


def sagittal() -> np.ndarray:
    """Rows toward P, columns down (-S): the slice axis is row x column, toward R."""
    return np.column_stack([[-1.0, 0, 0], [0, 0, -1], [0, 1, 0]])


def coronal() -> np.ndarray:
    """Rows toward L, columns down (-S): the slice axis is row x column, toward P."""
    return np.column_stack([[0, 1.0, 0], [0, 0, -1], [1, 0, 0]])


def write_clean_series(
    array: np.ndarray,
    folder: str | Path,
    spacing=(2.0, 0.9, 0.8),
    origin=(-20.0, 10.0, 30.0),
    direction=None,
    modality: str = "MR",
    rescale: tuple[float, float] | None = None,
    tilt: float = 0.0,
    shuffle: bool = False,
    series_number: int = 3,
    study_uid: str | None = None,
    seed: int = 0,
) -> list[Path]:
    """Write ``array`` (z, y, x; values as the reader should return them) one file per
    slice; returns the paths in slice order. ``rescale=(slope, intercept)`` stores
    ``round((v - intercept) / slope)`` (CT: HU with those attributes)."""
    import pydicom  # noqa: F401 - imported for its side effect on the datasets' encoders

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    direction = AXIAL if direction is None else np.asarray(direction, float)
    if modality == "CT" and rescale is None:
        rescale = (1.0, -1024.0)
    slope, intercept = rescale or (1.0, 0.0)
    stored = np.round((np.asarray(array, float) - intercept) / slope)
    signed = bool(stored.min() < 0)
    stored = stored.astype(np.int16 if signed else np.uint16)
    common = _common(modality, signed, rescale, study_uid, series_number)
    order = np.random.default_rng(seed).permutation(len(array)) if shuffle else \
        np.arange(len(array))
    normal = direction[:, 0] * spacing[0]
    paths = []
    for k in range(len(array)):
        ipp = (np.asarray(origin, float) + k * normal
               + k * spacing[0] * math.tan(math.radians(tilt)) * direction[:, 1])
        ds = _slice(common, direction, spacing, ipp, stored[k], int(order[k]) + 1)
        if tilt:
            ds.GantryDetectorTilt = f"{tilt:g}"
        path = folder / f"IM{int(order[k]) + 1:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _common(modality: str, signed: bool, rescale, study_uid, series_number) -> dict:
    common = {
        **PATIENT, "SpecificCharacterSet": "ISO_IR 100",
        "StudyInstanceUID": study_uid or new_uid(), "StudyDate": "20240101",
        "StudyTime": "120000", "ReferringPhysicianName": "", "StudyID": "7",
        "AccessionNumber": "A123", "StudyDescription": "test study",
        "Modality": modality, "SeriesInstanceUID": new_uid(), "SeriesNumber": series_number,
        "SeriesDescription": "test series", "BodyPartExamined": "HEAD",
        "PatientPosition": "HFS", "FrameOfReferenceUID": new_uid(),
        "PositionReferenceIndicator": "", "Manufacturer": "test", "SOPClassUID": SOP[modality],
        "SamplesPerPixel": 1, "PhotometricInterpretation": "MONOCHROME2",
        "BitsAllocated": 16, "BitsStored": 16, "HighBit": 15,
        "PixelRepresentation": int(signed), "InstitutionName": "General Hospital",
        "OperatorsName": "Smith^Op", "ImageComments": "private remark",
    }
    if modality == "MR":
        common.update({
            "ImageType": ["ORIGINAL", "PRIMARY", "OTHER"], "ScanningSequence": "GR",
            "SequenceVariant": ["SP", "MP"], "ScanOptions": "", "MRAcquisitionType": "3D",
            "RepetitionTime": "22", "EchoTime": "9.2", "EchoTrainLength": "1",
            "ImagedNucleus": "1H", "MagneticFieldStrength": "1.5"})
    else:
        common.update({"ImageType": ["ORIGINAL", "PRIMARY", "AXIAL"], "KVP": "120",
                       "AcquisitionNumber": "1", "RescaleType": "HU"})
    if rescale is not None:
        common["RescaleSlope"] = f"{rescale[0]:.10g}"
        common["RescaleIntercept"] = f"{rescale[1]:.10g}"
    return common


def _slice(common: dict, direction, spacing, ipp, pixels: np.ndarray, number: int):
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = common["SOPClassUID"]
    meta.MediaStorageSOPInstanceUID = uid = new_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    for keyword, value in common.items():
        setattr(ds, keyword, value)
    ds.SOPInstanceUID = uid
    ds.InstanceNumber = number
    ds.ImagePositionPatient = [f"{v:.10g}" for v in ipp]
    ds.ImageOrientationPatient = [f"{v:.10g}" for v in (*direction[:, 2], *direction[:, 1])]
    ds.PixelSpacing = [f"{spacing[1]:.10g}", f"{spacing[2]:.10g}"]
    ds.SliceThickness = f"{spacing[0]:.10g}"
    ds.Rows, ds.Columns = pixels.shape
    ds.PixelData = np.ascontiguousarray(pixels).astype(pixels.dtype.newbyteorder("<")).tobytes()
    return ds


def series_kinds() -> dict[str, dict]:
    """The series every DICOM output is checked on: ``write_clean_series`` keywords."""
    from support.dicom_factory import oblique

    return {"axial": {}, "sagittal": {"direction": sagittal()},
            "coronal": {"direction": coronal()}, "oblique": {"direction": oblique(25)},
            "tilted CT": {"modality": "CT", "tilt": 15.0},
            "rescaled CT": {"modality": "CT", "rescale": (0.5, -1024.0)},
            "shuffled": {"shuffle": True}}


def series_values(kind: dict, shape=(5, 12, 10), seed: int = 0) -> np.ndarray:
    """Values for a series of ``kind`` (HU below 0 for CT), on its rescale's grid."""
    values = np.random.default_rng(seed).integers(0, 400, shape).astype(float)
    if kind.get("modality") == "CT":
        slope = (kind.get("rescale") or (1.0, 0.0))[0]
        values = values * slope - 1000.0
    return values


def stored_values(ds) -> np.ndarray:
    """What pydicom reads from one image, rescaled: the independent reference."""
    return ds.pixel_array * float(ds.get("RescaleSlope", 1) or 1) + float(
        ds.get("RescaleIntercept", 0) or 0)

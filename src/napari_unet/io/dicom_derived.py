"""A denoised DICOM scan back as DICOM: a derived series, one image per source image.

Each image that a slice of the volume came from (a file of the series, or a frame of an
enhanced multi-frame file) gets one single-frame image of the classic SOP class of its
kind (CT Image, MR Image: what every PACS, viewer and SimpleITK reads as a series):

- new Series and SOP Instance UIDs in the source's study and frame of reference;
  ImageType ``DERIVED\\SECONDARY``; a DerivationDescription naming the model; a
  SourceImageSequence naming the source image (and frame) it was computed from;
- that source image's own geometry (ImagePositionPatient, ImageOrientationPatient,
  PixelSpacing, SliceThickness), so gantry-tilted and oblique series keep every slice
  where it was;
- stored values that hold the denoised values: CT keeps the source's RescaleSlope and
  RescaleIntercept when the values fit in 16 bits (else a slope that fits them); MR,
  whose IOD has no rescale, keeps the source's stored scale;
- of the source, only what identifies patient and study (what highdicom copies into a
  SEG) and the acquisition attributes the IOD asks for (MR: pulse sequence, echo and
  repetition times...; CT: kVp): no private tags, no free text (descriptions, comments,
  institution, operators, protocol names). The equipment is napari-unet.

Blank slices that stood in for missing ones (``DicomSource.slice_index``) have no source
image and are left out: the derived series has the images the source has. A source that
is not CT or MR (PET, RT Dose, secondary capture...), or has several channels, is an
``UnsupportedSourceError``; unreadable source files are a ``VolumeWriteError``.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import shutil
import uuid
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import UnsupportedSourceError
from .dicom_header import frame_group, functional_groups
from .dicom_seg import long_string
from .source import DicomSource
from .volume import Volume
from .write import VolumeWriteError

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
# source SOP class -> the classic class its derived images take
CLASSIC = {CT_IMAGE: CT_IMAGE, "1.2.840.10008.5.1.4.1.1.2.1": CT_IMAGE,
           "1.2.840.10008.5.1.4.1.1.2.2": CT_IMAGE, MR_IMAGE: MR_IMAGE,
           "1.2.840.10008.5.1.4.1.1.4.1": MR_IMAGE, "1.2.840.10008.5.1.4.1.1.4.4": MR_IMAGE}
# identifiers of patient and study (the set highdicom copies into a SEG, with the
# de-identification flags that must go with them); type 2 ones are written empty if absent
PATIENT_STUDY = ("PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate",
                 "PatientSex", "PatientIdentityRemoved", "DeidentificationMethod",
                 "DeidentificationMethodCodeSequence", "StudyInstanceUID", "StudyDate",
                 "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber")
TYPE_2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate",
          "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber",
          "PositionReferenceIndicator")
# coded or numeric attributes of the series and acquisition, never free text
SERIES = ("Modality", "BodyPartExamined", "Laterality", "ImageLaterality", "PatientPosition",
          "FrameOfReferenceUID", "PositionReferenceIndicator", "ContrastBolusAgent")
MR_ACQUISITION = ("ScanningSequence", "SequenceVariant", "ScanOptions", "MRAcquisitionType",
                  "RepetitionTime", "EchoTime", "EchoTrainLength", "InversionTime",
                  "TriggerTime", "ImagedNucleus", "MagneticFieldStrength", "ImagingFrequency",
                  "EchoNumbers", "NumberOfAverages", "FlipAngle", "PixelBandwidth",
                  "SpacingBetweenSlices", "AcquisitionMatrix",
                  "InPlanePhaseEncodingDirection", "AngioFlag")
MR_TYPE_2 = ("ScanOptions", "MRAcquisitionType", "EchoTime", "EchoTrainLength")
CT_ACQUISITION = ("KVP", "AcquisitionNumber", "GantryDetectorTilt", "RescaleType",
                  "DataCollectionDiameter", "ReconstructionDiameter", "XRayTubeCurrent",
                  "ExposureTime", "Exposure", "TableHeight")
CT_TYPE_2 = ("KVP", "AcquisitionNumber")
PLANE = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness",
         "SliceLocation")
LOSSY = ("LossyImageCompression", "LossyImageCompressionRatio", "LossyImageCompressionMethod")


def write_derived_series(
    image: np.ndarray,
    folder: str | Path,
    like: Volume,
    algorithm: str = "napari-unet",
    model_hash: str = "",
) -> Path:
    """Write ``image`` (slices-first, ``like``'s shape, in its intensity units) as a derived
    DICOM series in ``folder`` (new; one ``IM<n>.dcm`` per source image, in spatial order).

    ``algorithm`` (the model's name) makes the SeriesDescription and, with
    ``model_hash``, the DerivationDescription. Atomic: the files go to a hidden folder
    beside ``folder``, renamed into place when all are written.
    """
    folder = Path(folder)
    src = like.source
    if not isinstance(src, DicomSource):
        raise VolumeWriteError(f"{folder}: a derived DICOM series needs a DICOM source scan.")
    image = np.asarray(image)
    if image.ndim == 4 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 4 and image.shape[:3] == tuple(like.spatial_shape):
        raise UnsupportedSourceError(
            f"{folder}: an image of {image.shape[-1]} channels cannot go back as a "
            "greyscale DICOM series.")
    if image.shape != tuple(like.spatial_shape):
        raise VolumeWriteError(f"{folder}: an image of shape {image.shape} does not match "
                               f"the scan {like.spatial_shape}.")
    _check_target(folder, src)
    sources = _source_images(folder, src)
    pixels = _Pixels.fitting(image, sources)
    common = _series_attributes(sources[0], algorithm, model_hash)
    tmp = folder.with_name(f".{folder.name}.{uuid.uuid4().hex[:8]}.part")
    try:
        tmp.mkdir(parents=True)
        width = max(4, len(str(len(sources))))
        for number, source in enumerate(sources, start=1):  # one slice in memory at a time
            ds = _image(source, pixels.stored(image[source.slice]), pixels.rescale, common,
                        number)
            ds.save_as(tmp / f"IM{number:0{width}d}.dcm", enforce_file_format=True)
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
        os.rename(tmp, folder)
    except OSError as exc:
        raise VolumeWriteError(f"{folder}: cannot write the derived series "
                               f"({exc.strerror or exc}).") from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(tmp)
    return folder


def _check_target(folder: Path, src: DicomSource) -> None:
    target = folder.resolve()
    for f in (src.path, *src.files):
        if target == Path(f).resolve() or target in Path(f).resolve().parents:
            raise VolumeWriteError(f"{folder}: holds the input scan; choose another folder.")
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise VolumeWriteError(f"{folder}: exists; a derived series goes into a new folder.")


# --- the source images ---------------------------------------------------------------------


class _Source:
    """One source image: its file's header, frame number (enhanced files) and array slice."""

    def __init__(self, ds, frame: int | None, slice_: int):
        self.ds, self.frame, self.slice = ds, frame, slice_
        self.sop_class = str(ds.SOPClassUID)
        self.classic = CLASSIC.get(self.sop_class)

    def get(self, keyword: str):
        """An attribute of this image: top level, else its functional groups (enhanced)."""
        if self.frame is None:
            return self.ds.get(keyword)
        if keyword in self.ds:
            return self.ds.get(keyword)
        frames, shared = functional_groups(self.ds)
        frame = frames[self.frame - 1] if self.frame <= len(frames) else None
        for group in ("PlanePositionSequence", "PlaneOrientationSequence",
                      "PixelMeasuresSequence", "PixelValueTransformationSequence",
                      "FrameVOILUTSequence", "CTAcquisitionDetailsSequence",
                      "CTXRayDetailsSequence", "MRTimingAndRelatedParametersSequence",
                      "MREchoSequence", "FrameAnatomySequence"):
            item = frame_group(frame, shared, group)
            if item is not None and keyword in item:
                return item.get(keyword)
        for converted in ("UnassignedSharedConvertedAttributesSequence",
                          "UnassignedPerFrameConvertedAttributesSequence"):
            holder = shared if "Shared" in converted else frame
            items = (holder.get(converted) if holder is not None else None) or []
            if items and keyword in items[0]:
                return items[0].get(keyword)
        return None


def _source_images(folder: Path, src: DicomSource) -> list[_Source]:
    import pydicom

    try:
        headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in src.files]
    except (OSError, pydicom.errors.InvalidDicomError) as e:
        raise VolumeWriteError(f"{folder}: the source DICOM files are needed for a derived "
                               f"series but cannot be read ({e}).") from e
    if src.multi_frame:
        ds = headers[0]
        n = int(ds.get("NumberOfFrames", 1) or 1)
        if "PerFrameFunctionalGroupsSequence" not in ds:
            raise UnsupportedSourceError(
                f"{folder}: {src.files[0]} is a multi-frame {ds.get('Modality', '')} file "
                "without per-frame functional groups (a legacy multi-frame object); its "
                "frames cannot be given images of their own.")
        index = src.slice_index or tuple(range(n))
        sources = [_Source(ds, k + 1, index[k]) for k in range(n)]
    else:
        index = src.slice_index or tuple(range(len(headers)))
        sources = [_Source(ds, None, index[k]) for k, ds in enumerate(headers)]
    unsupported = {s.sop_class for s in sources if s.classic is None}
    if unsupported:
        from pydicom.uid import UID

        names = ", ".join(sorted(UID(u).name for u in unsupported))
        raise UnsupportedSourceError(
            f"{folder}: the source is {names}; napari-unet writes derived series of CT and "
            "MR images only.")
    return sorted(sources, key=lambda s: s.slice)


# --- pixel values ---------------------------------------------------------------------------


class _Pixels:
    """How the denoised values are stored: 16-bit integers, with (slope, intercept) or
    None (no rescale: MR's IOD has none)."""

    def __init__(self, rescale, lo: float, hi: float):
        self.rescale = rescale
        slope, intercept = rescale or (1.0, 0.0)
        self.scale = (float(slope), float(intercept))
        low = np.rint((lo - intercept) / slope)
        self.dtype = np.dtype(np.int16 if low < 0 else np.uint16)
        info = np.iinfo(self.dtype)
        self.range = (float(info.min), float(info.max))
        self.fill = lo  # for values that are not finite

    @classmethod
    def fitting(cls, image: np.ndarray, sources: list[_Source]) -> _Pixels:
        """The source's rescale when the values fit in 16 bits with it; CT (which has a
        rescale in its IOD) gets a wider slope when they do not, MR is clipped."""
        lo, hi = _finite_range(image, sorted({s.slice for s in sources}))
        first = sources[0]
        slope, intercept = _rescale_of(first)
        modality_lut = first.classic == CT_IMAGE  # MR images have no rescale in their IOD
        identity = not modality_lut and (slope, intercept) == (1.0, 0.0)
        rescale = None if identity else (slope, intercept)
        low, high = (np.rint((v - intercept) / slope) for v in (lo, hi))
        fits = (low >= 0 and high <= 65535) or (low >= -32768 and high <= 32767)
        if not fits and modality_lut:  # a slope that spreads the values over 16 bits
            slope = float(f"{max((hi - lo) / 65535.0, 1e-12):.8g}") * (1 + 1e-7)
            rescale = (slope, float(f"{lo:.10g}"))
        return cls(rescale, lo, hi)

    def stored(self, values: np.ndarray) -> np.ndarray:
        values = np.asarray(values, np.float64)
        if not np.isfinite(values).all():
            values = np.where(np.isfinite(values), values, self.fill)
        slope, intercept = self.scale
        stored = np.clip(np.rint((values - intercept) / slope), *self.range)
        return stored.astype(self.dtype)


def _finite_range(image: np.ndarray, slices: list[int]) -> tuple[float, float]:
    lo, hi = np.inf, -np.inf
    for k in slices:
        finite = image[k][np.isfinite(image[k])]
        if finite.size:
            lo, hi = min(lo, float(finite.min())), max(hi, float(finite.max()))
    return (lo, hi) if lo <= hi else (0.0, 0.0)


def _rescale_of(source: _Source) -> tuple[float, float]:
    def number(keyword: str, default: float) -> float:
        value = source.get(keyword)
        try:
            return float(value) if value not in (None, "") else default
        except (TypeError, ValueError):
            return default

    slope = number("RescaleSlope", 1.0)
    return (slope if slope != 0 else 1.0), number("RescaleIntercept", 0.0)


# --- the derived images ---------------------------------------------------------------------


def _series_attributes(first: _Source, algorithm: str, model_hash: str) -> dict:
    from pydicom.uid import generate_uid

    ds, now, series_uid = first.ds, _dt.datetime.now(), generate_uid()
    out = {k: ds[k].value for k in ("SpecificCharacterSet", *PATIENT_STUDY)
           if k in ds and ds[k].value not in (None, "")}
    # as the source has them, even empty (an empty Laterality says "unknown")
    out.update({k: first.get(k) for k in SERIES if first.get(k) is not None})
    out.update({k: "" for k in TYPE_2 if k not in out})
    number = ds.get("SeriesNumber")
    try:
        series_number = int(number) + 1000 if number not in (None, "") else 1000
    except (TypeError, ValueError):
        series_number = 1000
    name = long_string(algorithm)
    described = f"denoised by the UNet model {name} (napari-unet {__version__}"
    described += f", model {model_hash[:23]})" if model_hash else ")"
    out.update({
        "SeriesInstanceUID": series_uid, "SeriesNumber": min(series_number, 2**31 - 1),
        "SeriesDescription": long_string(f"{name} denoised"),
        "SeriesDate": now.strftime("%Y%m%d"), "SeriesTime": now.strftime("%H%M%S"),
        "ContentDate": now.strftime("%Y%m%d"), "ContentTime": now.strftime("%H%M%S"),
        "InstanceCreationDate": now.strftime("%Y%m%d"),
        "InstanceCreationTime": now.strftime("%H%M%S"),
        "Manufacturer": "napari-unet", "ManufacturerModelName": name,
        "SoftwareVersions": __version__, "DerivationDescription": described,
        "BurnedInAnnotation": "NO",
    })
    return out


def _image(source: _Source, pixels: np.ndarray, rescale, common: dict, number: int):
    from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = source.classic
    meta.MediaStorageSOPInstanceUID = uid = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    for keyword, value in common.items():
        setattr(ds, keyword, value)
    ds.SOPClassUID, ds.SOPInstanceUID, ds.InstanceNumber = source.classic, uid, number
    ds.ImageType = _image_type(source)
    _copy(ds, source, PLANE)
    if "SliceThickness" not in ds:
        ds.SliceThickness = ""
    _acquisition(ds, source)
    _copy(ds, source, ("WindowCenter", "WindowWidth"))
    laterality = source.get("FrameLaterality")  # an enhanced image says it per frame
    if laterality and not any(k in ds for k in ("Laterality", "ImageLaterality")):
        ds.ImageLaterality = laterality
    if str(source.get("LossyImageCompression") or "") == "01":  # once lossy, always said
        _copy(ds, source, LOSSY)
    reference = Dataset()
    reference.ReferencedSOPClassUID = source.sop_class
    reference.ReferencedSOPInstanceUID = source.ds.SOPInstanceUID
    if source.frame is not None:
        reference.ReferencedFrameNumber = source.frame
    purpose = Dataset()
    purpose.CodeValue, purpose.CodingSchemeDesignator = "121322", "DCM"
    purpose.CodeMeaning = "Source image for image processing operation"
    reference.PurposeOfReferenceCodeSequence = [purpose]
    reference.SpatialLocationsPreserved = "YES"  # the same pixels at the same places
    ds.SourceImageSequence = [reference]
    instance, series = Dataset(), Dataset()  # Common Instance Reference: where it lives
    instance.ReferencedSOPClassUID = source.sop_class
    instance.ReferencedSOPInstanceUID = source.ds.SOPInstanceUID
    series.SeriesInstanceUID = source.ds.SeriesInstanceUID
    series.ReferencedInstanceSequence = [instance]
    ds.ReferencedSeriesSequence = [series]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = int(pixels.dtype == np.int16)
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = (f"{v:.10g}" for v in rescale)
    ds.PixelData = np.ascontiguousarray(pixels, pixels.dtype.newbyteorder("<")).tobytes()
    return ds


def _image_type(source: _Source) -> list[str]:
    """DERIVED\\SECONDARY, then what the source's third value says of the image (CT:
    AXIAL; an enhanced source's values mean other things, so OTHER / AXIAL)."""
    value = source.ds.get("ImageType") or []
    values = [value] if isinstance(value, str) else [str(v) for v in value]
    if source.frame is None and len(values) > 2:
        return ["DERIVED", "SECONDARY", *values[2:]]
    return ["DERIVED", "SECONDARY", "AXIAL" if source.classic == CT_IMAGE else "OTHER"]


def _acquisition(ds, source: _Source) -> None:
    if source.classic == MR_IMAGE:
        _copy(ds, source, MR_ACQUISITION)
        if source.frame is not None:
            _enhanced_mr_sequence(ds, source)
        for keyword in MR_TYPE_2:
            if keyword not in ds:
                setattr(ds, keyword, "")
    else:
        _copy(ds, source, CT_ACQUISITION)
        for keyword in CT_TYPE_2:
            if keyword not in ds:
                setattr(ds, keyword, "")
        if "RescaleType" not in ds:
            ds.RescaleType = "HU"


def _enhanced_mr_sequence(ds, source: _Source) -> None:
    """ScanningSequence and SequenceVariant (type 1 in the MR Image IOD) from what an
    Enhanced MR image says of its pulse sequence, where it does not carry them itself."""
    if "ScanningSequence" not in ds:
        echo = str(source.get("EchoPulseSequence") or "")
        sequence = {"SPIN": ["SE"], "GRADIENT": ["GR"], "BOTH": ["SE", "GR"]}.get(echo, [])
        if str(source.get("InversionRecovery") or "") == "YES":
            sequence.append("IR")
        if str(source.get("EchoPlanarPulseSequence") or "") == "YES":
            sequence.append("EP")
        if sequence:
            ds.ScanningSequence = sequence
    if "SequenceVariant" not in ds and "ScanningSequence" in ds:
        variant = []
        if str(source.get("SegmentedKSpaceTraversal") or "SINGLE") != "SINGLE":
            variant.append("SK")
        if str(source.get("Spoiling") or "NONE") != "NONE":
            variant.append("SP")
        if str(source.get("SteadyStatePulseSequence") or "NONE") != "NONE":
            variant.append("SS")
        if str(source.get("MagnetizationTransfer") or "NONE") != "NONE":
            variant.append("MTC")
        if str(source.get("OversamplingPhase") or "NONE") != "NONE":
            variant.append("OSP")
        ds.SequenceVariant = variant or ["NONE"]
    echo_time = source.get("EffectiveEchoTime")
    if "EchoTime" not in ds and echo_time not in (None, ""):
        ds.EchoTime = echo_time


def _copy(ds, source: _Source, keywords) -> None:
    for keyword in keywords:
        value = source.get(keyword)
        if value is not None and value != "":
            setattr(ds, keyword, value)


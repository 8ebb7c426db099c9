"""Write small, real DICOM series with SimpleITK (GDCM) for tests.

Geometry arguments follow the Volume convention: ``spacing`` in array order (z, y, x),
``origin`` the LPS point of voxel (0, 0, 0), ``direction[:, a]`` the LPS unit vector of
array axis a. Use right-handed stacks: DICOM readers sort slices along
row x column, so a left-handed stack reads back with its slice axis reversed. In array
order a right-handed stack has det(direction) = -1 (e.g. the default, the reversed
identity that ``sitk.GetImageFromArray`` gives).
"""

from __future__ import annotations

import locale
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from napari_unet.io.geometry import set_sitk_geometry

AXIAL = np.eye(3)[:, ::-1]  # array axes (z, y, x) along LPS (S, P, L): sitk's default


def oblique(deg: float = 25.0) -> np.ndarray:
    """AXIAL tilted by ``deg`` degrees about the LPS x axis (still right-handed)."""
    a = np.deg2rad(deg)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    return rx @ AXIAL


SOP_CLASSES = {"MR": "1.2.840.10008.5.1.4.1.1.4", "CT": "1.2.840.10008.5.1.4.1.1.2"}
_ROOT = "1.2.826.0.1.3680043.8.498."  # pydicom's UID root, fine for test data


def new_uid() -> str:
    import pydicom.uid

    return pydicom.uid.generate_uid(prefix=_ROOT)


def write_dicom_series(
    volume_array: np.ndarray,
    folder: str | Path,
    spacing=(1.0, 1.0, 1.0),
    origin=(0.0, 0.0, 0.0),
    direction=None,
    modality: str = "MR",
    patient_name: str = "Doe^Jane",
    series_uid: str | None = None,
    study_uid: str | None = None,
    rescale: tuple[float, float] | None = None,
    series_description: str = "test series",
    series_number: int = 1,
    instance_numbers=None,
    prefix: str = "slice",
) -> list[Path]:
    """Write ``volume_array`` (z, y, x) as one file per slice; return the file paths.

    ``rescale=(slope, intercept)``: the files store ``round((v - intercept) / slope)`` as
    int16 with those RescaleSlope/RescaleIntercept tags (added with pydicom, since GDCM
    would rescale the pixels itself), so readers recover ``v``.
    ``instance_numbers`` (one per slice) lets tests scramble InstanceNumber.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    direction = AXIAL if direction is None else np.asarray(direction, float)
    slope, intercept = rescale or (1.0, 0.0)
    values = np.round((np.asarray(volume_array, float) - intercept) / slope).astype(np.int16)
    image = sitk.GetImageFromArray(values)
    set_sitk_geometry(image, spacing, origin, direction)
    d = image.GetDirection()
    series_uid = series_uid or new_uid()
    common = {
        "0008|0016": SOP_CLASSES.get(modality, SOP_CLASSES["MR"]),
        "0008|0060": modality,
        "0008|0020": "20240101",
        "0008|0030": "120000",
        "0008|103e": series_description,
        "0010|0010": patient_name,
        "0010|0020": "PID-0001",
        "0020|000d": study_uid or new_uid(),
        "0020|000e": series_uid,
        "0020|0011": str(series_number),
        "0020|0052": new_uid(),
        "0020|0037": "\\".join(f"{v:.10g}" for v in (d[0], d[3], d[6], d[1], d[4], d[7])),
        "0018|0050": f"{spacing[0]:.10g}",
        "0018|0088": f"{spacing[0]:.10g}",
    }
    numbers = range(1, len(values) + 1) if instance_numbers is None else instance_numbers
    # GDCM's writer leaves the process locale at "C" (ASCII) after parsing the tags;
    # restore it so later subprocess output decoding in the same test run still works
    saved = locale.setlocale(locale.LC_ALL, None)
    try:
        return _write_slices(image, folder, common, list(numbers), prefix, rescale)
    finally:
        locale.setlocale(locale.LC_ALL, saved)


def _write_slices(image, folder, common, numbers, prefix, rescale) -> list[Path]:
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    paths = []
    for i in range(image.GetSize()[2]):
        sl = image[:, :, i]
        for tag, value in common.items():
            sl.SetMetaData(tag, value)
        ipp = image.TransformIndexToPhysicalPoint((0, 0, i))
        sl.SetMetaData("0020|0032", "\\".join(f"{v:.10g}" for v in ipp))
        sl.SetMetaData("0020|0013", str(numbers[i]))
        sl.SetMetaData("0008|0018", new_uid())
        path = folder / f"{prefix}{i:04d}.dcm"
        writer.SetFileName(str(path))
        writer.Execute(sl)
        if rescale is not None:
            _set_rescale(path, *rescale)
        paths.append(path)
    return paths


def _set_rescale(path: Path, slope: float, intercept: float) -> None:
    import pydicom

    ds = pydicom.dcmread(path)
    ds.RescaleSlope = f"{slope:.10g}"
    ds.RescaleIntercept = f"{intercept:.10g}"
    ds.RescaleType = "HU" if ds.Modality == "CT" else "US"
    ds.save_as(path)


def write_enhanced_mr(series_files, path: str | Path) -> Path:
    """Convert a single-frame MR series to one enhanced multi-frame file (highdicom).

    highdicom orders the frames its own way (descending along the normal here), which
    is exactly what readers must cope with.
    """
    import highdicom as hd
    import pydicom

    enhanced = hd.legacy.LegacyConvertedEnhancedMRImage(
        legacy_datasets=[pydicom.dcmread(f) for f in series_files],
        series_instance_uid=hd.UID(), series_number=5, sop_instance_uid=hd.UID(),
        instance_number=1)
    enhanced.save_as(path)
    return Path(path)

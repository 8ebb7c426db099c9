"""Reading and writing medical volumes (NIfTI, DICOM) with exact geometry.

World coordinates are LPS millimetres (DICOM/ITK); arrays are slices-first as
``sitk.GetArrayFromImage`` gives them. See ``geometry`` for every conversion.
Heavy libraries (nibabel, SimpleITK, pydicom, highdicom) are imported when used.
"""

from .dicom_derived import write_derived_series
from .dicom_seg import write_dicom_seg
from .read import read_volume
from .series import SeriesInfo, SeriesList, SliceSpacingWarning, list_series
from .source import ScanWarning
from .volume import Volume
from .write import ResampledWarning, VolumeWriteError, write_volume

__all__ = [
    "ResampledWarning",
    "ScanWarning",
    "SeriesInfo",
    "SeriesList",
    "SliceSpacingWarning",
    "Volume",
    "VolumeWriteError",
    "list_series",
    "read_volume",
    "write_derived_series",
    "write_dicom_seg",
    "write_volume",
]

"""A series GDCM cannot decode as a whole: find the slices it cannot decode, leave them out.

GDCM fails a whole series when one file's compressed pixel data is garbage (a JPEG 2000
stream cut short, a JPEG-LS stream of noise). Only then, each file is decoded on its own;
the ones that fail are left out of the series, each named in a warning, and the rest is
read again (a gap they leave gets the blank-slice treatment). When every file fails, or
none does, the series fails as it did.
"""

from __future__ import annotations

from ..errors import VolumeReadError
from .c_stderr import captured
from .dicom_header import MISENCODED

GDCM_FAILED = "SimpleITK/GDCM cannot read the pixel data"
MAX_FILES = 5000  # beyond this, decoding each file on its own costs more than it saves


def undecodable_left_out(label: str, members: list, error: VolumeReadError
                         ) -> tuple[list, list[str]]:
    """(members GDCM decodes, a note per file left out); raises ``error`` when leaving
    files out cannot help."""
    from .dicom import _execute_gdcm_quietly

    if GDCM_FAILED not in str(error) or not 1 < len(members) <= MAX_FILES:
        raise error
    good, notes = [], []
    for f, ds in members:
        if getattr(ds, MISENCODED, False):  # decoded only after re-encoding: kept
            good.append((f, ds))
            continue
        failed = False
        with captured() as printed:
            try:
                _execute_gdcm_quietly(f, [f])
            except VolumeReadError:
                failed = True
        if failed:
            said = f": {printed.summary()}" if printed.lines else ""
            notes.append(f"{_name(f)} left out of this series (GDCM cannot decode its pixel "
                         f"data{said})")
        else:
            good.append((f, ds))
    if not notes or not good:
        raise error
    return good, notes


def _name(path: str) -> str:
    from pathlib import Path

    return Path(path).name

"""Exception types shared by the core, the CLI and the widgets.

Every message names the file (where there is one) and what to do instead, because the
CLI and the napari notifications show these messages to users as they are.

The CLI maps the family to exit codes by one rule (``cli/main.py``): ``SettingsError``
and ``ModelFileError`` (what the user asked for cannot work) exit 2; every other
``NapariUnetError`` (a scan or a job failed) exits 1.
"""

from __future__ import annotations


class NapariUnetError(Exception):
    """Base class: anything the user can fix by changing input or settings."""


class SettingsError(NapariUnetError, ValueError):
    """Settings or arguments that cannot work (a device that is absent, a negative rate)."""


class TaskError(SettingsError):
    """Settings that contradict the task rules (e.g. denoising with out != in channels)."""


class ModelFileError(NapariUnetError):
    """A model file that cannot be read, is corrupted, or does not match its metadata."""


class VolumeReadError(NapariUnetError):
    """A scan that cannot be read; the message names the file and the reason."""


class VolumeWriteError(NapariUnetError, ValueError):
    """An output that cannot be written as asked (shape, path); names the file."""


class UnsupportedSourceError(VolumeWriteError):
    """A DICOM output that the source's kind of DICOM cannot carry (a SEG of an RT Dose,
    a derived series of a PET scan): a limit of the data, not something the user can fix,
    so a batch keeps the NIfTI and records a warning instead of failing the scan."""


class Cancelled(NapariUnetError):
    """A long job stopped because its ``cancel()`` callable returned True."""

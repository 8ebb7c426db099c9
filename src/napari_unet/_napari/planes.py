"""Slice planes in a clinician's words (axial, coronal, sagittal) <-> array axes of a scan.

The widgets ask which plane the model reads, never which array axis: the axis that holds
axial slices depends on how the scan was acquired and stored, and its direction cosines
say which one it is.
"""

from __future__ import annotations

import numpy as np

AUTO = "auto (the acquisition plane)"
PLANES = ("axial", "coronal", "sagittal")
CHOICES = (AUTO, *PLANES)
# the LPS world axis each plane's slices are stacked along: sagittal x, coronal y, axial z
_NORMAL = {"sagittal": 0, "coronal": 1, "axial": 2}

PLANE_TOOLTIP = ("Which 2D slices the model reads. auto: the plane the scan was acquired "
                 "in (the one with the thickest slices); for isotropic scans, the plane "
                 "the model was trained on.")


def plane_axis(plane: str, direction) -> int:
    """Array axis whose slices lie in ``plane`` for a scan with these direction cosines."""
    from ..io.geometry import anatomical_axes

    if plane not in _NORMAL:
        raise ValueError(f"unknown plane {plane!r}: use one of {', '.join(PLANES)}")
    nearest = anatomical_axes(direction)  # row a: the LPS axis nearest array axis a
    return int(np.argmax(nearest[:, _NORMAL[plane]]))


def axis_plane(axis: int, direction) -> str:
    """The plane (axial, coronal, sagittal) of the slices along array ``axis``."""
    return next(p for p in PLANES if plane_axis(p, direction) == int(axis) % 3)


def settings_axis(choice: str, volume) -> int | str:
    """The inference axis for a widget choice: 'auto' or the plane's array axis."""
    return "auto" if choice == AUTO else plane_axis(choice, volume.direction)


def resolved_axis(choice: str, volume, default_axis: int = 0) -> int:
    """A concrete array axis (training needs one): auto = the acquisition plane."""
    from ..inference.predictor import resolve_axis

    return resolve_axis(settings_axis(choice, volume), volume.spacing, default_axis)

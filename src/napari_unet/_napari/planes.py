"""Slice planes in a clinician's words (axial, coronal, sagittal) <-> array axes of a scan.

The widgets ask which plane the model reads, never which array axis: the axis that holds
axial slices depends on how the scan was acquired and stored, and its direction cosines
say which one it is.
"""

from __future__ import annotations

from ..io.geometry import PLANES, axis_plane, plane_axis  # noqa: F401 (the widgets' names)

AUTO = "auto (as acquired)"
CHOICES = (AUTO, *PLANES)

PLANE_TOOLTIP = ("Which 2D slices the model reads. auto: the plane the scan was acquired "
                 "in (the one with the thickest slices); for isotropic scans, the plane "
                 "the model was trained on.")


def settings_axis(choice: str, volume) -> int | str:
    """The inference axis for a widget choice: 'auto' or the plane's array axis."""
    return "auto" if choice == AUTO else plane_axis(choice, volume.direction)


def resolved_axis(choice: str, volume, default_axis: int = 0) -> int:
    """A concrete array axis (training needs one): auto = the acquisition plane."""
    from ..inference.predictor import resolve_axis

    return resolve_axis(settings_axis(choice, volume), volume.spacing, default_axis,
                        shape=getattr(volume.array, "shape", None))

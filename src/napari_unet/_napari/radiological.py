"""Radiological display: superior up in coronal and sagittal views, whichever way the
user rolls or transposes the dims.

Layers from this plugin have LPS world axes labelled "R→L", "A→P", "I→S"
(``io.geometry``), with negative scales where the data run the other way. With napari's
default camera (values grow down and to the right) that already shows an axial slice
radiologically (anterior up, the patient's right on the screen's left) and a sagittal one
with anterior on the left; only the superior axis has to grow *up* when it is on screen.
The camera flip changes nothing but the view: world coordinates, the status bar and
saved files stay in LPS millimetres.
"""

from __future__ import annotations

import weakref

from ..io.geometry import LPS_AXIS_LABELS

SUPERIOR = LPS_AXIS_LABELS[2]

_FOLLOWED: dict[int, weakref.ref] = {}


def orientation_2d(axis_labels, displayed) -> tuple[str, str] | None:
    """(vertical, horizontal) camera orientation for the displayed axes, or None when
    they are not anatomical (a layer from elsewhere: leave the user's camera alone)."""
    vertical, horizontal = (axis_labels[d] for d in displayed[-2:])
    if vertical not in LPS_AXIS_LABELS or horizontal not in LPS_AXIS_LABELS:
        return None
    return ("up" if vertical == SUPERIOR else "down"), "right"


def apply(viewer) -> None:
    """Set the camera for the current view (see the module docstring)."""
    dims = viewer.dims
    if dims.ndisplay != 2 or dims.ndim < 2:
        return
    wanted = orientation_2d(dims.axis_labels, dims.displayed)
    if wanted is not None and tuple(str(o.value) for o in viewer.camera.orientation2d) != wanted:
        viewer.camera.orientation2d = wanted


def follow_radiological_convention(viewer) -> None:
    """Keep ``viewer``'s camera radiological whenever the displayed axes change.

    Idempotent; holds the viewer weakly. The reader and sample data call it on the
    current viewer; widgets that add anatomical layers may call it on theirs. The
    patient's sides and the slice position go on the canvas with it
    (:mod:`.canvas_orientation`).
    """
    from .canvas_orientation import show_orientation

    show_orientation(viewer)
    for key, ref in list(_FOLLOWED.items()):
        if ref() is None:
            del _FOLLOWED[key]
    if id(viewer) in _FOLLOWED and _FOLLOWED[id(viewer)]() is viewer:
        apply(viewer)
        return
    ref = weakref.ref(viewer)

    def on_change(_event=None):
        v = ref()
        if v is not None:
            apply(v)

    for emitter in (viewer.dims.events.order, viewer.dims.events.ndisplay,
                    viewer.dims.events.axis_labels):
        emitter.connect(on_change)
    _FOLLOWED[id(viewer)] = ref
    apply(viewer)


def follow_current_viewer() -> None:
    """``follow_radiological_convention`` on napari's current viewer, if there is one
    (readers and sample data are not told which viewer they open into)."""
    try:
        from napari import current_viewer

        viewer = current_viewer()
    except Exception:  # no Qt viewer (headless use of the reader)
        return
    if viewer is not None:
        follow_radiological_convention(viewer)

"""The patient's sides at the canvas edges, and the slice position in millimetres.

As radiology viewers do: a letter at the middle of each canvas edge says which way the
patient lies there (R/L, A/P, S/I, as fits the plane shown), and the bottom left says
the plane and where the slice is ("axial S 12.5 mm": 12.5 mm superior of the scanner's
origin, in the LPS coordinates the status bar reads). Both come from the viewer's axis
labels (each napari world axis is one LPS axis, ``io.geometry``) and its camera, so they
follow dims rolls and transposes and the camera's flips, and hold for any scan opened by
napari-unet; for layers without anatomical axes, and in 3D, they are hidden.
"""

from __future__ import annotations

import weakref

from ..io.geometry import LPS_AXIS_LABELS

EDGES = {"top": "top_center", "bottom": "bottom_center", "left": "middle_left",
         "right": "middle_right"}
KEY = "napari_unet_{}"  # overlay names in viewer.canvas.overlays
SLICE = "slice"
PLANE_OF_NORMAL = {"I→S": "axial", "A→P": "coronal", "R→L": "sagittal"}
COLOR = "#f0e442"  # yellow, as on radiology workstations
FONT_SIZE = {"letter": 12, SLICE: 10}

_FOLLOWED: dict[int, weakref.ref] = {}


def ends(label: str) -> tuple[str, str]:
    """The letters at the low and the high end of an axis labelled like 'A→P'."""
    low, high = label.split("→")
    return low, high


def edge_letters(axis_labels, displayed, orientation2d) -> dict[str, str] | None:
    """{'top': 'A', 'bottom': 'P', 'left': 'R', 'right': 'L'} for the 2D view, or None
    when the displayed axes are not anatomical.

    ``orientation2d`` is napari's (vertical, horizontal) camera orientation: 'down' means
    values grow down the screen, so the low end is at the top.
    """
    vertical, horizontal = (axis_labels[d] for d in displayed[-2:])
    if vertical not in LPS_AXIS_LABELS or horizontal not in LPS_AXIS_LABELS:
        return None
    (v_low, v_high), (h_low, h_high) = ends(vertical), ends(horizontal)
    up, right = (str(getattr(o, "value", o)) for o in orientation2d)
    top, bottom = (v_high, v_low) if up == "up" else (v_low, v_high)
    left, right_ = (h_low, h_high) if right == "right" else (h_high, h_low)
    return {"top": top, "bottom": bottom, "left": left, "right": right_}


def slice_position(axis_labels, not_displayed, point) -> str | None:
    """'axial S 12.5 mm' for the anatomical axis not shown (None if there is none)."""
    for axis in not_displayed:
        label = axis_labels[axis]
        if label in PLANE_OF_NORMAL:
            low, high = ends(label)
            value = float(point[axis])
            side = high if value >= 0 else low
            return f"{PLANE_OF_NORMAL[label]} {side} {abs(value):.1f} mm"
    return None


def update(viewer) -> None:
    """Set the letters and the slice position for the current view (or hide them)."""
    dims, overlays = viewer.dims, viewer.canvas.overlays
    letters = where = None
    if dims.ndisplay == 2 and dims.ndim >= 2 and len(viewer.layers):
        letters = edge_letters(dims.axis_labels, dims.displayed,
                               viewer.camera.orientation2d)
        if letters is not None:
            where = slice_position(dims.axis_labels, dims.not_displayed, dims.point)
    for edge in EDGES:
        _show(overlays[KEY.format(edge)], letters[edge] if letters else None)
    _show(overlays[KEY.format(SLICE)], where)


def _show(overlay, text: str | None) -> None:
    """Show ``text`` (None: hide). An empty text is never drawn: vispy's text visual with
    no glyphs has crashed Mesa's OpenGL."""
    if not text:
        overlay.visible = False
        return
    if overlay.text != text:
        overlay.text = text
    overlay.visible = True


def _add_overlays(viewer) -> None:
    from napari.components.overlays import TextOverlay

    overlays = viewer.canvas.overlays
    for name, position in (*EDGES.items(), (SLICE, "bottom_left")):
        key = KEY.format(name)
        if key not in overlays:
            size = FONT_SIZE[SLICE if name == SLICE else "letter"]
            overlays[key] = TextOverlay(text=" ", position=position, visible=False,
                                        color=COLOR, font_size=size)


def show_orientation(viewer) -> None:
    """Keep the letters and slice position on ``viewer``'s canvas up to date.

    Idempotent; holds the viewer weakly (called with the radiological camera).
    """
    for key, ref in list(_FOLLOWED.items()):
        if ref() is None:
            del _FOLLOWED[key]
    _add_overlays(viewer)
    if id(viewer) in _FOLLOWED and _FOLLOWED[id(viewer)]() is viewer:
        update(viewer)
        return
    ref = weakref.ref(viewer)

    def on_change(_event=None):
        v = ref()
        if v is not None:
            update(v)

    for emitter in (viewer.dims.events.order, viewer.dims.events.ndisplay,
                    viewer.dims.events.axis_labels, viewer.dims.events.point,
                    viewer.camera.events.orientation, viewer.camera.events.orientation2d,
                    viewer.layers.events.inserted,
                    viewer.layers.events.removed):
        emitter.connect(on_change)
    _FOLLOWED[id(viewer)] = ref
    update(viewer)

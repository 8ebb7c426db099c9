"""A proposed update from the correction loop, shown before anyone accepts it.

A temporary Labels layer over the labels being corrected holds only the voxels that would
change, valued by the class each would get (hovering names it) and voxels that would go
back to background by one extra value. It is drawn in one colour no class has (magenta;
white for background), since a change shown in its new class's colour disappears into
the labels beneath. Nothing in the user's labels changes until they press Accept.
"""

from __future__ import annotations

import numpy as np

from . import layers as L

TO_BACKGROUND = "would become background"
_TO_BACKGROUND_COLOR = (1.0, 1.0, 1.0, 1.0)
CHANGE_COLOR = (1.0, 0.0, 1.0, 1.0)  # magenta: in no class palette


def change_labels(labels: np.ndarray, axis: int, slices: np.ndarray, proposed: np.ndarray,
                  n_labels: int) -> np.ndarray:
    """Full-size array: the proposed class where a voxel would change, else 0.

    ``proposed`` holds the new labels of ``slices`` (along ``axis``) stacked on axis 0;
    voxels that would become background get the value ``n_labels``.
    """
    current = np.moveaxis(np.asarray(labels), axis, 0)[slices]
    changed = proposed != current
    value = np.where(proposed == 0, n_labels, proposed)
    dtype = np.uint8 if n_labels < 255 else np.uint16
    out = np.zeros(np.shape(labels), dtype=dtype)
    np.moveaxis(out, axis, 0)[slices] = np.where(changed, value, 0)
    return out


def preview_name(layer) -> str:
    return f"{layer.name} proposed changes"


def show_preview(viewer, layer, session, update):
    """Add (or refresh) the preview layer above ``layer``; returns it."""
    from napari.utils.colormaps import DirectLabelColormap

    names = list(session.model.task.class_names)
    data = change_labels(session.labels, session.axis, update.slices, update.labels,
                         len(names))
    colors = dict(L.class_colormap(len(names)).color_dict)
    colors.update({v: np.array(CHANGE_COLOR) for v in range(1, len(names))})
    colors[len(names)] = np.array(_TO_BACKGROUND_COLOR)
    kwargs = {**L.geometry_kwargs(layer), "name": preview_name(layer), "opacity": 0.85,
              "features": L.class_features([*names, TO_BACKGROUND]),
              "colormap": DirectLabelColormap(color_dict=colors)}
    remove_preview(viewer, layer)
    preview = viewer.add_labels(data, **kwargs)
    preview.editable = False
    viewer.layers.selection.active = layer  # painting stays on the user's labels
    return preview


def remove_preview(viewer, layer) -> None:
    if layer is not None and preview_name(layer) in viewer.layers:
        viewer.layers.remove(preview_name(layer))

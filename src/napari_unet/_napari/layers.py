"""Volume <-> napari layer conversion, so every result lands exactly on its input.

Results copy the input layer's scale, translate and affine (a frequent complaint about
other plugins is output layers that lose them), are named ``<input> <model>``, and keep
the source Volume in their metadata so they can be saved back in the scan's geometry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import NapariUnetError
from ..io.volume import Volume

if TYPE_CHECKING:
    from ..model.checkpoint import Model

VOLUME_KEY = "napari_unet_volume"
RESULT_KEY = "napari_unet_result"



def layer_volume(layer) -> Volume | None:
    """The source Volume a reader or this plugin stored on the layer, if any."""
    vol = (getattr(layer, "metadata", None) or {}).get(VOLUME_KEY)
    return vol if isinstance(vol, Volume) else None


def volume_from_layer(layer) -> Volume:
    """The layer's data as a Volume in its physical geometry.

    The source Volume stored by the reader gives the exact geometry (and what a writer needs
    for DICOM); otherwise the geometry comes from the layer's scale/translate/affine, with
    world axes read from its anatomical axis labels, or as (S, P, L) without them.
    """
    problem = shape_problem(layer)
    if problem is not None:
        raise NapariUnetError(problem)
    data = np.asarray(layer.data)
    spatial = data.shape[:3]
    src = layer_volume(layer)
    if src is not None and tuple(src.spatial_shape) == tuple(spatial):
        return Volume(data, src.spacing, src.origin, src.direction, src.modality,
                      src.source, layer.name)
    from ..io.geometry import axes_from_labels, geometry_from_layer

    spacing, origin, direction = geometry_from_layer(
        data_to_world(layer), axes_from_labels(getattr(layer, "axis_labels", None)))
    return Volume(data, spacing, origin, direction, name=layer.name)


def shape_problem(layer) -> str | None:
    """Why the layer is not a 3D scan (None when it is), read from its shape alone."""
    shape = tuple(layer.data.shape)
    if len(shape) != (4 if getattr(layer, "rgb", False) else 3):
        return (f"layer {layer.name!r} has shape {shape}: a 3D scan (slices, rows, "
                "columns) is needed")
    return None


def data_to_world(layer) -> np.ndarray:
    """4x4 matrix from data indices to napari world coordinates (last 3 dims)."""
    try:
        m = np.asarray(layer._data_to_world.affine_matrix, float)
    except AttributeError:  # pragma: no cover - older napari
        m = np.asarray(layer.affine.affine_matrix, float)
        m[:-1, :-1] = m[:-1, :-1] * np.asarray(layer.scale)[None, :]
        m[:-1, -1] = m[:-1, -1] + m[:-1, :-1] @ (np.asarray(layer.translate)
                                                 / np.asarray(layer.scale))
    return m[-4:, -4:]


def geometry_kwargs(layer) -> dict[str, Any]:
    """The input layer's placement in the world, for results that must overlay it
    (scale, translate, affine, and its anatomical axis labels and units)."""
    return {"scale": tuple(layer.scale), "translate": tuple(layer.translate),
            "affine": np.asarray(layer.affine.affine_matrix).copy(),
            "axis_labels": tuple(layer.axis_labels), "units": tuple(layer.units)}


def volume_layer_kwargs(volume: Volume) -> dict[str, Any]:
    """Layer kwargs placing a Volume in LPS millimetres, shown radiologically, with
    anatomical axis labels and mm units (``io.geometry.layer_geometry``)."""
    from ..io.geometry import layer_geometry

    kw = layer_geometry(volume.spacing, volume.origin, volume.direction)
    return {**kw, "name": volume.name, "metadata": {VOLUME_KEY: volume}}


def layer_kind(layer) -> str:
    """"image", "labels", ...: the layer type as napari's ``add_<kind>`` names it
    (``__class__``, not ``type()``: napari hands plugins proxies of its layers)."""
    return layer.__class__.__name__.lower()


def looks_like_labels(layer) -> bool:
    """Whether ``layer`` holds a label map (a Labels layer, or integer data with a few
    values, judged on a bounded sample): denoising it or segmenting it again is most
    likely a mistake worth a warning."""
    from ..io.labels import few_label_values

    if layer_kind(layer) == "labels":
        return True
    if getattr(layer, "rgb", False) or getattr(layer, "multiscale", False):
        return False
    return few_label_values(layer.data)


def class_features(names) -> dict[str, list]:
    """Labels ``features``: one row per label value, so napari shows the class name."""
    return {"index": list(range(len(names))), "class": list(names)}


def class_colormap(n_labels: int, class_codes=None):
    """A DirectLabelColormap: background transparent, one fixed colour per class: the
    colour its model file (``class_codes``) or DICOM SEG gives it, else the palette's
    (``io.class_codes``), as DICOM SEG outputs recommend them to other viewers."""
    from napari.utils.colormaps import DirectLabelColormap

    from ..io.class_codes import class_codes_for_labels, class_color

    codes = class_codes_for_labels(n_labels, class_codes)
    colors = {0: np.zeros(4), None: np.array([0.5, 0.5, 0.5, 1.0])}
    for v in range(1, n_labels):
        colors[v] = np.array([*(c / 255 for c in class_color(v, codes[v])), 1.0])
    return DirectLabelColormap(color_dict=colors)


def result_name(layer_name: str, model: Model) -> str:
    return f"{layer_name} {model.name}"


def prediction_layers(prediction, layer, model: Model, volume: Volume | None = None,
                      labels: np.ndarray | None = None) -> list:
    """Layer data tuples for a Prediction, aligned with ``layer`` and named after it;
    ``labels`` (labels saved earlier) stand in the labels layer for the model's own."""
    from ..inference.quality import prediction_slice_scores

    name = result_name(layer.name, model)
    geo = geometry_kwargs(layer)
    meta = {VOLUME_KEY: volume if volume is not None else layer_volume(layer)}
    out = []
    if getattr(prediction, "labels", None) is not None:
        names = list(model.task.class_names)
        result = {"model": model, "output": np.array(prediction.labels, copy=True),
                  "axis": int(prediction.axis),
                  "slice_uncertainty": getattr(prediction, "slice_uncertainty", None),
                  "slice_scores": prediction_slice_scores(prediction),
                  "settings": prediction.settings,
                  "seconds": float(getattr(prediction, "seconds", 0.0)) or None}
        shown = prediction.labels if labels is None else labels
        out.append((shown, {**geo, "name": name, "features": class_features(names),
                            "colormap": class_colormap(len(names), model.meta.class_codes),
                            "metadata": {**meta, RESULT_KEY: result}}, "labels"))
    if getattr(prediction, "image", None) is not None:
        out.append((prediction.image, {**geo, "name": name, "metadata": meta,
                                       "colormap": "gray"}, "image"))
    probs = getattr(prediction, "probabilities", None)
    if probs is not None:  # (Z, Y, X, C): one layer per class, never read as RGB
        for c, cls in enumerate(model.task.class_names[-probs.shape[-1]:]):
            out.append((probs[..., c], {**geo, "name": f"{name} p({cls})", "rgb": False,
                                        "colormap": "magma", "contrast_limits": (0.0, 1.0),
                                        "visible": False, "metadata": meta}, "image"))
    unc = getattr(prediction, "uncertainty", None)
    if unc is not None:
        out.append((unc, {**geo, "name": f"{name} uncertainty", "colormap": "inferno",
                          "visible": False, "metadata": meta}, "image"))
    return out


def has_edits(layer) -> bool:
    """Whether a result's labels differ from what the model wrote (painted, or corrections
    accepted): such a layer is never replaced by a re-run."""
    result = layer.metadata.get(RESULT_KEY)
    if result is None:
        return False
    return not np.array_equal(np.asarray(layer.data), result["output"])


def add_or_update(viewer, tuples: list) -> list:
    """Add layer data tuples, replacing the data of same-named layers (re-runs), except
    labels someone edited: the new result then gets a layer of its own."""
    layers = []
    for data, kw, kind in tuples:
        name = kw.get("name")
        if (name in viewer.layers and layer_kind(viewer.layers[name]) == kind
                and not has_edits(viewer.layers[name])):
            old = viewer.layers[name]
            old.data = data
            old.metadata = dict(kw.get("metadata", {}))  # drops a stale correction session
            layers.append(old)
            continue
        layers.append(getattr(viewer, f"add_{kind}")(data, **kw))
    return layers

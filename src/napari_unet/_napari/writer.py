"""npe2 writers: Labels and Image layers to NIfTI in the geometry of the scan they came from.

When the layer's ``metadata["napari_unet_volume"]`` holds the source Volume (set by the
reader, sample data and this plugin's result layers) and the shapes agree, the output
takes the source geometry exactly (NIfTI input: its header and affine; DICOM input: the
series geometry), whatever the display did. Otherwise the geometry comes from the layer's
scale, translate, rotate, shear and affine, with napari's world axes read from its
anatomical axis labels (LPS millimetres), or as (S, P, L) millimetres without them.

Labels keep their class names (the layer's ``features``, as this plugin's reader, sample
data and widgets set them) in the file, so that it reopens as labels (``io.labels``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..io.labels import class_names_for
from ..io.volume import Volume
from ..io.write import VolumeWriteError
from .layers import VOLUME_KEY


def write_labels(path: str, data: Any, meta: dict) -> list[str]:
    """Save a Labels layer (uint8, or uint16 above 255 labels) with its class names."""
    data = np.asarray(data)
    n_labels = int(data.max(initial=0)) + 1
    return _write(path, data, meta, dtype=None,
                  class_names=class_names_for(n_labels, layer_class_names(meta)),
                  interpolation="nearest")


def layer_class_names(meta: dict) -> list[str] | None:
    """Class names from a Labels layer's ``features`` (an ``index`` and a ``class``
    column, one row per label value), or None."""
    features = meta.get("features")
    try:
        index, names = list(features["index"]), list(features["class"])
    except (KeyError, TypeError, IndexError):
        return None
    out: list[str] = []
    for value, name in zip(index, names, strict=False):
        if isinstance(value, (int, np.integer)) and 0 <= value < 65536:
            out += [""] * (int(value) + 1 - len(out))
            out[int(value)] = str(name)
    return out or None


def write_image(path: str, data: Any, meta: dict) -> list[str]:
    """Save an Image layer (float32; integer images keep their dtype)."""
    data = np.asarray(data[0] if isinstance(data, list) else data)  # multiscale: full res
    dtype = data.dtype if np.issubdtype(data.dtype, np.integer) else np.float32
    return _write(path, data, meta, dtype=dtype, interpolation="linear")


def _write(path: str, data: Any, meta: dict, dtype, class_names=None,
           interpolation: str | None = None) -> list[str]:
    """``io.write_volume``; where the scan's axes are sheared (gantry tilt) the file is
    resampled onto an orthogonal grid: labels nearest-neighbour, images linear."""
    from ..io import write_volume

    data = np.asarray(data)
    written = write_volume(data, with_default_extension(path), like=volume_for(data, meta),
                           dtype=dtype, class_names=class_names, interpolation=interpolation)
    return [str(written)]


def with_default_extension(path: str) -> str:
    """A name typed without an extension gets ``.nii.gz``, as napari's own writers add
    theirs (a save dialog may hand the name over bare); any other extension is left for
    ``write_volume`` to refuse by name."""
    return path if Path(path).suffix else path + ".nii.gz"


def volume_for(data: np.ndarray, meta: dict) -> Volume:
    """The Volume whose geometry ``data`` is written in (see the module docstring)."""
    source = (meta.get("metadata") or {}).get(VOLUME_KEY)
    if isinstance(source, dict):
        source = Volume.from_info(source, data)
    if isinstance(source, Volume) and tuple(source.spatial_shape) == tuple(data.shape[:3]):
        return Volume(data, source.spacing, source.origin, source.direction, source.modality,
                      source.source, meta.get("name") or source.name)
    if data.ndim != 3:
        raise VolumeWriteError(
            f"layer {meta.get('name')!r} has shape {data.shape}: NIfTI output needs a 3D "
            "layer (slices, rows, columns)."
        )
    from ..io.geometry import axes_from_labels, geometry_from_layer

    spacing, origin, direction = geometry_from_layer(
        _data_to_world(meta), axes_from_labels(meta.get("axis_labels")))
    return Volume(data, spacing, origin, direction, name=meta.get("name") or "layer")


def _data_to_world(meta: dict) -> np.ndarray:
    """4x4 data-to-world matrix of a 3D layer from its saved state."""
    from napari.utils.transforms import CompositeAffine

    composite = CompositeAffine(
        scale=meta.get("scale", (1, 1, 1)), translate=meta.get("translate", (0, 0, 0)),
        rotate=meta.get("rotate"), shear=meta.get("shear"), ndim=3,
    ).affine_matrix
    affine = np.asarray(meta.get("affine", np.eye(4)), float)
    if affine.shape != (4, 4):  # napari may store an Affine object
        affine = np.asarray(getattr(meta["affine"], "affine_matrix", np.eye(4)), float)
    return affine @ composite

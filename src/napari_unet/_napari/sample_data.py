"""npe2 sample data: the MNI ICBM152 2009 T1 brain, alone or with its tissue labels.

Read through the plugin's own reader path (``read_volume``) so the layers carry physical
scale/translate and their source Volume, exactly like a scan opened from disk.
"""

from __future__ import annotations

from ..sample_files import sample_path
from .layers import class_colormap, class_features, volume_layer_kwargs

TISSUE_CLASSES = ("background/CSF", "grey matter", "white matter")


def _layer(key: str, name: str, kind: str, **extra) -> tuple:
    from ..io import read_volume

    volume = read_volume(sample_path(key))
    volume.name = name
    return volume.array, {**volume_layer_kwargs(volume), **extra}, kind


def brain_t1() -> list[tuple]:
    """The T1 brain as an Image layer in millimetres."""
    return [_layer("brain_t1", "brain T1", "image", colormap="gray")]


def brain_t1_with_labels() -> list[tuple]:
    """The T1 brain plus its tissue labels (background/CSF, grey and white matter)."""
    labels = _layer("brain_tissue_labels", "brain tissue labels", "labels",
                    features=class_features(TISSUE_CLASSES),
                    colormap=class_colormap(len(TISSUE_CLASSES)), opacity=0.5)
    return [*brain_t1(), labels]

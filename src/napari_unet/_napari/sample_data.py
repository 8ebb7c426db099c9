"""npe2 sample data: the MNI ICBM152 2009 T1 brain, alone or with its tissue labels.

Built exactly as the reader builds layers from files (``reader.image_layer`` and
``reader.labels_layer``): LPS millimetres shown radiologically, anatomical axis labels,
the source Volume kept for writing back, class names on the labels.
"""

from __future__ import annotations

from ..sample_files import sample_path
from .reader import image_layer, labels_layer

TISSUE_CLASSES = ("background/CSF", "grey matter", "white matter")


def _volume(key: str, name: str):
    from ..io import read_volume

    volume = read_volume(sample_path(key))
    volume.name = name
    return volume


def _shown(layers: list[tuple]) -> list[tuple]:
    from .radiological import follow_current_viewer

    follow_current_viewer()
    return layers


def brain_t1() -> list[tuple]:
    """The T1 brain as an Image layer."""
    data, kwargs, kind = image_layer(_volume("brain_t1", "brain T1"))
    return _shown([(data, {**kwargs, "colormap": "gray"}, kind)])


def brain_t1_with_labels() -> list[tuple]:
    """The T1 brain plus its tissue labels (background/CSF, grey and white matter)."""
    from ..io.labels import LabelMap, as_label_array

    volume = _volume("brain_tissue_labels", "brain tissue labels")
    volume.array = as_label_array(volume.array)
    return _shown([*brain_t1(), labels_layer(LabelMap(volume, TISSUE_CLASSES))])

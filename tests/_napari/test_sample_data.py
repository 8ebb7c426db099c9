"""Sample data through File > Open Sample (the menu's QActions) in a real viewer."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet._napari.layers import VOLUME_KEY, volume_from_layer
from napari_unet.io import read_volume
from napari_unet.io.geometry import layer_geometry
from napari_unet.sample_files import sample_path
from support.napari_doors import menu_action

pytestmark = pytest.mark.gui


def test_brain_sample_opens_in_millimetres(make_napari_viewer):
    viewer = make_napari_viewer()
    menu_action(viewer, "napari-unet.brain_t1").trigger()
    (layer,) = viewer.layers
    source = read_volume(sample_path("brain_t1"))
    assert layer._type_string == "image" and layer.data.shape == source.spatial_shape
    expected = layer_geometry(source.spacing, source.origin, source.direction)
    np.testing.assert_allclose(layer.scale, expected["scale"])
    np.testing.assert_allclose(layer.translate, expected["translate"])
    assert layer.axis_labels == ("I→S", "A→P", "R→L") == viewer.dims.axis_labels
    assert [str(u) for u in layer.units] == ["millimeter"] * 3
    assert layer.metadata[VOLUME_KEY].source == source.source
    again = volume_from_layer(layer)
    np.testing.assert_allclose(again.affine, source.affine)


def test_brain_sample_with_labels_names_the_tissue_classes(make_napari_viewer):
    viewer = make_napari_viewer()
    menu_action(viewer, "napari-unet.brain_t1_labels").trigger()
    image, labels = viewer.layers
    assert labels._type_string == "labels" and labels.data.shape == image.data.shape
    np.testing.assert_allclose(labels.translate, image.translate)
    np.testing.assert_allclose(labels.scale, image.scale)
    assert list(labels.features["class"]) == ["background/CSF", "grey matter",
                                              "white matter"]
    assert set(np.unique(labels.data[::4, ::4, ::4])) == {0, 1, 2}

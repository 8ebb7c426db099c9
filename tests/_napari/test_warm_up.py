"""The widgets start the first Run's one-off costs in the background (inference/warmup.py)."""

from __future__ import annotations

import threading

import pytest

from napari_unet.inference import warmup
from support import widget_helpers as W
from support.widget_helpers import home_in_tmp, one_torch_thread  # noqa: F401 (autouse)

pytestmark = pytest.mark.gui


def warm_ups() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "napari-unet warm-up"]


def test_choosing_a_model_warms_it_up_once_in_the_background(make_napari_viewer, tmp_path,
                                                             monkeypatch):
    monkeypatch.setattr(warmup, "_DONE", set())
    viewer = make_napari_viewer()
    W.add_scan(viewer)
    widget = W.open_widget(viewer, W.INFERENCE)
    path = W.tiny_model_file(tmp_path)
    W.use_model_file(widget, path)
    # the model with the scan in the image field: its shapes are warmed too
    assert any(key == (str(path), id(widget.image.value)) for key, *_ in warmup._DONE)
    for t in warm_ups():
        t.join(60)
    W.use_model_file(widget, path)  # the same model again: nothing new to warm
    assert not warm_ups()

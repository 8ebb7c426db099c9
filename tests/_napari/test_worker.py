"""A job belongs to its widget and its layer: the same rule for the three widgets.

In a real viewer, a real job (a tiny model on a volume big enough to take a while) is
started with the widget's button; closing the widget's dock, or deleting the layer the job
reads, must cancel it within a second, and nothing may be added to the viewer after.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from napari_unet._napari.worker import JobState
from support import widget_helpers as W
from support.widget_helpers import home_in_tmp, one_torch_thread  # noqa: F401 (autouse)

pytestmark = [pytest.mark.gui, pytest.mark.slow]
CANCEL_S = 1.0
QUIET_MS = 1500  # how long the viewer is watched for late additions


def start_inference(viewer, qtbot, tmp_path):
    scan = W.add_scan(viewer, shape=(400, 48, 48))
    widget = W.open_widget(viewer, W.INFERENCE)
    W.use_model_file(widget, W.tiny_model_file(tmp_path))
    widget.image.value, widget.device.value, widget.batch.value = scan, "cpu", 1
    W.click(qtbot, widget.run_button)
    qtbot.waitUntil(lambda: widget.runner.panel.bar.value >= 2, timeout=120000)
    return widget, scan


def start_learning(viewer, qtbot, tmp_path):
    W.add_scan(viewer, shape=(24, 40, 48))
    inference = W.open_widget(viewer, W.INFERENCE)
    W.use_model_file(inference, W.tiny_model_file(tmp_path))
    inference.device.value = "cpu"
    W.click(qtbot, inference.run_button)
    assert W.wait_until_idle(qtbot, inference, 120000) is JobState.DONE
    labels = viewer.layers["scan tiny"]
    widget = W.open_widget(viewer, W.CORRECTION)
    widget.labels_layer.value, widget.budget.value = labels, 60
    viewer.layers.selection.active = labels
    labels.brush_size = 9
    viewer.dims.set_current_step(0, 2)
    labels.paint((2, 20, 20), (int(labels.data[2, 20, 20]) + 1) % 3)
    qtbot.waitUntil(lambda: widget.learn_button.enabled, timeout=3000)
    W.click(qtbot, widget.learn_button)
    qtbot.waitUntil(lambda: widget.runner.panel.bar.value >= 2, timeout=120000)
    return widget, labels


def start_training(viewer, qtbot, tmp_path):
    image, labels = W.phantom((24, 40, 48))
    scan = viewer.add_image(image, name="scan")
    viewer.add_labels(labels, name="truth")
    widget = W.open_widget(viewer, W.TRAINING)
    widget.base.value, widget.budget.value = 4, 60
    W.click(qtbot, widget.train_button)
    qtbot.waitUntil(lambda: widget.runner.panel.bar.value >= 2, timeout=120000)
    return widget, scan


STARTS = {"inference": start_inference, "correction": start_learning,
          "training": start_training}


@pytest.mark.parametrize("how", ["close the widget", "delete its input layer"])
@pytest.mark.parametrize("which", list(STARTS))
def test_a_job_stops_with_its_widget_or_its_layer_and_adds_nothing(
        make_napari_viewer, qtbot, tmp_path, which, how):
    viewer = make_napari_viewer(show=True)
    widget, layer = STARTS[which](viewer, qtbot, tmp_path)
    assert widget.runner.running and layer in widget.runner.inputs
    states = []
    widget.runner.state_changed.connect(states.append)
    done = []  # when the close or the deletion happened (napari's own work is not ours)
    widget.closing.connect(lambda: done.append(time.monotonic()))
    viewer.layers.events.removed.connect(lambda _e: done.append(time.monotonic()))
    if how == "close the widget":
        W.close_dock(qtbot, viewer, widget)
        assert widget.parent() is None  # napari took it out of its dock
    else:
        viewer.layers.remove(layer)
    names = [ly.name for ly in viewer.layers]
    qtbot.waitUntil(lambda: widget.runner.state is JobState.CANCELLED, timeout=3000)
    assert time.monotonic() - done[0] < CANCEL_S, time.monotonic() - done[0]
    qtbot.wait(QUIET_MS)  # anything the job would still add would come now
    assert [ly.name for ly in viewer.layers] == names
    assert states == [JobState.CANCELLED] and widget.runner.worker is None
    reason = "the widget was closed" if how.startswith("close") else f"{layer.name!r} was deleted"
    assert widget.runner.cancel_reason == reason
    if how.startswith("delete"):
        assert reason in widget.status.value  # said where the user is looking
    if which == "correction":
        assert widget.proposal is None
    if which == "training":
        assert widget.result is None or widget.result.model.path is None  # nothing saved


def test_deleting_another_layer_or_closing_another_widget_does_not_stop_a_job(
        make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer(show=True)
    training = W.open_widget(viewer, W.TRAINING)
    widget, scan = start_inference(viewer, qtbot, tmp_path)
    other = viewer.add_points(np.array([[10.0, 20.0, 20.0]]), name="other")
    viewer.layers.remove(other)
    W.close_dock(qtbot, viewer, training)
    assert W.wait_until_idle(qtbot, widget, 120000) is JobState.DONE
    assert "scan tiny" in viewer.layers


def test_closing_the_window_stops_the_job(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer(show=True)
    widget, _ = start_inference(viewer, qtbot, tmp_path)
    runner = widget.runner
    job = runner.worker
    viewer.close()
    qtbot.waitUntil(lambda: runner.stop_asked, timeout=1000)  # as the window closes
    # the window's close, napari emptying the layer list or the widget going: any stops it
    assert runner.cancel_reason in ("the widget was closed", "'scan' was deleted")
    # its thread ends soon after (the window, and what would show its end, are gone)
    qtbot.waitUntil(lambda: not job.is_running, timeout=3000)

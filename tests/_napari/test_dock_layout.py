"""A window that fits: all three widgets docked on a 1280 x 800 window leave the canvas 60%."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet._napari.worker import JobState
from support import widget_helpers as W
from support.widget_helpers import home_in_tmp, one_torch_thread  # noqa: F401 (autouse)

pytestmark = pytest.mark.gui
LONG = "sub-0042_ses-baseline_acq-mprage_run-01_T1w_defaced_bias-corrected_registered"


def settle(qtbot, ms: int = 200) -> None:
    qtbot.wait(ms)


def test_three_docks_leave_the_canvas_60_percent_after_a_run_with_probabilities(
        make_napari_viewer, qtbot, tmp_path):
    from skimage.io import imread

    viewer = make_napari_viewer(show=True)
    window = viewer.window._qt_window
    window.resize(1280, 800)
    W.add_scan(viewer, name=LONG)
    widgets = [W.open_widget(viewer, name) for name in (W.INFERENCE, W.CORRECTION, W.TRAINING)]
    inference = widgets[0]
    W.use_model_file(inference, W.tiny_model_file(tmp_path))
    inference.device.value, inference.probs.value = "cpu", True
    W.click(qtbot, inference.run_button)
    assert W.wait_until_idle(qtbot, inference) is JobState.DONE
    settle(qtbot)
    status = inference.status
    assert len(status.value) > 200  # five long layer names: it must wrap, not widen
    canvas = viewer.window._qt_viewer.canvas.native
    assert window.width() == 1280 and window.height() == 800
    assert canvas.width() >= 0.6 * window.width(), (canvas.width(), window.width())
    for widget in widgets:  # each fits its dock: wraps and scrolls instead of growing
        assert widget.width() <= 0.2 * window.width()
        assert widget.form.native.width() <= widget.viewport().width()
    assert status.native.width() <= inference.viewport().width()
    assert status.native.height() > 2 * status.native.fontMetrics().height()  # wrapped
    # the picture a user sees: scan, labels and the three widgets
    path = tmp_path / "window.png"
    viewer.screenshot(str(path), canvas_only=False, flash=False)
    shot = imread(path)
    assert shot.shape[1] >= 1280 and shot.shape[0] >= 800
    assert shot[..., :3].std() > 10 and len(np.unique(shot[..., 0])) > 20

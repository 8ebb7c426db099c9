"""Make the README screenshot: the sample brain segmented, the correction loop proposing.

A 1280 x 800 window, everything through the doors a user takes: the sample from *File >
Open Sample* (``viewer.open_sample``), the three widgets from *Plugins > CT/MR UNet -
napari-unet* (the plugin manager: they dock as tabs), Run clicked, two slices corrected
(set to the sample's reference labels, as the paint tools would) and Learn clicked; the
picture shows the correction tab with its proposal, Accept and Discard. Run on a
display, or::

    xvfb-run -a -s "-screen 0 1600x1000x24" python scripts/make_screenshot.py
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def wait_for(runner, timeout: float = 600.0) -> None:
    """Let Qt run until the widget's job has ended."""
    from qtpy.QtWidgets import QApplication

    end = time.monotonic() + timeout
    while (runner.running or runner.worker is not None) and time.monotonic() < end:
        QApplication.processEvents()
        time.sleep(0.02)


def settle(seconds: float = 0.5) -> None:
    from qtpy.QtWidgets import QApplication

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        QApplication.processEvents()
        time.sleep(0.02)


def correct_slices(layer, truth, axis: int, slices) -> None:
    """What the paint tools do: these slices (along ``axis``) set to the reference."""
    import numpy as np

    data, ref = np.moveaxis(layer.data, axis, 0), np.moveaxis(truth, axis, 0)
    for i in slices:
        data[i] = ref[i]
    layer.events.data(value=layer.data)
    layer.refresh()


def brush_where_a_hand_would_be(viewer) -> None:
    """The paint brush's circle over the brain, not at the canvas corner where napari
    draws it before the mouse has moved (no mouse under Xvfb)."""
    canvas = viewer.window._qt_viewer.canvas.native
    brush = getattr(viewer.canvas.overlays, "_brush_circle", None)  # napari >= 0.5
    if brush is not None:
        brush.position = (int(canvas.width() * 0.36), int(canvas.height() * 0.42))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "docs" / "screenshot.png")
    parser.add_argument("--model", default="brain-tissue", help="bundled model name")
    parser.add_argument("--size", type=int, nargs=2, default=(1280, 800), metavar=("W", "H"))
    parser.add_argument("--learn", type=int, default=5, help="learning budget (s)")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "2")

    import napari

    from napari_unet.io import read_volume

    viewer = napari.Viewer(title="napari-unet")
    viewer.window._qt_window.resize(*args.size)
    (scan,) = viewer.open_sample("napari-unet", "brain_t1")
    _, inference = viewer.window.add_plugin_dock_widget("napari-unet", "UNet inference")
    viewer.window.add_plugin_dock_widget("napari-unet", "UNet training")  # a tab beside
    inference.dock().raise_()
    inference.picker.source.value = args.model
    inference.run_button.native.click()
    wait_for(inference.runner)
    if inference.runner.error is not None:
        raise SystemExit(f"inference failed: {inference.runner.error}")
    labels = inference.last_layers[0]
    labels.opacity = 0.4
    _, correction = viewer.window.add_plugin_dock_widget("napari-unet", "UNet correction loop")
    settle()
    correction.labels_layer.value = labels
    correction.budget.value = args.learn
    truth = read_volume(ROOT / "sample_data" / "brain_tissue_labels.nii.gz").array
    axis, n = correction.session.axis, correction.session.n_slices
    correct_slices(labels, truth, axis, [n // 2 - 20, n // 2 + 20])
    settle()
    correction.learn_button.native.click()
    wait_for(correction.runner)
    if correction.runner.error is not None:
        raise SystemExit(f"learning failed: {correction.runner.error}")
    correction.dock().raise_()
    viewer.layers.selection.active = labels
    labels.mode = "paint"
    viewer.dims.set_current_step(axis, n // 2 + 10)
    brush_where_a_hand_would_be(viewer)
    settle()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(args.output), canvas_only=False, flash=False)
    print(f"wrote {args.output} ({inference.status.value}; {correction.proposal_text.value})")
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Make the README screenshot: the sample brain segmented, with the widgets docked.

Everything goes through the doors a user takes: the sample from *File > Open Sample*
(``viewer.open_sample``), the widgets from *Plugins > CT/MR UNet - napari-unet* (the
plugin manager), the Run button clicked. Run on a display, or::

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


def share_height(viewer, docks, fractions) -> None:
    """What a user does by dragging the splitter between two stacked docks."""
    from qtpy.QtCore import Qt

    window = viewer.window._qt_window
    height = window.height()
    window.resizeDocks(docks, [int(f * height) for f in fractions], Qt.Orientation.Vertical)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "docs" / "screenshot.png")
    parser.add_argument("--model", default="brain-tissue", help="bundled model name")
    parser.add_argument("--size", type=int, nargs=2, default=(1600, 1000), metavar=("W", "H"))
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "2")

    import napari

    viewer = napari.Viewer(title="napari-unet")
    viewer.window._qt_window.resize(*args.size)
    (scan,) = viewer.open_sample("napari-unet", "brain_t1")
    _, inference = viewer.window.add_plugin_dock_widget("napari-unet", "UNet inference")
    inference.picker.source.value = args.model
    inference.run_button.native.click()
    wait_for(inference.runner)
    if inference.runner.error is not None:
        raise SystemExit(f"inference failed: {inference.runner.error}")
    labels = inference.last_layers[0]
    labels.opacity = 0.4
    dock, _ = viewer.window.add_plugin_dock_widget("napari-unet", "UNet correction loop")
    share_height(viewer, [inference.parent(), dock], [0.62, 0.38])
    viewer.layers.selection.active = labels
    labels.mode = "paint"
    viewer.dims.set_current_step(0, scan.data.shape[0] // 2 + 10)
    settle()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(args.output), canvas_only=False, flash=False)
    print(f"wrote {args.output} ({inference.status.value})")
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Make the README screenshot: the sample brain, its segmentation and the docked widgets.

Run on a display (or ``xvfb-run -a -s "-screen 0 1600x1000x24" python
scripts/make_screenshot.py``). Uses the bundled ``brain-tissue`` model when it is
installed; without it, the screenshot shows the widgets and the scan only.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "docs" / "screenshot.png")
    parser.add_argument("--model", default="brain-tissue", help="bundled model name or file")
    parser.add_argument("--size", type=int, nargs=2, default=(1500, 950), metavar=("W", "H"))
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "2")

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_unet._napari.correction_widget import CorrectionWidget
    from napari_unet._napari.inference_widget import InferenceWidget
    from napari_unet._napari.model_picker import FILE
    from napari_unet.model.checkpoint import bundled_models

    viewer = napari.Viewer(title="napari-unet")
    viewer.window.resize(*args.size)
    (scan,) = viewer.open_sample("napari-unet", "brain_t1")
    inference = InferenceWidget(viewer)
    viewer.window.add_dock_widget(inference, name="UNet inference", area="right")
    correction = CorrectionWidget(viewer)
    if args.model in bundled_models():
        inference.picker.source.value = args.model
    elif Path(args.model).is_file():
        inference.picker.source.value = FILE
        inference.picker.file.value = Path(args.model)
    else:
        print(f"model {args.model!r} not installed: screenshot without a segmentation")
        inference = None
    if inference is not None:
        inference.run_sync()
        if inference.last_layers:
            inference.last_layers[0].opacity = 0.45
    viewer.window.add_dock_widget(correction, name="UNet correction loop", area="right")
    correction.reset_choices()
    viewer.dims.set_current_step(0, scan.data.shape[0] // 2 + 10)
    viewer.layers.selection.active = scan
    for _ in range(20):
        QApplication.processEvents()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(args.output), canvas_only=False, flash=False)
    print(f"wrote {args.output}")
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

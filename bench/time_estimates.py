"""Honest time: the widgets' first time-left estimate against the time the job really took.

Run from the repository root on a display (see bench/README.md):

    xvfb-run -a -s "-screen 0 1600x1000x24" nice -n 5 python bench/time_estimates.py

In a real napari window (1280 x 800), on the sample brain (File > Open Sample), through
the widgets a user presses:

- **inference**, one plane and all three planes (the bundled ``brain-tissue``);
- **Learn** in the correction loop, ``--rounds`` rounds, three slices corrected to the
  reference labels each round (the learning budget ``--learn-budget``); the widget's
  plan ("learn about 3 s (at most 30 s) + about N s to re-predict") is compared with the
  whole wait too;
- **training** from the sample and its reference labels (``--train-budget``), twice.

For each job: the seconds from the click to the first estimate shown, that estimate, the
seconds the job really had left then, and the error (estimate / real - 1; the target is
within +-30 %). Everything else the progress text said is kept with its time. Writes
``bench/results/time_estimates.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
RESULTS = ROOT / "bench" / "results" / "time_estimates.json"
TARGET = 0.30
PLUGIN = "napari-unet"


def pump(seconds: float = 0.0) -> None:
    from qtpy.QtWidgets import QApplication

    end = time.monotonic() + seconds
    while True:
        QApplication.processEvents()
        if time.monotonic() >= end:
            return
        time.sleep(0.01)


def run_job(widget, button, timeout: float = 1800.0) -> dict:
    """Click ``button``, follow the widget's progress text until the job ends."""
    from napari_unet._napari.worker import JobState

    runner, panel = widget.runner, widget.runner.panel
    clicked = time.monotonic()
    button.native.click()
    texts, last = [], None
    while (runner.running or runner.worker is not None) and \
            time.monotonic() - clicked < timeout:
        pump(0.02)
        if panel.text.value != last:
            last = panel.text.value
            texts.append((round(time.monotonic() - clicked, 2), last))
    total = time.monotonic() - clicked
    if runner.state is not JobState.DONE:
        raise SystemExit(f"{runner.desc}: {runner.state.value} {runner.error}")
    out = {"seconds": round(total, 2), "texts": texts}
    if panel.first_estimate is not None:
        at, left = panel.first_estimate
        real = total - at
        out.update(first_estimate_at=round(at, 2), first_estimate_left=round(left, 2),
                   real_left=round(real, 2), error=round(left / real - 1, 3),
                   within_target=abs(left / real - 1) <= TARGET)
    return out


def correct_slices(layer, truth, axis: int, slices) -> None:
    """What a person does with the paint tools: these slices set to the reference."""
    import numpy as np

    data = np.moveaxis(layer.data, axis, 0)
    for i in slices:
        data[i] = np.moveaxis(truth, axis, 0)[i]
    layer.events.data(value=layer.data)
    layer.refresh()


def machine() -> dict:
    import torch

    from napari_unet.devices import cpu_name  # the CPU by its model name

    return {"cpu": cpu_name(), "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "load_start": os.getloadavg()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--learn-budget", type=int, default=30)
    parser.add_argument("--train-budget", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--cases", nargs="+", default=["inference", "learn", "training"])
    parser.add_argument("-o", "--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    import napari

    from napari_unet.io import read_volume

    info = machine()
    viewer = napari.Viewer(title="napari-unet time estimates")
    viewer.window._qt_window.resize(1280, 800)
    (scan,) = viewer.open_sample(PLUGIN, "brain_t1")
    truth = read_volume(ROOT / "sample_data" / "brain_tissue_labels.nii.gz").array
    _, inference = viewer.window.add_plugin_dock_widget(PLUGIN, "UNet inference")
    inference.picker.source.value = "brain-tissue"
    pump(5.0)  # a person looks at the settings before Run (model and scan warm up meanwhile)
    jobs: dict[str, dict] = {}
    cases = set(args.cases)
    if "inference" in cases:
        for planes in ("one", "all"):
            inference.planes.value = planes
            jobs[f"inference {planes}"] = run_job(inference, inference.run_button)
            print(f"inference {planes}: {jobs[f'inference {planes}']}", flush=True)
    if "learn" in cases:
        inference.planes.value = "auto"  # the model's default: all three planes
        if inference.last_layers == [] or "inference all" not in jobs:
            run_job(inference, inference.run_button)
        labels = inference.last_layers[0]
        _, correction = viewer.window.add_plugin_dock_widget(PLUGIN, "UNet correction loop")
        correction.labels_layer.value = labels
        correction.budget.value = args.learn_budget
        session = correction.session
        axis = session.axis
        n = session.n_slices
        for r in range(args.rounds):
            picks = [n // 4 + 7 * r, n // 2 + 7 * r, 3 * n // 4 - 7 * r]
            correct_slices(labels, truth, axis, picks)
            pump(0.3)
            plan = correction.plan.value
            job = run_job(correction, correction.learn_button)
            job["plan"] = plan
            job["round"] = r + 1
            jobs[f"learn round {r + 1}"] = job
            print(f"learn round {r + 1}: {job}", flush=True)
            if correction.proposal is not None:
                correction.discard_button.native.click()
            pump(0.3)
    if "training" in cases:
        [reference] = viewer.open(str(ROOT / "sample_data" / "brain_tissue_labels.nii.gz"),
                                  plugin=PLUGIN)
        _, training = viewer.window.add_plugin_dock_widget(PLUGIN, "UNet training")
        training.image.value, training.labels_layer.value = scan, reference
        training.budget.value = args.train_budget
        for r in range(2):
            plan = training.plan.value
            job = run_job(training, training.train_button)
            job["plan"], job["run"] = plan, r + 1
            jobs[f"training run {r + 1}"] = job
            print(f"training run {r + 1}: {job}", flush=True)
    info["load_end"] = os.getloadavg()
    summary = {name: {k: job.get(k) for k in ("seconds", "first_estimate_at",
                                              "first_estimate_left", "real_left", "error",
                                              "within_target", "plan")}
               for name, job in jobs.items()}
    out = {"machine": info, "target": f"first estimate within {TARGET:.0%} of the time left",
           "learn_budget_s": args.learn_budget, "train_budget_s": args.train_budget,
           "summary": summary, "jobs": jobs}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(out, indent=1))
    for name, row in summary.items():
        print(f"{name:22s} {row}")
    print(f"wrote {args.output}")
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Training from the command line on this machine: does a fixed time budget give a good model?

Run from the repository root, on an otherwise idle machine (``uptime``):

    python bench/cli_train.py                    # 180 s, writes bench/results/cli_train.json
    python bench/cli_train.py --budget 60 -o /tmp/cli_train.json

It runs the installed ``napari-unet train --task segment --time-budget SECONDS`` on the
sample T1 and its tissue labels with the bundled models' held-out block (axial slices
100..129, plus a guard of 4 slices either side) kept out of training, exactly as a user
would type it, then segments the sample with the trained model through
``napari_unet.predict`` and pools Dice per class over the held-out slices.
Target (issue 13): grey and white matter Dice >= 0.94 after 180 s on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

import robustness  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "cli_train.json"
HELD_OUT, GAP = (100, 130), 4
TARGET = 0.94


def command(budget: float, out: Path) -> list[str]:
    """The command line a user types (the installed entry point next to this Python)."""
    exe = Path(sys.executable).with_name("napari-unet")
    exe = str(exe) if exe.exists() else shutil.which("napari-unet") or "napari-unet"
    sample = ROOT / "sample_data"
    return [exe, "train", "--task", "segment",
            "--images", str(sample / "brain_t1.nii.gz"),
            "--labels", str(sample / "brain_tissue_labels.nii.gz"),
            "--class-names", "background/CSF", "grey matter", "white matter",
            "--val-block", str(HELD_OUT[0]), str(HELD_OUT[1]), "--val-gap", str(GAP),
            "--time-budget", str(budget), "-o", str(out / "model.safetensors"),
            "--history", str(out / "history.json"), "-q"]


def held_out_dice(model_path: Path) -> dict[str, float]:
    from napari_unet import load_model, predict

    t1, labels = robustness.load_sample()
    pred = predict(t1, load_model(model_path, device="cpu"))
    block = slice(*HELD_OUT)
    return robustness.dice(pred.labels[block], labels[block])


def main(argv: list[str] | None = None) -> int:
    from napari_unet.devices import cpu_name  # the CPU by its model name
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budget", type=float, default=180.0, help="seconds (default 180)")
    p.add_argument("-o", "--output", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        cmd = command(args.budget, Path(tmp))
        print("$", " ".join(cmd[1:]), flush=True)
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True)
        seconds = time.perf_counter() - t0
        history = json.loads((Path(tmp) / "history.json").read_text())
        dice = held_out_dice(Path(tmp) / "model.safetensors")
    met = all(dice[k] >= TARGET for k in ("grey_matter", "white_matter"))
    result = {"command": "napari-unet " + " ".join(Path(a).name if a.startswith("/") else a
                                                  for a in cmd[1:]),
              "budget_s": args.budget, "wall_s": round(seconds, 1),
              "held_out_dice": {k: round(v, 4) for k, v in dice.items()},
              "target": TARGET, "met": met,
              "training_metrics": history.get("metrics"),
              "machine": {"cpu": cpu_name(),
                          "cores": os.cpu_count(), "load_before": round(load, 2),
                          "load_after": round(os.getloadavg()[0], 2)}}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

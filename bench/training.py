"""Training benchmark: iterations per second of the public ``napari_unet.train`` API.

Run from the repository root (see bench/README.md):

    python bench/training.py                 # CPU: bench/results/training.json
    python bench/training.py --device cuda   # GPU: bench/results/training_cuda.json

For each configuration (base width / patch / batch; the issue's two sizes on CUDA, the
small one on the CPU) on a synthetic two-class volume:

- it/s: ``train`` for W iterations and for W + N iterations (same seed, validation only
  at the end of each run); N / (difference of the wall times), so start-up, data set-up
  and the final validation cancel out;
- the validation Dice after ``--dice-iterations`` iterations, at the default precision
  and, where ``TrainSettings`` has a ``precision`` field, in float32 as well.

Only ``napari_unet.train`` and ``TrainSettings`` are used: how training reaches its speed
is the trainer's business; this measures what a user gets.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from inference import RESULTS, machine, sync  # noqa: E402
from napari_unet.inference.engine import physical_cores  # noqa: E402
from napari_unet.training import TrainSettings, train  # noqa: E402

CONFIGS = {"b16-p128-bs8": (16, 128, 8), "b64-p256-bs16": (64, 256, 16)}
TARGETS_CUDA = {"b16-p128-bs8": 60.0, "b64-p256-bs16": 25.0}  # it/s, issue 12


def synthetic_scan(slices: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """An MR-like float32 volume with discs of two tissue classes, and its labels."""
    rng = np.random.default_rng(seed)
    yy, xx = np.ogrid[:size, :size]
    lab = np.zeros((slices, size, size), np.uint8)
    for z in range(slices):
        for c in (1, 2, 2, 1, 2):
            cy, cx = rng.uniform(0.15, 0.85, 2) * size
            r = rng.uniform(0.05, 0.15) * size
            lab[z][(yy - cy) ** 2 + (xx - cx) ** 2 < r**2] = c
    img = 100 + 300 * (lab == 1) + 600 * (lab == 2) + rng.normal(0, 60, lab.shape)
    return img.astype(np.float32), lab


def run(img, lab, settings: TrainSettings, device: torch.device):
    sync(device)
    start = time.perf_counter()
    res = train(img, lab, settings=settings)
    sync(device)
    return time.perf_counter() - start, res


def bench_config(name: str, args, device: torch.device) -> dict:
    base, patch, batch = CONFIGS[name]
    img, lab = synthetic_scan(args.slices, 2 * patch)
    common = dict(base=base, patch_size=(patch, patch), batch_size=batch, seed=0,
                  device=str(device), n_classes=3, val_every=10**9)
    run(img, lab, TrainSettings(iterations=2, **common), device)  # warm-up: kernels, autotune
    t_w, _ = run(img, lab, TrainSettings(iterations=args.warmup, **common), device)
    t_wn, _ = run(img, lab, TrainSettings(iterations=args.warmup + args.iterations, **common),
                  device)
    its = args.iterations / max(t_wn - t_w, 1e-9)
    res = {"base": base, "patch": patch, "batch": batch, "timed_iterations": args.iterations,
           "it_per_s": its, "flop_per_it": 3 * _fwd_flops(base, patch, batch),
           "tflops": 3 * _fwd_flops(base, patch, batch) * its / 1e12}
    res["dice"] = dice_runs(img, lab, common, args.dice_iterations, device)
    return res


def dice_runs(img, lab, common: dict, iterations: int, device) -> dict:
    if not iterations:
        return {}
    out = {}
    precisions = ["default"]
    if "precision" in {f.name for f in dataclasses.fields(TrainSettings)}:
        precisions.append("float32")
    for p in precisions:
        extra = {} if p == "default" else {"precision": p}
        t, res = run(img, lab, TrainSettings(iterations=iterations, **common, **extra), device)
        out[p] = {"val_dice": res.metrics.get("val_dice"), "seconds": t}
    return out


def _fwd_flops(base: int, patch: int, batch: int) -> float:
    from napari_unet.model.unet import UNet

    return UNet(1, 3, base).flops_per_pixel() * patch * patch * batch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--configs", nargs="+", choices=list(CONFIGS),
                   help="default: both on CUDA, b16-p128-bs8 on the CPU")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: physical cores)")
    p.add_argument("--warmup", type=int, help="W (default: 10 on CUDA, 3 on the CPU)")
    p.add_argument("--iterations", type=int, help="N (default: 100 on CUDA, 10 on the CPU)")
    p.add_argument("--dice-iterations", type=int,
                   help="iterations of the Dice runs (default: 300 on CUDA, 0 = none on CPU)")
    p.add_argument("--slices", type=int, default=12, help="slices of the synthetic volume")
    p.add_argument("-o", "--output", type=Path)
    args = p.parse_args()
    if args.threads:  # napari_unet takes its thread count from OMP_NUM_THREADS
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    torch.set_num_threads(args.threads or physical_cores())
    from napari_unet.devices import resolve_device

    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    args.warmup = args.warmup or (10 if cuda else 3)
    args.iterations = args.iterations or (100 if cuda else 10)
    if args.dice_iterations is None:
        args.dice_iterations = 300 if cuda else 0
    configs = args.configs or (list(CONFIGS) if cuda else ["b16-p128-bs8"])
    result = {"machine": machine(device), "configs": {}}
    out = args.output or RESULTS / ("training.json" if not cuda else "training_cuda.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    for name in configs:  # the JSON is rewritten after each: a killed run keeps the rest
        print(f"training {name} on {device} ...", flush=True)
        r = result["configs"][name] = bench_config(name, args, device)
        print(f"  {r['it_per_s']:.2f} it/s ({r['tflops']:.2f} TFLOP/s), dice {r['dice']}")
        result["machine"]["load_average_at_end"] = list(os.getloadavg())
        if cuda:
            result["targets"] = {f"{n}: >= {TARGETS_CUDA[n]:g} it/s":
                                 result["configs"][n]["it_per_s"] >= TARGETS_CUDA[n]
                                 for n in result["configs"]}
        out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

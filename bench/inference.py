"""Inference benchmark: napari_unet.predict vs a naive MONAI loop vs the machine's matmul rate.

Run from the repository root (see bench/README.md):

    python bench/inference.py            # writes bench/results/inference.json

In one process, on sample_data/brain_t1.nii.gz with one fixed model:
  (a) ``napari_unet.predict`` (CPU, or CUDA with --device cuda);
  (b) a naive loop calling ``monai.inferers.sliding_window_inference`` on one slice at a
      time, batch size 1, same ROI and overlap, Gaussian blending, plain eval-mode net;
  (c) float32 ``torch.mm`` on 2048 x 2048 matrices with the same thread count.
Then, in a subprocess, the peak RSS of predicting a synthetic 512 x 512 x 400 int16 CT
volume with a ``window``-normalisation model (target: under 2 GB).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from napari_unet import load_model, predict, read_volume  # noqa: E402
from napari_unet.inference.engine import physical_cores  # noqa: E402
from napari_unet.model.checkpoint import Model, bundled_models  # noqa: E402
from napari_unet.model.normalize import Normalization  # noqa: E402
from napari_unet.model.tasks import make_task  # noqa: E402

SAMPLE = ROOT / "sample_data" / "brain_t1.nii.gz"
RESULTS = ROOT / "bench" / "results" / "inference.json"
CT_SHAPE = (400, 512, 512)
RSS_LIMIT_MB = 2048


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def fixed_model() -> tuple[Model, str]:
    if "brain-tissue" in bundled_models():
        return load_model("brain-tissue", device="cpu"), "bundled brain-tissue"
    torch.manual_seed(0)
    model = Model.new(make_task("segment", n_classes=3), base=16, name="bench-seed0")
    return model.to("cpu"), "Model.new(segment, 3 classes, base=16), torch.manual_seed(0)"


def matmul_gflops(n: int = 2048, seconds: float = 3.0, dtype=torch.float32) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    k, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.mm(a, b)
        k += 1
    return 2 * n**3 * k / (time.perf_counter() - start) / 1e9


def naive_loop(volume, model, roi, overlap: float) -> tuple[float, np.ndarray]:
    """What a user would write with MONAI: one slice at a time, batch size 1."""
    from monai.inferers import sliding_window_inference

    start = time.perf_counter()
    fitted = model.meta.normalization.fit(volume.array)
    task, net = model.task, model.net.eval()
    labels = np.zeros(volume.array.shape[:3], task.label_dtype)
    with torch.no_grad():
        for i in range(volume.array.shape[0]):
            x = torch.as_tensor(fitted.forward(volume.array[i][None, None])).float()
            logits = sliding_window_inference(x, roi, 1, net, overlap=overlap, mode="gaussian")
            labels[i] = task.decide(task.activate(torch.as_tensor(logits)))[0].numpy()
    return time.perf_counter() - start, labels


def tiles_per_slice(h: int, w: int, roi) -> int:
    """How many ROI windows MONAI's sliding window puts on one h x w slice (1 if it fits)."""
    from monai.data.utils import dense_patch_slices
    from monai.inferers.utils import _get_scan_interval

    if h <= roi[0] and w <= roi[1]:
        return 1
    roi = (min(roi[0], h), min(roi[1], w))
    return len(dense_patch_slices((h, w), roi, _get_scan_interval((h, w), roi, 2, (0.25, 0.25))))


def best_of(n: int, fn):
    runs = [fn() for _ in range(n)]
    return min(runs, key=lambda r: r[0])


def timed_predict(volume, model, **kw):
    start = time.perf_counter()
    pred = predict(volume, model, axis=0, **kw)
    return time.perf_counter() - start, pred


def brain_benchmark(args) -> dict:
    """(a) predict at its default precision, (a32) predict in float32, (b) naive, (c) matmul.

    FLOP/s percentages compare like with like: the float32 run against the float32 matmul
    rate, the default run against the matmul rate at the precision it ran in.
    """
    from napari_unet.inference.engine import autocast_dtype

    volume = read_volume(SAMPLE)
    model, model_desc = fixed_model()
    roi = tuple(args.roi or model.meta.patch_size)
    n_slices, h, w = volume.array.shape[:3]
    auto = autocast_dtype(torch.device(args.device), "auto", model.task) or torch.float32
    predict(volume.array[:4], model, axis=0, device=args.device)  # warm-up (oneDNN kernels)
    predict(volume.array[:4], model, axis=0, device=args.device, precision="float32")
    gflops_before = matmul_gflops()
    t_a, pred = best_of(args.repeat, lambda: timed_predict(volume, model, device=args.device,
                                                            roi_size=roi))
    t_a32, pred32 = best_of(args.repeat, lambda: timed_predict(
        volume, model, device=args.device, roi_size=roi, precision="float32"))
    t_b, naive = best_of(args.repeat, lambda: naive_loop(volume, model, roi, 0.25))
    gflops = max(gflops_before, matmul_gflops())  # the machine's best: conservative %
    gflops_auto = gflops if auto == torch.float32 else matmul_gflops(dtype=auto)
    fpp = model.net.flops_per_pixel()
    model_gflops = fpp * n_slices * h * w / t_a / 1e9
    model_gflops32 = fpp * n_slices * h * w / t_a32 / 1e9
    tiles = tiles_per_slice(h, w, roi)
    return {
        "volume": str(SAMPLE.relative_to(ROOT)), "shape": list(volume.array.shape),
        "model": model_desc, "model_hash": model.hash, "roi": list(roi),
        "axis": pred.axis, "batch_size": pred.batch_size, "device": pred.device,
        "default_precision": str(auto).replace("torch.", ""),
        "a_predict_seconds": t_a, "a_predict_slices_per_s": n_slices / t_a,
        "a32_predict_float32_seconds": t_a32, "a32_predict_slices_per_s": n_slices / t_a32,
        "b_naive_seconds": t_b, "b_naive_slices_per_s": n_slices / t_b,
        "ratio_a_over_b": t_b / t_a, "ratio_a32_over_b": t_b / t_a32,
        "labels_agree_with_naive": float(np.mean(pred.labels == naive)),
        "labels_agree_float32_with_naive": float(np.mean(pred32.labels == naive)),
        "c_matmul_gflops_float32": gflops, "c_matmul_gflops_default_precision": gflops_auto,
        "model_flops_per_pixel": fpp, "tiles_per_slice": tiles,
        "model_gflops": model_gflops, "model_gflops_float32": model_gflops32,
        "model_pct_of_matmul_float32": 100 * model_gflops32 / gflops,
        "model_pct_of_matmul_default_precision": 100 * model_gflops / gflops_auto,
        "peak_rss_mb": peak_rss_mb(),
    }


def ct_child() -> None:
    """Subprocess body: predict a synthetic CT volume, print its peak RSS as JSON."""
    rng = np.random.default_rng(0)
    ct = np.empty(CT_SHAPE, np.int16)
    for i in range(CT_SHAPE[0]):  # filled slice by slice: no float64 temporaries
        ct[i] = rng.integers(-1024, 2000, CT_SHAPE[1:], dtype=np.int16)
    torch.manual_seed(0)
    task = make_task("segment", n_classes=2)
    model = Model.new(task, base=16, normalization=Normalization("window", -1000, 1000))
    start = time.perf_counter()
    pred = predict(ct, model, axis=0, device="cpu")
    print(json.dumps({"shape": list(CT_SHAPE), "dtype": "int16", "seconds":
                      time.perf_counter() - start, "batch_size": pred.batch_size,
                      "tiled": pred.tiled, "roi": list(pred.roi_size),
                      "peak_rss_mb": peak_rss_mb()}))


def ct_memory() -> dict:
    out = subprocess.run([sys.executable, __file__, "--ct-child"], capture_output=True,
                         text=True, check=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["limit_mb"] = RSS_LIMIT_MB
    res["under_limit"] = res["peak_rss_mb"] < RSS_LIMIT_MB
    return res


def machine(threads: int) -> dict:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "physical_cores": physical_cores(),
            "torch_threads": threads, "torch": torch.__version__,
            "python": platform.python_version(),
            "load_average_at_start": list(os.getloadavg()),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--roi", type=int, nargs=2, metavar=("H", "W"),
                        help="ROI for (a) and (b) (default: the model's patch size)")
    parser.add_argument("--repeat", type=int, default=2, help="best of N runs of (a) and (b)")
    parser.add_argument("--skip-ct", action="store_true", help="skip the 512x512x400 RSS run")
    parser.add_argument("--ct-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("-o", "--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    threads = physical_cores()
    torch.set_num_threads(threads)
    if args.ct_child:
        return ct_child()
    result = {"machine": machine(threads), "brain": brain_benchmark(args)}
    result["machine"]["load_average_at_end"] = list(os.getloadavg())
    if not args.skip_ct:
        result["ct_512x512x400"] = ct_memory()
    elif args.output.exists():  # keep the (slow) CT figure of an earlier full run
        old = json.loads(args.output.read_text()).get("ct_512x512x400")
        if old:
            result["ct_512x512x400"] = {**old, "from_earlier_run": True}
    b = result["brain"]
    result["targets"] = {
        "ratio_a_over_b>=2.5": b["ratio_a_over_b"] >= 2.5,
        "ratio_a32_over_b>=2.5": b["ratio_a32_over_b"] >= 2.5,
        "pct_of_matmul_float32>=60": b["model_pct_of_matmul_float32"] >= 60,
        "pct_of_matmul_default_precision>=60": b["model_pct_of_matmul_default_precision"] >= 60,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"default ({b['default_precision']}): a/b = {b['ratio_a_over_b']:.2f}x, model "
          f"{b['model_gflops']:.1f} GFLOP/s = {b['model_pct_of_matmul_default_precision']:.0f}%"
          f" of matmul {b['c_matmul_gflops_default_precision']:.1f} GFLOP/s at that precision")
    print(f"float32: a/b = {b['ratio_a32_over_b']:.2f}x, model {b['model_gflops_float32']:.1f} "
          f"GFLOP/s = {b['model_pct_of_matmul_float32']:.0f}% of matmul "
          f"{b['c_matmul_gflops_float32']:.1f} GFLOP/s; peak RSS {b['peak_rss_mb']:.0f} MB")


if __name__ == "__main__":
    main()

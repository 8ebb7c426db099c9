"""Inference benchmark: predict vs a naive MONAI loop vs the matmul rate, all on one device.

Run from the repository root (see bench/README.md):

    python bench/inference.py                 # CPU: bench/results/inference.json
    python bench/inference.py --device cuda   # GPU: bench/results/inference_cuda.json

Every ratio compares runs made in this process on the same device:

- ``brain``: the sample brain with the bundled ``brain-tissue`` model. (a) ``predict`` at
  its default precision along one plane, (a3) the same along all three planes, averaged
  (the model's default), (a32) ``predict`` in float32, (b) a naive loop calling MONAI's
  ``sliding_window_inference`` on one slice at a time (batch 1, ROI 256 x 256, Gaussian
  blending, the plain eval-mode net in float32 as torch runs it by default), (c) the
  device's matmul rate in float32 and at the default precision; labels of (a) against
  (a32); and where the time goes per layer type (``--profile``).
  (a) to (c) run every pixel (``crop=False``), the same work as the naive loop; then
  (d) the default, which computes only the foreground (``inference/crop.py``), against
  every pixel, along all three planes (the model's default) and along one: seconds, the
  share of pixels computed and labels equal to every pixel's.
- ``ct``: a synthetic int16 CT (default 400 x 512 x 512 on CUDA, 40 slices on the CPU)
  with a fresh two-class ``window`` model (base 64 on CUDA, 16 on the CPU): the same four
  runs, and the peak GPU memory of (a).
- ``body``: a synthetic 400 x 512 x 512 int16 CT of a body in air (an ellipse of soft
  tissue with a spine and ribs in -1000 HU) with the same fresh model: (d), the default
  crop against every pixel.
- ``rss`` (CPU): peak RSS of predicting a 400 x 512 x 512 int16 CT in a fresh process.
- ``batch``: N synthetic CT ``.nii.gz`` files through ``napari-unet predict`` (in
  process), seconds per scan against reading the scans and writing their labels alone.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from layer_profile import layer_table, print_table  # noqa: E402

from napari_unet import load_model, predict, read_volume  # noqa: E402
from napari_unet.inference.engine import compute_dtype, physical_cores  # noqa: E402
from napari_unet.model.checkpoint import Model, bundled_models  # noqa: E402
from napari_unet.model.normalize import Normalization  # noqa: E402
from napari_unet.model.tasks import make_task  # noqa: E402

SAMPLE = ROOT / "sample_data" / "brain_t1.nii.gz"
RESULTS = ROOT / "bench" / "results"
RSS_LIMIT_MB = 2048
CASES = ("brain", "ct", "body", "rss", "batch")


# ---------------------------------------------------------------- the device and machine
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, fn):
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - start, out


def best_of(n: int, device: torch.device, fn):
    runs = [timed(device, fn) for _ in range(max(1, n))]
    return min(runs, key=lambda r: r[0])


def matmul_gflops(device: torch.device, dtype: torch.dtype, seconds: float = 2.0) -> float:
    """The device's square-matmul rate in ``dtype`` (float32 strict: no TF32)."""
    n = 8192 if device.type == "cuda" else 2048
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        for _ in range(3):
            a @ b
        sync(device)
        k, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            torch.mm(a, b)
            k += 1
            if device.type == "cuda" and k % 10 == 0:
                sync(device)
        sync(device)
        return 2 * n**3 * k / (time.perf_counter() - start) / 1e9
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32


def machine(device: torch.device) -> dict:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import psutil

    info = {"cpu": cpu, "logical_cpus": os.cpu_count(),
            "physical_cores": psutil.cpu_count(logical=False),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "device": str(device),
            "load_average_at_start": list(os.getloadavg())}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_gb=props.total_memory / 2**30,
                    cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
    return info


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


# ---------------------------------------------------------------- models and volumes
def brain_model() -> tuple[Model, str]:
    if "brain-tissue" in bundled_models():
        return load_model("brain-tissue", device="cpu"), "bundled brain-tissue"
    torch.manual_seed(0)
    model = Model.new(make_task("segment", n_classes=3), base=16, name="bench-seed0")
    return model, "Model.new(segment, 3 classes, base=16), torch.manual_seed(0)"


def ct_model(base: int) -> Model:
    torch.manual_seed(0)
    return Model.new(make_task("segment", n_classes=2), base=base,
                     normalization=Normalization("window", -1000, 1000),
                     name=f"bench-ct-base{base}", patch_size=(256, 256))


def body_ct(shape, seed: int = 0) -> np.ndarray:
    """An int16 CT of a body in air: an ellipse of soft tissue (40 HU, noise) about 60 % of
    the field across, a spine and a ring of ribs (700 HU), in -1000 HU air."""
    rng = np.random.default_rng(seed)
    z, h, w = shape
    yy, xx = np.ogrid[:h, :w]
    ell = ((yy - 0.55 * h) / (0.25 * h)) ** 2 + ((xx - w / 2) / (0.33 * w)) ** 2
    base = np.where(ell < 1, 40, -1000).astype(np.int16)
    base[(ell > 0.75) & (ell < 0.82)] = 700  # ribs
    base[(yy - 0.7 * h) ** 2 + (xx - w / 2) ** 2 < (0.04 * min(h, w)) ** 2] = 700  # spine
    ct = np.empty(shape, np.int16)
    for i in range(z):
        ct[i] = base + rng.integers(-20, 21, (h, w), dtype=np.int16) * (base > -1000)
    return ct


def synthetic_ct(shape, seed: int = 0) -> np.ndarray:
    """An int16 CT-like volume: air, a soft-tissue ellipse with noise, a bright 'spine'."""
    rng = np.random.default_rng(seed)
    z, h, w = shape
    yy, xx = np.ogrid[:h, :w]
    body = ((yy - h / 2) / (0.4 * h)) ** 2 + ((xx - w / 2) / (0.45 * w)) ** 2 < 1
    bone = (yy - 0.7 * h) ** 2 + (xx - w / 2) ** 2 < (0.06 * min(h, w)) ** 2
    base = np.where(body, 40, -1000).astype(np.int16)
    base[bone] = 700
    ct = np.empty(shape, np.int16)
    for i in range(z):  # slice by slice: no float64 volume
        ct[i] = base + rng.integers(-20, 21, (h, w), dtype=np.int16)
    return ct


# ---------------------------------------------------------------- the runs
def naive_loop(array: np.ndarray, model: Model, roi, device: torch.device) -> np.ndarray:
    """What a user would write with MONAI: one slice at a time, batch 1, on ``device``."""
    from monai.inferers import sliding_window_inference

    fitted = model.meta.normalization.fit(array)
    task, net = model.task, copy.deepcopy(model.net).to(device).eval()
    labels = np.zeros(array.shape[:3], task.label_dtype)
    with torch.no_grad():
        for i in range(array.shape[0]):
            x = torch.as_tensor(np.asarray(fitted.forward(array[i][None, None]))).float()
            logits = sliding_window_inference(x.to(device), roi, 1, net, overlap=0.25,
                                              mode="gaussian")
            labels[i] = task.decide(task.activate(logits))[0].cpu().numpy()
    return labels


def compare(array, model, device, args, name: str) -> dict:
    """(a), (a32), (b), (c) for one volume and model; FLOP/s against the matmul rates."""
    roi = tuple(model.meta.patch_size)
    dtype = compute_dtype(device, "auto", model.task)
    def run(**kw):  # one plane, every pixel: (a) and (b) do the same work
        return predict(array, model, axis=0, device=str(device), planes="one", crop=False,
                       **kw)

    run(slices=range(min(4, len(array))))  # warm-up: kernels, cuDNN autotuning
    run(slices=range(min(4, len(array))), precision="float32")
    naive_loop(array[:2], model, roi, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t_a, pred = best_of(1, device, run)
    peak_gpu = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    t_a32, pred32 = best_of(1, device, lambda: run(precision="float32"))
    t_b, naive = best_of(1, device, lambda: naive_loop(array, model, roi, device))
    for i in range(1, max(args.repeat, args.naive_repeat)):  # rounds interleave the runs, so
        if i < args.repeat:  # a change of load on a shared machine hits all of them alike
            t_a = min(t_a, timed(device, run)[0])
            t_a32 = min(t_a32, timed(device, lambda: run(precision="float32"))[0])
        if i < args.naive_repeat:
            t_b = min(t_b, timed(device, lambda: naive_loop(array, model, roi, device))[0])
    mm32 = matmul_gflops(device, torch.float32)
    mm = mm32 if dtype == torch.float32 else matmul_gflops(device, dtype)
    useful = model.net.flops_per_pixel() * np.prod(array.shape[:3]) / 1e9  # GFLOP, no padding
    res = {
        "volume": name, "shape": list(array.shape), "dtype": str(array.dtype),
        "model": model.name, "model_hash": model.hash, "base": model.meta.architecture.base,
        "default_precision": str(dtype).replace("torch.", ""), "batch_size": pred.batch_size,
        "tiled": pred.tiled, "item_hw": list(pred.roi_size), "naive_roi": list(roi),
        "a_predict_seconds": t_a, "a32_predict_float32_seconds": t_a32,
        "b_naive_seconds": t_b, "slices_per_s_a": len(array) / t_a,
        "ratio_a_over_b": t_b / t_a, "ratio_a32_over_b": t_b / t_a32,
        "labels_default_equal_float32": float(np.mean(pred.labels == pred32.labels)),
        "labels_default_equal_naive": float(np.mean(pred.labels == naive)),
        "c_matmul_gflops_float32": mm32, "c_matmul_gflops_default_precision": mm,
        "useful_gflop": useful, "useful_gflops_a": useful / t_a,
        "useful_gflops_a32": useful / t_a32,
        "pct_of_matmul_default_precision": 100 * useful / t_a / mm,
        "pct_of_matmul_float32_run": 100 * useful / t_a32 / mm32,
        "peak_gpu_memory_gb": peak_gpu,
    }
    if args.profile:
        res["layers"] = layer_table(run, device, mm)
        print_table(res["layers"], f"{name}: predict at {res['default_precision']} on {device}, "
                    f"per layer type (% of the {mm:.0f} GFLOP/s matmul)")
    return res


def brain_case(args, device) -> dict:
    model, desc = brain_model()
    res = compare(read_volume(SAMPLE).array, model, device, args,
                  str(SAMPLE.relative_to(ROOT)))
    res["model"] = desc
    volume = read_volume(SAMPLE)
    res["crop"] = {"all_planes": cropped(volume, model, device, args, "all"),
                   "one_plane": cropped(volume, model, device, args, "one")}
    if "mri-denoise" in bundled_models():
        res["crop"]["denoise"] = cropped(volume, load_model("mri-denoise", device="cpu"),
                                         device, args, "one")
    full3 = res["crop"]["all_planes"]["every_pixel_seconds"]
    res.update(a3_all_planes_seconds=full3, ratio_a3_over_a=full3 / res["a_predict_seconds"])
    return res


def cropped(volume, model, device, args, planes: str) -> dict:
    """(d) the default (only the foreground through the net) against every pixel, runs
    alternating; wall and CPU seconds, the share computed, labels equal."""
    def run(crop: bool):
        return predict(volume, model, axis=0, device=str(device), planes=planes, crop=crop)

    run(True)  # warm-up: the crops' shapes
    times = {True: [], False: []}
    preds = {}
    for _ in range(max(1, args.repeat)):
        for crop in (False, True):
            cpu = time.process_time()
            t, preds[crop] = timed(device, lambda crop=crop: run(crop))
            times[crop].append((t, time.process_time() - cpu))
    best = {k: min(v) for k, v in times.items()}
    if preds[True].labels is None:  # denoising: how far the images differ, in the scan's units
        diff = np.abs(preds[True].image - preds[False].image)
        scale = float(np.ptp(preds[False].image))
        same = diff <= 1e-3 * scale
        extra = {"image_max_abs_difference": float(diff.max()),
                 "image_mean_abs_difference": float(diff.mean()), "image_range": scale}
    else:
        same, extra = preds[True].labels == preds[False].labels, {}
    return {**extra, "planes": preds[True].planes, "default_seconds": best[True][0],
            "every_pixel_seconds": best[False][0],
            "speedup": best[False][0] / best[True][0],
            "default_cpu_seconds": best[True][1], "every_pixel_cpu_seconds": best[False][1],
            "speedup_cpu": best[False][1] / best[True][1],
            "share_computed": preds[True].computed,
            "labels_equal_every_pixel": float(np.mean(same)),  # denoising: within 0.1 %
            "labels_differing_voxels": int(same.size - same.sum())}


def body_case(args, device) -> dict:
    shape = tuple(args.body_shape or (400, 512, 512))
    volume = body_ct(shape)
    res = cropped(volume, ct_model(args.ct_base), device, args, "one")
    res.update(volume=f"synthetic int16 CT of a body in air {shape}",
               model=f"Model.new(segment, 2 classes, base {args.ct_base}, window "
                     "-1000..1000), torch.manual_seed(0)")
    return res


def ct_case(args, device) -> dict:
    shape = tuple(args.ct_shape or ((400, 512, 512) if device.type == "cuda" else (40, 512, 512)))
    return compare(synthetic_ct(shape), ct_model(args.ct_base), device, args,
                   f"synthetic int16 CT {shape}")


def rss_child(shape) -> None:
    """Subprocess body: predict a synthetic CT on the CPU, print its peak RSS as JSON."""
    ct = synthetic_ct(shape)
    model = ct_model(16)
    start = time.perf_counter()
    pred = predict(ct, model, axis=0, device="cpu")
    print(json.dumps({"shape": list(shape), "dtype": "int16", "model_base": 16,
                      "seconds": time.perf_counter() - start, "batch_size": pred.batch_size,
                      "tiled": pred.tiled, "item_hw": list(pred.roi_size),
                      "peak_rss_mb": peak_rss_mb()}))


def rss_case(args, device) -> dict:
    shape = args.rss_shape or [400, 512, 512]
    cmd = [sys.executable, __file__, "--rss-child", *map(str, shape),
           "--threads", str(torch.get_num_threads())]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res.update(limit_mb=RSS_LIMIT_MB, under_limit=res["peak_rss_mb"] < RSS_LIMIT_MB)
    return res


def gzip_backends() -> dict:
    from nibabel import _compression

    found = {"indexed_gzip (nibabel reads with it)": bool(_compression.HAVE_INDEXED_GZIP)}
    for name in ("isal", "zlib_ng"):
        try:
            __import__(name)
            found[name] = True
        except ImportError:
            found[name] = False
    return found


def batch_case(args, device) -> dict:
    """N CT files through the CLI vs reading them and writing their labels alone."""
    import nibabel as nib

    from napari_unet.cli.main import main
    from napari_unet.io.write import write_volume

    n = args.batch_scans or (20 if device.type == "cuda" else 3)
    shape = tuple(args.batch_shape or ((300, 512, 512) if device.type == "cuda"
                                       else (60, 512, 512)))
    with tempfile.TemporaryDirectory(prefix="napari-unet-bench-") as tmp:
        tmp = Path(tmp)
        src, out, scratch = tmp / "scans", tmp / "out", tmp / "scratch"
        for d in (src, scratch):
            d.mkdir()
        affine = np.diag([0.8, 0.8, 1.5, 1.0])
        nib.save(nib.Nifti1Image(synthetic_ct(shape).transpose(2, 1, 0), affine),
                 src / "ct00.nii.gz")
        for i in range(1, n):
            shutil.copyfile(src / "ct00.nii.gz", src / f"ct{i:02d}.nii.gz")
        model_path = ct_model(args.ct_base).save(tmp / "ct.safetensors")
        cli = ["predict", str(src), "-o", str(out), "--model", str(model_path),
               "--device", str(device), "--no-qc", "--quiet"]
        t_cli, code = timed(device, lambda: main(cli))
        labels = sorted(out.glob("*_labels.nii.gz"))

        def read_write():
            for scan, lab in zip(sorted(src.glob("*.nii.gz")), labels, strict=True):
                vol = read_volume(scan)
                seg = read_volume(lab).array  # not timed apart: reading it is I/O too
                write_volume(seg, scratch / lab.name, like=vol)

        t_io, _ = timed(device, read_write)
        file_mb = (src / "ct00.nii.gz").stat().st_size / 2**20
    return {"scans": n, "shape": list(shape), "dtype": "int16", "file_mb": file_mb,
            "model_base": args.ct_base, "cli_exit_code": code, "labels_written": len(labels),
            "cli_seconds_per_scan": t_cli / n, "read_write_seconds_per_scan": t_io / n,
            "ratio_cli_over_io": t_cli / t_io, "gzip_backends": gzip_backends(),
            "note": "read+write alone reads each scan and its labels file and writes the "
                    "labels again, so it slightly overstates the I/O of a predict run"}


# ---------------------------------------------------------------- report
def targets(result: dict, device: torch.device) -> dict:
    t = {}
    b, ct, bt = result.get("brain"), result.get("ct"), result.get("batch")
    if b:
        t["brain: default precision >= 5x the naive loop"] = b["ratio_a_over_b"] >= 5
        t["brain: labels equal float32 on >= 99.9 %"] = b["labels_default_equal_float32"] >= 0.999
        crop = b["crop"]["all_planes"]
        t["brain: the crop >= 2x fewer seconds, all planes"] = crop["speedup"] >= 2
        t["brain: cropped labels equal every pixel's on >= 99.9 %"] = all(
            c["labels_equal_every_pixel"] >= 0.999 for c in b["crop"].values())
    if result.get("body"):
        t["body: cropped labels equal every pixel's on >= 99.9 %"] = (
            result["body"]["labels_equal_every_pixel"] >= 0.999)
    if ct and device.type == "cuda":
        t["ct: <= 0.7 s"] = ct["a_predict_seconds"] <= 0.7
        t["ct: >= 10x the naive loop"] = ct["ratio_a_over_b"] >= 10
        t["ct: >= 20 % of the bf16 matmul rate"] = ct["pct_of_matmul_default_precision"] >= 20
        t["ct: peak GPU memory <= 8 GB"] = (ct["peak_gpu_memory_gb"] or 0) <= 8
        t["ct: labels equal float32 on >= 99.9 %"] = ct["labels_default_equal_float32"] >= 0.999
    if result.get("rss"):
        t["rss: 512x512x400 int16 CT < 2 GB"] = result["rss"]["under_limit"]
    if bt and device.type == "cuda":
        t["batch: seconds per scan within 1.3x of read+write"] = bt["ratio_cli_over_io"] <= 1.3
    return t


def print_crop(name: str, c: dict) -> None:
    print(f"{name}: foreground only {c['default_seconds']:.2f} s, every pixel "
          f"{c['every_pixel_seconds']:.2f} s = {c['speedup']:.2f}x ({c['speedup_cpu']:.2f}x "
          f"CPU seconds); {100 * c['share_computed']:.0f} % of pixels computed, labels equal "
          f"on {100 * c['labels_equal_every_pixel']:.3f} %")


def summary(result: dict) -> None:
    for key in ("brain", "ct"):
        r = result.get(key)
        if r:
            print(f"{key}: (a) {r['a_predict_seconds']:.2f} s at {r['default_precision']} = "
                  f"{r['ratio_a_over_b']:.2f}x the naive loop ({r['b_naive_seconds']:.2f} s), "
                  f"{r['useful_gflops_a']:.0f} GFLOP/s = "
                  f"{r['pct_of_matmul_default_precision']:.1f}% of matmul; (a32) "
                  f"{r['ratio_a32_over_b']:.2f}x; labels = float32 on "
                  f"{100 * r['labels_default_equal_float32']:.3f}%")
            if "a3_all_planes_seconds" in r:
                print(f"  (a3) all three planes, averaged: {r['a3_all_planes_seconds']:.2f} s "
                      f"= {r['ratio_a3_over_a']:.2f}x (a)")
            for name, c in r.get("crop", {}).items():
                print_crop(f"  (d) {name.replace('_', ' ')}", c)
    if result.get("body"):
        print_crop("body", result["body"])
    if result.get("rss"):
        print(f"rss: {result['rss']['peak_rss_mb']:.0f} MB for {result['rss']['shape']}")
    if result.get("batch"):
        bt = result["batch"]
        print(f"batch: {bt['cli_seconds_per_scan']:.2f} s/scan vs read+write "
              f"{bt['read_write_seconds_per_scan']:.2f} s/scan = {bt['ratio_cli_over_io']:.2f}x")
    for name, ok in result["targets"].items():
        print(f"  [{'x' if ok else ' '}] {name}")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", help="cpu or cuda (every run on this device)")
    p.add_argument("--cases", nargs="+", choices=CASES, help="default: brain ct rss on the "
                   "CPU, brain ct batch on CUDA")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: physical cores)")
    p.add_argument("--repeat", type=int, default=3, help="best of N runs of (a) and (a32)")
    p.add_argument("--naive-repeat", type=int, default=2, help="best of N runs of (b); "
                   "the runs of (a), (a32) and (b) alternate")
    p.add_argument("--no-profile", dest="profile", action="store_false",
                   help="skip the per-layer-type profile")
    p.add_argument("--ct-shape", type=int, nargs=3, metavar=("Z", "Y", "X"))
    p.add_argument("--ct-base", type=int, help="base width of the CT model (default: 64 on "
                   "CUDA, 16 on the CPU)")
    p.add_argument("--body-shape", type=int, nargs=3, metavar=("Z", "Y", "X"),
                   help="the body-in-air CT of the body case (default 400 512 512)")
    p.add_argument("--rss-shape", type=int, nargs=3, metavar=("Z", "Y", "X"))
    p.add_argument("--batch-scans", type=int)
    p.add_argument("--batch-shape", type=int, nargs=3, metavar=("Z", "Y", "X"))
    p.add_argument("--rss-child", type=int, nargs=3, help=argparse.SUPPRESS)
    p.add_argument("-o", "--output", type=Path)
    return p.parse_args()


def main() -> None:
    args = parse_args()
    if args.threads:  # predict() takes its thread count from OMP_NUM_THREADS
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    torch.set_num_threads(args.threads or physical_cores())
    if args.rss_child:
        return rss_child(tuple(args.rss_child))
    from napari_unet.devices import resolve_device

    device = resolve_device(args.device)
    args.ct_base = args.ct_base or (64 if device.type == "cuda" else 16)
    cases = args.cases or (("brain", "ct", "body", "batch") if device.type == "cuda"
                           else ("brain", "ct", "body", "rss"))
    runs = {"brain": brain_case, "ct": ct_case, "body": body_case, "rss": rss_case,
            "batch": batch_case}
    result = {"machine": machine(device)}
    out = args.output or RESULTS / ("inference.json" if device.type == "cpu"
                                    else f"inference_{device.type}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    for case in cases:  # the JSON is rewritten after each case: a killed run keeps the rest
        print(f"running {case} on {device} ...", flush=True)
        result[case] = runs[case](args, device)
        result["machine"]["load_average_at_end"] = list(os.getloadavg())
        result["targets"] = targets(result, device)
        out.write_text(json.dumps(result, indent=2) + "\n")
    summary(result)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

"""Where ``predict`` spends its time, per layer type, against the matmul rate.

Two passes over the same call:

- a FLOP model per module, from a global forward hook (real shapes, so padding, tiles and
  TTA count as run): convs 2 k^2 C_in C_out per output pixel, ReLU 1 per element, bilinear
  upsampling 6 per output element, 2 x 2 max-pooling 3 per output element;
- ``torch.profiler`` self times (device time on CUDA) of every op, attributed to the stage
  label the code sets around it (``napari_unet.net``, ``.normalise``, ``.outputs``...) and,
  inside the net, to a layer type by the op's name; on the CPU the time a stage spends
  outside any op (Python: module calls, MONAI's transform) shows as "Python in <stage>".

The result: per layer type, seconds, share of the profiled time, GFLOP, GFLOP/s and that
rate as a percentage of the matmul rate at the precision the run used.
"""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import nn

NET_TYPES = {  # op name fragments -> layer type, first match wins
    "convolution": "conv (+ fused ReLU)", "conv2d": "conv (+ fused ReLU)",
    "gemm": "conv (+ fused ReLU)",
    "relu": "bias/activation", "clamp_min": "bias/activation", "threshold": "bias/activation",
    "add": "bias/activation", "batch_norm": "bias/activation",
    "upsample": "upsample", "cat": "concat", "max_pool": "pooling", "maximum": "pooling",
    "pad": "padding", "copy": "casts/copies", "_to_copy": "casts/copies",
    "contiguous": "casts/copies",
}
STAGE_TYPES = {"napari_unet.upload": "upload (host -> device)",
               "napari_unet.normalise": "normalisation",
               "napari_unet.activate": "softmax/sigmoid",
               "napari_unet.blend": "tile blending",
               "napari_unet.outputs": "decisions, uncertainty, download"}


def flops_by_type(run) -> dict[str, float]:
    """Run ``run()`` under a global forward hook and add up modelled FLOPs per type."""
    from napari_unet.inference.fast_net import ConvReLU, EvenMaxPool2d, SplitUp

    flops: dict[str, float] = defaultdict(float)

    def hook(module, args, out):
        if not isinstance(out, torch.Tensor) or not args:
            return
        if isinstance(module, (nn.Conv2d, ConvReLU)):
            w = module.weight
            k = w.shape[1] * w.shape[2] * w.shape[3]
            flops["conv (+ fused ReLU)"] += 2.0 * k * out.numel()
        elif isinstance(module, SplitUp):  # its first conv, split in two (the rest hooks)
            w, skip = module.weight, args[1]
            pixels = skip.shape[0] * skip.shape[2] * skip.shape[3]
            flops["conv (+ fused ReLU)"] += 2.0 * w[0].numel() * w.shape[0] * pixels
        elif isinstance(module, nn.ConvTranspose2d):
            flops["conv (+ fused ReLU)"] += 2.0 * module.weight[0].numel() * args[0].numel()
        elif isinstance(module, nn.ReLU):
            flops["bias/activation"] += out.numel()
        elif isinstance(module, nn.Upsample):
            flops["upsample"] += 6.0 * out.numel()
        elif isinstance(module, (nn.MaxPool2d, EvenMaxPool2d)):
            flops["pooling"] += 3.0 * out.numel()

    handle = nn.modules.module.register_module_forward_hook(hook)
    try:
        run()
    finally:
        handle.remove()
    return dict(flops)


def times_by_type(run, device: torch.device) -> dict[str, float]:
    """Seconds per layer type (op self time; device time on CUDA) for one ``run()``."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    seconds: dict[str, float] = defaultdict(float)
    for ev in prof.events():
        if ev.device_type != torch.autograd.DeviceType.CPU or ev.name.startswith("Profiler"):
            continue  # kernels count through the op that launched them
        if ev.name.startswith("napari_unet."):  # time in the stage outside any op: Python
            if device.type == "cpu":
                seconds[f"Python in {ev.name[len('napari_unet.'):]}"] += (
                    ev.self_cpu_time_total / 1e6)
            continue
        us = ev.self_device_time_total if device.type == "cuda" else ev.self_cpu_time_total
        if us > 0:
            seconds[_layer_type(ev)] += us / 1e6
    return dict(seconds)


def _layer_type(ev) -> str:
    stage, parent = None, ev.cpu_parent
    while parent is not None:
        if parent.name.startswith("napari_unet."):
            stage = parent.name
            break
        parent = parent.cpu_parent
    if stage != "napari_unet.net":
        return STAGE_TYPES.get(stage, "other (outside the stages)")
    name = ev.name.lower()
    return next((t for frag, t in NET_TYPES.items() if frag in name), "other net ops")


def layer_table(run, device: torch.device, matmul_gflops: float) -> list[dict]:
    """Rows {type, seconds, share_pct, gflop, gflops, pct_of_matmul}, slowest first."""
    flops = flops_by_type(run)
    seconds = times_by_type(run, device)
    total = sum(seconds.values()) or 1.0
    rows = []
    for kind in sorted(set(seconds) | set(flops), key=lambda k: -seconds.get(k, 0.0)):
        s, f = seconds.get(kind, 0.0), flops.get(kind, 0.0)
        rate = f / s / 1e9 if s else 0.0
        rows.append({"type": kind, "seconds": s, "share_pct": 100 * s / total,
                     "gflop": f / 1e9, "gflops": rate,
                     "pct_of_matmul": 100 * rate / matmul_gflops})
    return rows


def print_table(rows: list[dict], title: str) -> None:
    print(f"\n{title}")
    print(f"{'layer type':34s} {'s':>7s} {'share':>6s} {'GFLOP':>8s} {'GFLOP/s':>9s} "
          f"{'% matmul':>8s}")
    for r in rows:
        print(f"{r['type']:34s} {r['seconds']:7.3f} {r['share_pct']:5.1f}% {r['gflop']:8.1f} "
              f"{r['gflops']:9.1f} {r['pct_of_matmul']:7.1f}%")

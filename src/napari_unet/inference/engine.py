"""The part of inference that touches torch: a fast copy of the net, tiling, TTA, devices.

Kept apart from :mod:`napari_unet.inference.predictor` (which handles volumes, axes and outputs) so
that each stays short. The engine takes batches of normalised 2D slices (B, C, H, W) on the
CPU and returns probabilities (B, C, H, W) float32 on the CPU:

- the net is a deep copy in eval mode with BatchNorm folded into the preceding conv
  (``fuse_conv_bn_eval``) and channels-last weights; the caller's model is not touched;
- slices that fit in the ROI go through the net whole (the UNet pads to a multiple of 16
  itself); larger slices are tiled by MONAI's ``sliding_window_inference`` with Gaussian
  blending of the tiles' probabilities;
- TTA averages the probabilities of the identity and the H, W and HW flips;
- precision ``auto``: CUDA runs under autocast (bf16 where supported, else fp16), and so
  does segmentation on CPUs with native bf16 (about 2.3x faster than float32 there, with
  the same labels); denoising and other CPUs stay float32;
- a CUDA out-of-memory halves the batch, then moves to the CPU, each time with a warning.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import os
import warnings

import torch
from torch import nn

from ..errors import TaskError
from ..model.tasks import TaskSpec

FLIPS: tuple[tuple[int, ...], ...] = ((), (-2,), (-1,), (-2, -1))


def physical_cores() -> int:
    """Cores worth one torch thread each (hyper-threads only add contention for convs)."""
    import psutil

    n = psutil.cpu_count(logical=False) or os.cpu_count() or 1
    if hasattr(os, "sched_getaffinity"):
        n = min(n, len(os.sched_getaffinity(0)))
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:  # an explicit limit (CI, shared machines) wins
        n = min(n, int(env))
    return max(1, n)


@contextlib.contextmanager
def cpu_threads(n: int | None = None):
    """Use ``n`` (default: physical cores) torch threads inside, restore the old count after."""
    before = torch.get_num_threads()
    torch.set_num_threads(n or physical_cores())
    try:
        yield
    finally:
        torch.set_num_threads(before)


def fuse_batchnorm(net: nn.Module) -> nn.Module:
    """Fold every eval-mode BatchNorm2d that follows a Conv2d in a Sequential into the conv."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for seq in [m for m in net.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(seq) - 1):
            conv, bn = seq[i], seq[i + 1]
            pair = isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)
            if pair and bn.running_mean is not None:
                seq[i] = fuse_conv_bn_eval(conv, bn)
                seq[i + 1] = nn.Identity()
    return net


def inference_copy(net: nn.Module, device: torch.device) -> nn.Module:
    """An eval-mode, BN-fused, channels-last copy of ``net`` on ``device``."""
    fast = fuse_batchnorm(copy.deepcopy(net).eval())
    for p in fast.parameters():
        p.requires_grad_(False)
    return fast.to(device=device, memory_format=torch.channels_last)


def is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True on CPUs with bf16 instructions (AVX512-BF16, AMX), where bf16 convs are fast."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return any(flag in flags for flag in ("avx512_bf16", "amx_bf16"))


def autocast_dtype(device: torch.device, precision: str, task: TaskSpec) -> torch.dtype | None:
    """The autocast dtype for a run, or None for plain float32.

    ``auto``: mixed precision on CUDA (bf16 where the GPU has it, else fp16); on the CPU
    bf16 only for segmentation on CPUs with native bf16 (labels are argmax/threshold
    decisions, which bf16 leaves intact; denoised intensities keep float32 precision).
    """
    if precision == "float32" or device.type == "mps":
        return None
    if precision == "float16":
        if device.type != "cuda":
            raise TaskError("precision float16 needs a CUDA GPU; use bfloat16 or float32")
        return torch.float16
    if precision == "bfloat16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if task.kind == "segment" and cpu_has_native_bf16() else None


def autocast_for(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


class Engine:
    """Runs batches of slices through the net; see the module docstring for what it does."""

    def __init__(self, model, device: torch.device, batch_size: int, roi: tuple[int, int],
                 overlap: float = 0.25, tta: bool = False, precision: str = "auto"):
        self.task: TaskSpec = model.task
        self.precision = precision
        self.device = device
        self.net = inference_copy(model.net, device)
        self.batch_size = self._initial_batch = max(1, int(batch_size))
        self.roi = roi
        self.overlap = overlap
        self.tta = tta
        # denoising + TTA: the spread of the flips is the uncertainty, so keep it too
        self.with_variance = tta and self.task.kind == "denoise"

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, C, H, W) float32 on the CPU -> probabilities, TTA variance (or None)."""
        while True:
            try:
                step = self.batch_size
                outs = [self._forward(x[i : i + step]) for i in range(0, len(x), step)]
                break
            except (RuntimeError, torch.cuda.OutOfMemoryError) as exc:
                if not is_oom(exc):
                    raise
                self._shrink(exc)
        out = outs[0] if len(outs) == 1 else torch.cat(outs)
        c = self.task.out_channels
        return (out[:, :c], out[:, c:]) if self.with_variance else (out, None)

    def tiled(self, h: int, w: int) -> bool:
        return h > self.roi[0] or w > self.roi[1]

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        from monai.inferers import sliding_window_inference

        x = self._to_device(x)
        h, w = x.shape[-2:]
        with autocast_for(self.device, autocast_dtype(self.device, self.precision, self.task)):
            if self.tiled(h, w):  # only the axes larger than the ROI are cut (no padding)
                roi = (min(self.roi[0], h), min(self.roi[1], w))
                out = sliding_window_inference(x, roi, len(x), self._predict,
                                               overlap=self.overlap, mode="gaussian")
            else:
                out = self._predict(x)
        return out.float().cpu()

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.device, non_blocking=True)

    def _predict(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last)
        if not self.tta:
            return self.task.activate(self.net(x).float())
        outs = torch.stack([self._flipped(x, dims) for dims in FLIPS])
        mean = outs.mean(dim=0)
        if self.with_variance:
            return torch.cat([mean, outs.var(dim=0, unbiased=False)], dim=1)
        return mean

    def _flipped(self, x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
        if not dims:
            return self.task.activate(self.net(x).float())
        return self.task.activate(self.net(x.flip(dims)).float()).flip(dims)

    def _shrink(self, exc: BaseException) -> None:
        """After an out-of-memory: halve the batch, then leave the GPU; else give up."""
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        if self.batch_size > 1:
            self.batch_size //= 2
            warnings.warn(f"{self.device} ran out of memory; retrying with batch size "
                          f"{self.batch_size}", RuntimeWarning, stacklevel=3)
            return
        if self.device.type != "cpu":
            warnings.warn(f"{self.device} ran out of memory even at batch size 1; falling "
                          "back to the CPU (slower)", RuntimeWarning, stacklevel=3)
            self.device = torch.device("cpu")
            self.net = self.net.to(self.device)
            self.batch_size = self._initial_batch
            return
        raise exc

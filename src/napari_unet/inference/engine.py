"""The part of inference that runs the net: precision, whole slices or MONAI tiles, TTA, OOM.

Kept apart from :mod:`napari_unet.inference.predictor` (volumes, axes, outputs) so that
each stays short. The engine takes normalised slices (B, C, H, W) float32 on its device
and returns probabilities (B, C, H, W) float32 on the same device; nothing here copies
to the host, so on CUDA the whole journey stays on the GPU. The device is a parameter
and the code path is the same on every device, which lets the CPU tests cover it.

- the net is :func:`~napari_unet.inference.fast_net.inference_copy` in the compute dtype
  (see :func:`compute_dtype`); the caller's model is not touched;
- whole slices go through the net in one pass (the UNet pads to a multiple of 16
  itself); with a ``tile`` (a ROI given by the user, or slices whose activations do not
  fit the memory budget) MONAI's ``sliding_window_inference`` cuts only the axes larger
  than the tile and blends the tiles' probabilities with a Gaussian;
- with a ``size`` (the slice at the model's pixel spacing, :mod:`.resample`) each batch
  is resampled to it before the net and the probabilities back after, on the device;
- with a crop :class:`~napari_unet.inference.crop.Window`, only that part of each slice
  (padded as the UNet pads the whole slice, so the pooling cells line up) goes through
  the net; the rest is the model's answer on an empty input (:meth:`Engine.background`),
  unless the answer on the crop's outer ring says the crop cut through something;
- TTA averages the probabilities of the identity and the H, W and HW flips;
- a CUDA out-of-memory halves the batch, then moves to the CPU, each time with a warning.

Why not MONAI's ``SliceInferer``: it takes the whole normalised volume as one float tensor
and returns all class probabilities as another (840 MB for a 512 x 512 x 400 CT with two
classes, beside the volume itself), with no progress, cancel or partial runs between
batches. Streaming batches of slices through ``sliding_window_inference`` (MONAI's own
tiling and Gaussian blending, used where tiles are needed) keeps memory at one batch.
"""

from __future__ import annotations

import contextlib
import functools
import os
import warnings

import torch
import torch.nn.functional as F
from torch.profiler import record_function

from ..errors import SettingsError
from ..model.tasks import TaskSpec
from .crop import DENOISE_MARGIN, RING, Window, window
from .fast_net import inference_copy
from .resample import resize

FLIPS: tuple[tuple[int, ...], ...] = ((), (-2,), (-1,), (-2, -1))
# What a forward call costs beside its pixels, in pixels' worth (2 cores, bf16: about
# 100 ms a megapixel in batches): every call about 2 ms, and the first call of an input
# shape in a process about 25 ms more while oneDNN (or cuDNN) makes its kernels. The
# progress of a run is counted in this cost, so a time-left estimate read from its first
# slices (the top of a head: small crops, new shapes) holds for the rest.
CALL_PIXELS, NEW_SHAPE_PIXELS = 20_000, 250_000
_SHAPES: set[tuple] = set()  # (device type, dtype, input shape) run in this process
# profiler labels of the stages (``bench/inference.py --profile`` reads them)
STAGE_UPLOAD, STAGE_NORMALISE = "napari_unet.upload", "napari_unet.normalise"
STAGE_NET, STAGE_ACTIVATE = "napari_unet.net", "napari_unet.activate"
STAGE_BLEND, STAGE_OUTPUTS = "napari_unet.blend", "napari_unet.outputs"


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


def compute_dtype(device: torch.device, precision: str, task: TaskSpec) -> torch.dtype:
    """The dtype the net runs in.

    ``auto``: bf16 for segmentation on CUDA (fp16 on GPUs without bf16) and on CPUs with
    native bf16 (labels are argmax/threshold decisions, which bf16 leaves intact on
    >= 99.9 % of voxels); float32 for denoising (intensities keep their precision; CUDA
    may use TF32 convolutions there) and elsewhere. ``float32`` is strict IEEE float32,
    also on CUDA (no TF32).
    """
    if precision == "float32" or device.type == "mps":
        return torch.float32
    if precision == "float16":
        if device.type != "cuda":
            raise SettingsError("precision float16 needs a CUDA GPU; use bfloat16 or float32")
        return torch.float16
    if precision == "bfloat16":
        return torch.bfloat16
    if task.kind != "segment":
        return torch.float32
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_native_bf16() else torch.float32


class Engine:
    """Runs batches of slices through the net; see the module docstring for what it does."""

    def __init__(self, model, device: torch.device, batch_size: int,
                 tile: tuple[int, int] | None = None, overlap: float = 0.25,
                 tta: bool = False, precision: str = "auto", deterministic: bool = False,
                 size: tuple[int, int] | None = None):
        self.task: TaskSpec = model.task
        self.size = size  # slices go through the net at this size (the model's spacing)
        self.precision, self.deterministic = precision, deterministic
        self.device = device
        self.dtype = compute_dtype(device, precision, self.task)
        self._source = model.net  # rebuilt from it if the GPU runs out of memory
        self.net = inference_copy(model.net, device, self.dtype)
        self.batch_size = self._initial_batch = max(1, int(batch_size))
        self.tile = tile
        self.overlap = overlap
        self.tta = tta
        # denoising + TTA: the spread of the flips is the uncertainty, so keep it too
        self.with_variance = tta and self.task.kind == "denoise"
        self.in_channels = model.meta.architecture.in_channels
        self.patch = tuple(model.meta.patch_size)
        self._background: torch.Tensor | None = None  # (C,) on the device
        self.uncropped = 0  # crops run whole because their ring was not background

    def __call__(self, x: torch.Tensor, wins: list[Window] | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, C, H, W) float32 normalised -> probabilities, TTA variance (or None); with
        ``wins`` (one per slice, all of one shape), only those crops go through the net
        (see the module docstring)."""
        hw = tuple(x.shape[-2:])
        while True:
            try:
                x = resize(self._to_device(x), self.size or hw)
                out = self._whole(x) if wins is None else self._cropped(x, wins)
                break
            except (RuntimeError, torch.cuda.OutOfMemoryError) as exc:
                if not is_oom(exc):
                    raise
                self._shrink(exc)
        return self._split(resize(out, hw, "probabilities"))

    def filled(self, n: int, hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The answer on ``n`` slices with no foreground: the background's everywhere."""
        return self._split(self._filled(n, *hw))

    def window(self, box, hw: tuple[int, int]) -> Window | None:
        """The crop of a slice of ``hw`` pixels with foreground ``box`` (see :mod:`.crop`)."""
        margin = DENOISE_MARGIN if self.task.kind == "denoise" else None
        return window(box, hw, self.size or hw, margin)

    def background(self, value: float) -> torch.Tensor:
        """The model's answer on an empty input: a constant slice of ``value`` (the model's
        patch size), read at its centre, far from the slice's edges; kept for the run."""
        h, w = (max(16, min(int(n), 512)) for n in self.patch)
        x = torch.full((1, self.in_channels, h, w), float(value), device=self.device)
        with self._backend_flags():
            self._background = self._predict(x)[0, :, h // 2, w // 2].clone()
        return self._background

    def _split(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        c = self.task.out_channels
        return (out[:, :c], out[:, c:]) if self.with_variance else (out, None)

    def _whole(self, x: torch.Tensor) -> torch.Tensor:
        step = self.batch_size
        outs = [self._forward(x[i : i + step]) for i in range(0, len(x), step)]
        return outs[0] if len(outs) == 1 else torch.cat(outs)

    def _filled(self, n: int, h: int, w: int) -> torch.Tensor:
        if self._background is None:
            raise RuntimeError("Engine.background() must run before cropped slices")
        bg = self._background.to(self.device)
        return bg.view(1, -1, 1, 1).expand(n, -1, h, w).contiguous()

    def _cropped(self, x: torch.Tensor, wins: list[Window]) -> torch.Tensor:
        """Each slice's crop through the net, placed in the background's answer; the
        whole slices when a crop's outer ring is not background."""
        t, b, left, right = wins[0].pad
        h, w = x.shape[-2:]
        full = self._filled(len(x), h + t + b, w + left + right)
        if wins[0].empty:
            return full[..., t : t + h, left : left + w]
        padded = F.pad(x, [left, right, t, b], mode="replicate") if any(wins[0].pad) else x
        crops = [padded[i, :, c.rows[0] : c.rows[1], c.cols[0] : c.cols[1]]
                 for i, c in enumerate(wins)]
        part = self._whole(torch.stack(crops))
        if not all(self._ring_is_background(p, c, full.shape[-2:])
                   for p, c in zip(part, wins, strict=True)):
            self.uncropped += len(x)
            return self._whole(x)
        for i, c in enumerate(wins):
            full[i, :, c.rows[0] : c.rows[1], c.cols[0] : c.cols[1]] = part[i]
        return full[..., t : t + h, left : left + w]

    def _ring_is_background(self, part: torch.Tensor, win: Window, padded_hw) -> bool:
        """Whether a crop's (C, h, w) edges inside the slice decide the background's class
        (segmentation; a denoiser crops only exactly constant input)."""
        if self.task.kind != "segment":
            return True
        (r0, r1), (c0, c1) = win.rows, win.cols
        edges = [part[:, :RING, :] if r0 > 0 else None,
                 part[:, -RING:, :] if r1 < padded_hw[0] else None,
                 part[:, :, :RING] if c0 > 0 else None,
                 part[:, :, -RING:] if c1 < padded_hw[1] else None]
        want = self.task.decide(self._background.view(1, -1, 1, 1))
        return all(bool((self.task.decide(e[None]) == want).all())
                   for e in edges if e is not None)

    def tiled(self, h: int, w: int) -> bool:
        return self.tile is not None and (h > self.tile[0] or w > self.tile[1])

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        from monai.inferers import sliding_window_inference

        h, w = x.shape[-2:]
        with self._backend_flags():
            if not self.tiled(h, w):
                return self._predict(x)
            roi = (min(self.tile[0], h), min(self.tile[1], w))  # cut only the larger axes
            with record_function(STAGE_BLEND):
                return sliding_window_inference(x, roi, len(x), self._predict,
                                                overlap=self.overlap, mode="gaussian")

    def _backend_flags(self):
        """CUDA: autotuned cuDNN kernels, or deterministic ones; TF32 only for ``auto``."""
        if self.device.type != "cuda":
            return contextlib.nullcontext()
        from ..devices import deterministic

        stack = contextlib.ExitStack()
        stack.enter_context(torch.backends.cudnn.flags(
            enabled=True, benchmark=not self.deterministic, deterministic=self.deterministic,
            allow_tf32=self.precision == "auto"))
        stack.enter_context(deterministic(self.deterministic))
        return stack

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.device, non_blocking=True)

    def inputs(self, n: int, h: int, w: int) -> list[tuple[int, int, int, int]]:
        """The input shapes the net gets for ``n`` slices (or crops) of h x w: batches."""
        return [(min(self.batch_size, n - start), self.in_channels, h, w)
                for start in range(0, n, self.batch_size)]

    def has_run(self, shape: tuple[int, ...]) -> bool:
        """Whether this device and dtype have run an input of ``shape`` in this process
        (its kernels are made)."""
        return self._key(shape) in _SHAPES

    def cost(self, n: int, h: int, w: int, seen: set) -> float:
        """Pixels' worth of running ``n`` slices (or crops) of h x w in batches; input
        shapes in ``seen`` (updated) or run before in this process are not new."""
        total = 0.0
        for shape in self.inputs(n, h, w):
            new = not self.has_run(shape) and self._key(shape) not in seen
            seen.add(self._key(shape))
            total += shape[0] * h * w + CALL_PIXELS + NEW_SHAPE_PIXELS * new
        return total

    def _key(self, shape) -> tuple:
        return self.device.type, self.dtype, tuple(shape)

    def _predict(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised float32 -> activated float32 (and the TTA variance for denoising)."""
        _SHAPES.add(self._key(x.shape))
        x = x.to(self.dtype).contiguous(memory_format=torch.channels_last)
        if not self.tta:
            return self._activate(x)
        outs = torch.stack([self._flipped(x, dims) for dims in FLIPS])
        mean = outs.mean(dim=0)
        if self.with_variance:
            return torch.cat([mean, outs.var(dim=0, unbiased=False)], dim=1)
        return mean

    def _activate(self, x: torch.Tensor) -> torch.Tensor:
        with record_function(STAGE_NET):
            logits = self.net(x)
        with record_function(STAGE_ACTIVATE):  # class-first float32: per-pixel reductions
            return self.task.activate(logits.to(torch.float32,  # over classes vectorise
                                                memory_format=torch.contiguous_format))

    def _flipped(self, x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
        if not dims:
            return self._activate(x)
        return self._activate(x.flip(dims)).flip(dims)

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
            self.device, self.net = torch.device("cpu"), None  # free the GPU copy first
            torch.cuda.empty_cache()
            precision = "float32" if self.precision == "float16" else self.precision
            self.dtype = compute_dtype(self.device, precision, self.task)
            self.net = inference_copy(self._source, self.device, self.dtype)
            self.batch_size = self._initial_batch
            return
        raise exc


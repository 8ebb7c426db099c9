"""Typed settings and results of a training run (one dataclass per job, no global state)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Literal

from ..errors import SettingsError, TaskError
from ..inference.predictor import PRECISIONS
from ..io.geometry import PLANES
from ..model.tasks import TASK_KINDS

if TYPE_CHECKING:
    from ..model.checkpoint import Model
    from ..model.normalize import Normalization

AXES = (0, 1, 2)
SLICE_PLANES = ("auto", *PLANES)  # found from each scan's orientation and spacing
NOISE_KINDS = ("gaussian", "rician", "poisson")  # implemented in .noise
DEFAULT_ITERATIONS = 500
DEFAULT_FINETUNE_SECONDS = 30.0  # at most, while a person waits (the iterations end it first)


@dataclass
class TrainSettings:
    """Everything :func:`napari_unet.train` needs besides the data; built by CLI and widget.

    ``iterations`` and ``time_budget`` both stop the run (whichever comes first); with
    neither, :data:`DEFAULT_ITERATIONS` iterations run. ``noise_level`` is the noise sigma
    as a fraction of the normalised intensity range (a ``(low, high)`` pair draws a level
    per patch). ``val_block`` fixes the held-out slice range ``(start, stop)`` of every
    volume; otherwise a contiguous block of ``val_fraction`` of the slices around the
    middle is held out. ``val_gap`` slices either side of it are not trained on either.

    ``augment``: flips and mild contrast changes. ``domain_randomization``: also rotation,
    zoom, bias field, gamma, histogram shift, low resolution, Gibbs ringing, noise and
    intensity scale (:data:`~napari_unet.training.augment.DOMAIN`), for models that must
    hold on scans unlike the training ones. ``precision``: ``auto`` trains under bf16
    autocast on GPUs and on CPUs with native bf16 (AMX, AVX512-BF16) for segmentation,
    float32 otherwise. ``deterministic``: bit-identical weights from the same seed on CUDA
    too (slower; see :mod:`~napari_unet.training.determinism`); on the CPU runs with the
    same seed, iteration count and ``threads`` are identical anyway. ``threads``: torch
    CPU threads for this run (None: torch's setting). ``log_every``: iterations between
    reads of the loss on the host (reading it every step would stall a GPU).
    ``slice_context``: neighbour slices either side that go in with each slice as extra
    channels (2.5D: a denoiser sees the same anatomy under independent noise; None takes
    the ``init`` model's, else 0). Not for self-supervised denoising, whose blind spot the
    neighbours would see through. ``all_planes`` (segmentation): also learn from the slices
    of the other two planes of near-isotropic scans, with the held-out slices' voxels
    blanked in them (:mod:`~napari_unet.training.planes`).
    """

    task: Literal["segment", "denoise"] = "segment"
    n_classes: int | None = None
    class_names: list[str] | None = None
    # per class, a coded concept for DICOM SEG (io.class_codes.resolve: GrayMatter, ...)
    class_codes: list[str] | None = None
    noise: str = "gaussian"
    noise_level: float | tuple[float, float] = 0.05
    self_supervised: bool = False
    axis: int | str = 0  # an array axis, a plane (axial, coronal, sagittal) or 'auto'
    init: Any = None  # a Model, a model file path or a bundled model name
    base: int = 16
    patch_size: tuple[int, int] = (128, 128)
    batch_size: int = 8
    iterations: int | None = None
    time_budget: float | None = None
    lr: float = 1e-2
    val_fraction: float = 0.15
    val_block: tuple[int, int] | None = None
    val_gap: int = 0
    val_every: int | None = None
    seed: int = 0
    device: str = "auto"
    normalization: Normalization | None = None
    augment: bool = True
    blindspot_fraction: float = 0.02
    name: str | None = None
    channels_last: bool = True
    domain_randomization: bool = False
    precision: str = "auto"
    deterministic: bool = False
    threads: int | None = None
    log_every: int = 50
    slice_context: int | None = None
    all_planes: bool = False

    def __post_init__(self):
        if self.task in ("segmentation", "seg"):
            self.task = "segment"
        if self.task not in TASK_KINDS:
            raise TaskError(f"unknown task {self.task!r}: use 'segment' or 'denoise'")
        if self.noise not in NOISE_KINDS:
            raise TaskError(f"unknown noise model {self.noise!r}: use one of {NOISE_KINDS}")
        levels = self.noise_level if isinstance(self.noise_level, (tuple, list)) else [
            self.noise_level]
        if not all(0 < float(v) < 1 for v in levels):
            raise TaskError(f"noise level must lie in (0, 1) as a fraction of the intensity "
                            f"range (got {self.noise_level}); 0.05 means 5%")
        if self.axis not in (*AXES, *SLICE_PLANES):
            raise SettingsError(f"slice axis must be 0, 1, 2, {', '.join(SLICE_PLANES)} "
                                f"(got {self.axis!r})")
        self._check_numbers()
        if self.precision not in PRECISIONS:
            raise SettingsError(f"precision must be one of {', '.join(PRECISIONS)}, "
                                f"not {self.precision!r}")
        if self.val_gap < 0 or self.log_every < 1 or (self.threads is not None
                                                        and self.threads < 1):
            raise SettingsError("val_gap must be >= 0, log_every and threads >= 1")
        self.patch_size = (int(self.patch_size[0]), int(self.patch_size[1]))
        self._check_context()
        self._check_codes()
        if self.all_planes and self.task != "segment":
            raise SettingsError("all_planes is for segmentation: a denoiser learns from the "
                                "slices of its own plane")
        if self.iterations is None and self.time_budget is None:
            self.iterations = DEFAULT_ITERATIONS

    def _check_numbers(self) -> None:
        if self.iterations is not None and self.iterations < 1:
            raise SettingsError(f"iterations must be >= 1 (got {self.iterations})")
        if self.time_budget is not None and not 0 < self.time_budget < math.inf:
            raise SettingsError(f"time budget must be a number of seconds > 0 (got "
                                f"{self.time_budget})")
        if not 0 <= self.val_fraction < 1:
            raise SettingsError(f"val_fraction must lie in [0, 1) (got {self.val_fraction})")
        if self.val_block is not None and not 0 <= self.val_block[0] < self.val_block[1]:
            raise SettingsError(f"the held-out block is slices START..STOP-1 with 0 <= START "
                                f"< STOP (got {self.val_block[0]} {self.val_block[1]})")
        if self.batch_size < 1 or self.base < 1 or min(self.patch_size) < 1:
            raise SettingsError("batch_size, base and patch size must all be >= 1")
        if not 0 < self.lr < math.inf:
            raise SettingsError(f"learning rate must be a number > 0 (got {self.lr})")

    def _check_codes(self) -> None:
        """Class codes resolve now (a typo fails before training, not after)."""
        if self.class_codes is None:
            return
        if self.task != "segment":
            raise SettingsError("class codes are for segmentation: a denoiser has no classes")
        from ..io.class_codes import resolve

        for text in self.class_codes:
            try:
                resolve(text)
            except ValueError as exc:
                raise SettingsError(f"class code {exc}") from None

    def _check_context(self) -> None:
        from ..model.checkpoint import MAX_SLICE_CONTEXT

        k = self.slice_context
        if k is not None and not 0 <= k <= MAX_SLICE_CONTEXT:
            raise SettingsError(f"slice context must be 0..{MAX_SLICE_CONTEXT} neighbour "
                                f"slices either side (got {k})")
        if k and self.self_supervised:
            raise SettingsError("self-supervised denoising takes no slice context: the "
                                "neighbour slices would let the net see through its blind "
                                "spot; train with --slice-context 0")

    def describe_noise(self) -> dict:
        """The noise settings as stored in a denoising model's provenance."""
        level = self.noise_level
        level = list(level) if isinstance(level, (tuple, list)) else float(level)
        mode = "self-supervised (blind-spot)" if self.self_supervised else "supervised"
        return {"model": self.noise, "level": level, "level_unit": "fraction of range",
                "mode": mode}

    def to_dict(self) -> dict:
        """JSON-friendly copy (the init model by name, the normalisation as a dict)."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["init"] = None if self.init is None else getattr(self.init, "name", str(self.init))
        d["normalization"] = None if self.normalization is None else self.normalization.to_dict()
        d["patch_size"] = list(self.patch_size)
        if isinstance(self.noise_level, tuple):
            d["noise_level"] = list(self.noise_level)
        return d


@dataclass
class FinetuneSettings:
    """How :func:`napari_unet.finetune` learns from corrections (the widget and scripts fill it).

    Stops after ``iterations`` or ``time_budget`` seconds, whichever comes first.
    ``iterations`` left at None follows how well the model already agrees with the
    corrections (``finetune.ITERATIONS``: 40 for a model that agrees, up to 80 for one
    that does not), as do ``lr``, ``anchor`` and ``freeze_norm``
    (:mod:`napari_unet.training.finetune`); with neither given, the time is capped at
    ``DEFAULT_FINETUNE_SECONDS``.
    """

    time_budget: float | None = None
    iterations: int | None = None
    lr: float | None = None
    batch_size: int = 4
    patch_size: tuple[int, int] | None = None  # None: the model's, at most 96
    freeze_encoder: bool = False  # learn in the decoder only
    # None below: chosen from the parent's agreement with the corrections (see finetune)
    freeze_norm: bool | None = None  # keep the parent's BatchNorm statistics
    anchor: float | None = None  # weight of the parent's predictions on unchecked slices
    augment: bool = True
    seed: int = 0
    device: str = "auto"
    name: str | None = None
    # auto: the forward pass under bf16 autocast on CUDA and on CPUs with native bf16 (AMX,
    # AVX512-BF16), as training; float32: plain float32
    precision: str = "auto"

    def __post_init__(self):
        if self.iterations is not None and self.iterations < 1:
            raise SettingsError(f"iterations must be >= 1 (got {self.iterations})")
        if self.precision not in PRECISIONS:
            raise SettingsError(f"precision must be one of {', '.join(PRECISIONS)}, "
                                f"not {self.precision!r}")
        if self.anchor is not None and self.anchor < 0:
            raise SettingsError(f"anchor weight must be >= 0 (got {self.anchor}); 0 is off")
        if self.time_budget is not None and self.time_budget <= 0:
            raise SettingsError(f"time budget must be > 0 seconds (got {self.time_budget})")
        if (self.lr is not None and self.lr <= 0) or self.batch_size < 1:
            raise SettingsError(f"learning rate must be > 0 and batch size >= 1 "
                                f"(got {self.lr}, {self.batch_size})")


@dataclass
class TrainResult:
    """A trained model plus what happened: per-iteration losses and validation history."""

    model: Model
    history: list[dict] = field(default_factory=list)  # one dict per log/validation step
    metrics: dict = field(default_factory=dict)  # the final validation metrics
    losses: list[float] = field(default_factory=list)  # training loss of every iteration
    iterations: int = 0
    seconds: float = 0.0
    stopped_by: str = "iterations"  # or "time_budget"

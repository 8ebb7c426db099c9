"""The task rules: why a UNet has ``n_classes`` and what it should be for each job.

One place decides, from the task, how many output channels the network has, which
activation turns logits into probabilities and how probabilities become the result:

- segmentation, N >= 2 classes: N channels, softmax, argmax -> labels 0..N-1
- binary segmentation:           1 channel, sigmoid, threshold -> labels {0, 1}
- denoising:                     out = in channels, sigmoid -> [0, 1] intensities,
                                 mapped back to the scan's scale by the normaliser

The CLI, the widgets, training and inference all build a :class:`TaskSpec` through
:func:`make_task` and never re-implement these rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np

from ..errors import TaskError

if TYPE_CHECKING:
    import torch

TaskKind = Literal["segment", "denoise"]
TASK_KINDS: tuple[str, ...] = ("segment", "denoise")


@dataclass(frozen=True)
class TaskSpec:
    """What the network's outputs mean. Build it with :func:`make_task`."""

    kind: TaskKind
    in_channels: int = 1
    n_classes: int = 0  # 0 for denoising; 1 means binary segmentation
    class_names: tuple[str, ...] = field(default=())
    threshold: float = 0.5

    @property
    def out_channels(self) -> int:
        return self.in_channels if self.kind == "denoise" else self.n_classes

    @property
    def is_binary(self) -> bool:
        return self.kind == "segment" and self.n_classes == 1

    @property
    def n_labels(self) -> int:
        """Number of distinct label values the result can hold (background included)."""
        return 2 if self.is_binary else self.n_classes

    def numbered_classes(self) -> str:
        """'0 background, 1 grey matter, ...': the label values a person may paint."""
        return ", ".join(f"{i} {name}" for i, name in enumerate(self.class_names))

    @property
    def label_dtype(self) -> np.dtype:
        return np.dtype(np.uint8 if self.n_labels <= 256 else np.uint16)

    def describe(self) -> str:
        """Plain words for users: what the model will produce."""
        if self.kind == "denoise":
            ch = "grayscale" if self.in_channels == 1 else f"{self.in_channels}-channel"
            return f"denoising of {ch} scans (output: a cleaned image on the scan's scale)"
        names = ", ".join(self.class_names)
        if self.is_binary:
            return f"binary segmentation ({names}; sigmoid > {self.threshold:g})"
        return f"segmentation into {self.n_classes} classes ({names})"

    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits (B, C, H, W) -> probabilities (softmax for N >= 2, else sigmoid)."""
        if self.kind == "segment" and self.n_classes >= 2:
            return logits.softmax(dim=1)
        return logits.sigmoid()

    def decide(self, probs: torch.Tensor) -> torch.Tensor:
        """Probabilities (B, C, H, W) -> labels (B, H, W) or [0, 1] intensities (B, C, H, W)."""
        if self.kind == "denoise":
            return probs
        if self.is_binary:
            return (probs[:, 0] > self.threshold).to(_torch().uint8)
        # max().indices equals argmax (first maximum wins) but is ~20x faster on
        # contiguous CPU tensors in torch 2.x, which made argmax a third of inference time
        return probs.max(dim=1).indices

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "in_channels": self.in_channels,
            "n_classes": self.n_classes,
            "class_names": list(self.class_names),
            "threshold": self.threshold,
        }

    @classmethod
    def from_dict(cls, d: dict) -> TaskSpec:
        return make_task(
            d["kind"],
            in_channels=int(d.get("in_channels", 1)),
            n_classes=int(d.get("n_classes", 0)),
            class_names=d.get("class_names") or None,
            threshold=float(d.get("threshold", 0.5)),
        )


def _torch():
    import torch

    return torch


def make_task(
    kind: str,
    in_channels: int = 1,
    n_classes: int | None = None,
    class_names: list[str] | tuple[str, ...] | None = None,
    out_channels: int | None = None,
    threshold: float = 0.5,
) -> TaskSpec:
    """Validate settings against the task rules; raise :class:`TaskError` saying what to set.

    ``out_channels`` may be given instead of (or as well as) ``n_classes``; they must agree.
    """
    if kind in ("segmentation", "seg"):
        kind = "segment"
    if kind in ("denoising", "denoised"):
        kind = "denoise"
    if kind not in TASK_KINDS:
        raise TaskError(f"unknown task {kind!r}: use 'segment' or 'denoise'")
    if in_channels < 1:
        raise TaskError(f"in_channels must be >= 1 (got {in_channels}); grayscale CT/MR is 1")
    if not 0.0 < threshold < 1.0:
        raise TaskError(f"threshold must lie in (0, 1) (got {threshold})")
    if kind == "denoise":
        return _denoise_task(in_channels, n_classes, out_channels, threshold)
    return _segment_task(in_channels, n_classes, out_channels, class_names, threshold)


def _denoise_task(in_channels, n_classes, out_channels, threshold) -> TaskSpec:
    if out_channels is not None and out_channels != in_channels:
        raise TaskError(
            f"denoising needs as many outputs as inputs: out_channels={out_channels} but "
            f"in_channels={in_channels}; set out_channels={in_channels} (or leave it out)"
        )
    if n_classes not in (None, 0):
        raise TaskError(
            f"denoising has no classes (got n_classes={n_classes}); leave --classes out, "
            "or use --task segment"
        )
    return TaskSpec("denoise", in_channels, 0, (), threshold)


def _segment_task(in_channels, n_classes, out_channels, class_names, threshold) -> TaskSpec:
    if n_classes is None:
        n_classes = out_channels
    if n_classes is None and class_names:
        n_classes = len(class_names)
    if n_classes is None:
        raise TaskError("segmentation needs a class count: set --classes N (1 for binary)")
    if out_channels is not None and out_channels != n_classes:
        raise TaskError(
            f"out_channels={out_channels} contradicts n_classes={n_classes}: a segmentation "
            "UNet has one output channel per class (1 for binary)"
        )
    if n_classes < 1:
        raise TaskError(
            f"n_classes must be >= 1 (got {n_classes}): 1 for binary (sigmoid), "
            "N >= 2 for N classes with background as class 0 (softmax)"
        )
    names = _class_names(n_classes, class_names)
    return TaskSpec("segment", in_channels, n_classes, names, threshold)


def _class_names(n_classes: int, names) -> tuple[str, ...]:
    expected = 2 if n_classes == 1 else n_classes
    if not names:
        if n_classes == 1:
            return ("background", "foreground")
        return ("background",) + tuple(f"class {i}" for i in range(1, n_classes))
    names = tuple(str(n) for n in names)
    if n_classes == 1 and len(names) == 1:
        names = ("background",) + names
    if len(names) != expected:
        raise TaskError(
            f"{len(names)} class names given for {n_classes} classes; give {expected} "
            "(background first)"
        )
    return names

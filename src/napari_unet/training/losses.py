"""Losses chosen from the task rules, each with a voxel-masked variant for partial trust.

- segmentation, N >= 2: MONAI Dice + cross-entropy (from one-hot targets)
- binary segmentation:  MONAI Dice + binary cross-entropy
- denoising:            mean squared error on the activated (sigmoid) output

Every loss takes ``(logits, target, mask=None)``. With a mask (1 = trusted voxel; the
denoising loss also takes weights in [0, 1] there), voxels
outside it contribute exactly nothing: their predictions and targets are zeroed before
Dice and their cross-entropy / squared error terms are multiplied by 0, so whatever
labels untrusted voxels hold cannot move the weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..model.tasks import TaskSpec


def make_loss(task: TaskSpec) -> nn.Module:
    """The loss for ``task``; activations always come from :meth:`TaskSpec.activate`."""
    if task.kind == "denoise":
        return DenoiseLoss(task)
    if task.is_binary:
        return BinaryLoss(task)
    return MultiClassLoss(task)


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.expand_as(values)
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


class MultiClassLoss(nn.Module):
    """Dice + CE over N >= 2 classes; ``target`` holds labels (B, 1, H, W).

    The cross-entropy is written with one-hot targets rather than ``F.cross_entropy``:
    the same value, and it has a deterministic CUDA backward (``deterministic=True``).
    """

    def __init__(self, task: TaskSpec):
        super().__init__()
        from monai.losses import DiceLoss

        self.task = task
        self.dice = DiceLoss(batch=True)

    def forward(self, logits, target, mask=None):
        if mask is not None:
            target = target * mask  # untrusted labels may hold anything, even 255
        onehot = F.one_hot(target[:, 0].long(), logits.shape[1]).permute(0, 3, 1, 2)
        onehot = onehot.to(logits.dtype)
        probs = self.task.activate(logits)
        ce = -(onehot * F.log_softmax(logits, dim=1)).sum(1, keepdim=True)
        if mask is None:
            return self.dice(probs, onehot) + ce.mean()
        return self.dice(probs * mask, onehot * mask) + _masked_mean(ce, mask)


class BinaryLoss(nn.Module):
    """Dice + BCE for one sigmoid channel; ``target`` holds {0, 1} (B, 1, H, W)."""

    def __init__(self, task: TaskSpec):
        super().__init__()
        from monai.losses import DiceLoss

        self.task = task
        self.dice = DiceLoss(other_act=task.activate, batch=True)
        self.plain_dice = DiceLoss(batch=True)

    def forward(self, logits, target, mask=None):
        target = target.to(logits.dtype)
        if mask is None:
            return self.dice(logits, target) + F.binary_cross_entropy_with_logits(logits, target)
        target = target * mask
        dice = self.plain_dice(self.task.activate(logits) * mask, target)
        bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        return dice + _masked_mean(bce, mask)


class DenoiseLoss(nn.Module):
    """MSE between the activated output and the target intensities in [0, 1]."""

    def __init__(self, task: TaskSpec):
        super().__init__()
        self.task = task

    def forward(self, logits, target, mask=None):
        err = (self.task.activate(logits) - target) ** 2
        return err.mean() if mask is None else _masked_mean(err, mask)

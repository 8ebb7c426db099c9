"""Replay of the parent model's own predictions on the slices nobody checked.

Fine-tuning on one to three corrected slices alone pulls a good model towards those few
slices and it gets worse everywhere else (on the sample brain, Dice on the untouched
slices fell by 0.013 to 0.016 after 100 iterations). Each fine-tuning batch therefore
also holds patches of unchecked slices whose targets are what the *parent* model predicts
there (self-distillation, as in "learning without forgetting"): the corrections move the
model where a person said it was wrong, the anchors hold it where nobody said anything.
The weight of the anchors is the trust in the parent (see ``finetune``): a model that
already agrees with the corrections is held firmly, one that does not is let go.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from ..model.tasks import TaskSpec
from .data import PatchSampler


class Anchor:
    """Draws patches of unchecked slices labelled by the frozen parent network."""

    def __init__(self, parent: torch.nn.Module, task: TaskSpec, img: np.ndarray,
                 rows: list[int], patch: tuple[int, int], batch_size: int, seed: int,
                 device: torch.device, weight: float = 1.0, augment: bool = True):
        self.teacher = copy.deepcopy(parent).to(device).eval()
        self.task, self.device = task, device
        self.weight = float(weight)
        content = [float(np.ptp(img[i])) > 0 for i in rows]
        weights = np.array([1.0 if c else 0.1 for c in content])
        self.sampler = PatchSampler([img], [{}], [(0, i) for i in rows], weights, patch,
                                    batch_size, seed + 7919, flips=augment, intensity=augment)

    @torch.no_grad()
    def draw(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(image, parent's labels (B, 1, H, W), the anchor weight as a voxel mask)."""
        x = self.sampler.draw()["image"]
        probs = self.task.activate(self.teacher(x.to(self.device))).cpu()
        labels = self.task.decide(probs)[:, None].long()
        return x, labels, torch.full(labels.shape, self.weight)


def unchecked_rows(mask_slices: np.ndarray) -> list[int]:
    """Slices (axis 0 of an (S, 1, H, W) trust mask) without a single checked voxel."""
    flat = mask_slices.reshape(len(mask_slices), -1)
    return [int(i) for i in np.flatnonzero(~flat.any(axis=1))]

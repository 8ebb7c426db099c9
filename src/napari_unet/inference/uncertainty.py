"""Per-voxel uncertainty maps in [0, 1], so corrections start where the model is unsure.

- segmentation, N >= 2 classes: Shannon entropy of the softmax divided by log N
  (0 = one class certain, 1 = all classes equally likely);
- binary segmentation: Bernoulli entropy of the foreground probability divided by log 2;
- denoising: the spread of test-time-augmentation outputs (4 x variance of [0, 1]
  intensities, averaged over channels; 4 x variance is at most 1), or nothing without TTA.
"""

from __future__ import annotations

import math

import torch

from ..model.tasks import TaskSpec


def entropy_map(probs: torch.Tensor, task: TaskSpec) -> torch.Tensor:
    """Probabilities (B, C, H, W) -> normalised entropy (B, H, W), float32 in [0, 1]."""
    entr = torch.special.entr  # -p log p, 0 at p = 0, one pass
    p = probs.float()
    if task.is_binary:
        q = p[:, 0]
        h = (entr(q) + entr(1 - q)).div_(math.log(2))
    elif p.shape[1] < 2:
        return torch.zeros_like(p[:, 0])
    else:
        h = entr(p).sum(dim=1).div_(math.log(p.shape[1]))
    return h.clamp_(0.0, 1.0)


def spread_map(variance: torch.Tensor) -> torch.Tensor:
    """TTA variance (B, C, H, W) of [0, 1] intensities -> (B, H, W) float32 in [0, 1]."""
    return (4.0 * variance.float().mean(dim=1)).clamp_(0.0, 1.0)


MAX_CLASS_SUMS = 64  # more foreground classes are pooled into one (see agreement_sums)


def agreement_sums(probs: torch.Tensor, labels: torch.Tensor, task: TaskSpec) -> torch.Tensor:
    """Per slice and foreground class, the sums behind the model's own Dice estimate:
    (sum of p_c where the label is c, sum of p_c, voxels labelled c), shape (B, K, 3).

    If the labels were drawn from the probabilities, ``2 a / (s + n)`` would be the
    expected Dice of class c (:mod:`napari_unet.inference.quality`). Binary models have
    one class; over :data:`MAX_CLASS_SUMS` foreground classes, K = 1 (all pooled).
    """
    p = probs.float()
    if task.is_binary:
        q, y = p[:, 0], (labels == 1).float()
        sums = torch.stack([(q * y).sum((1, 2)), q.sum((1, 2)), y.sum((1, 2))], dim=-1)
        return sums[:, None]
    lab = labels.long().flatten(1)
    chosen = p.flatten(2).gather(1, lab[:, None])[:, 0]
    zeros = torch.zeros(p.shape[:2], dtype=p.dtype, device=p.device)
    agree = zeros.scatter_add(1, lab, chosen)
    count = zeros.scatter_add(1, lab, torch.ones_like(chosen))
    sums = torch.stack([agree, p.sum((2, 3)), count], dim=-1)[:, 1:]
    return sums.sum(1, keepdim=True) if sums.shape[1] > MAX_CLASS_SUMS else sums

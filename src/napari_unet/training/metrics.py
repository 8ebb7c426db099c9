"""Validation metrics over a whole held-out block (one figure per block, not per slice)."""

from __future__ import annotations

import numpy as np
import torch


class DiceCounter:
    """Accumulates per-class overlap over batches of label maps; Dice = 2|A∩B| / (|A|+|B|).

    A class absent from both prediction and truth gets NaN (not a perfect score).
    """

    def __init__(self, n_labels: int):
        self.inter = np.zeros(n_labels)
        self.total = np.zeros(n_labels)

    def add(self, pred: torch.Tensor, truth: torch.Tensor, mask: torch.Tensor | None = None):
        pred, truth = pred.reshape(-1).long(), truth.reshape(-1).long()
        if mask is not None:
            keep = mask.reshape(-1) > 0
            pred, truth = pred[keep], truth[keep]
        n = len(self.inter)
        both = torch.bincount(truth[pred == truth], minlength=n)[:n]
        self.inter += both.cpu().numpy()
        self.total += (torch.bincount(pred, minlength=n)[:n]
                       + torch.bincount(truth, minlength=n)[:n]).cpu().numpy()

    def per_class(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.total > 0, 2 * self.inter / self.total, np.nan)


def psnr(output: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB over all elements."""
    mse = torch.mean((output.double() - target.double()) ** 2).item()
    if mse == 0:
        return float("inf")
    return float(10.0 * np.log10(data_range**2 / mse))

"""The acceptance check: does an update agree better with the person's corrections?

Part of every corrected slice (square tiles, :data:`HOLD_OUT` of them) is kept out of
fine-tuning. Afterwards the old and the new model both predict the corrected slices, and
the update is recommended only if the new model agrees with the corrections on those
held-out tiles at least as well as the old one did (mean foreground Dice; voxel agreement
where the tiles hold no foreground). Tiles rather than scattered voxels, because a voxel
whose neighbours were trained on is no test at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

HOLD_OUT = 0.2  # fraction of the tiles of each corrected slice kept for the check
TILE = 16  # pixels: about a tenth of a slice side, larger than the UNet's 3x3 receptive step


def held_out_tiles(shape: tuple[int, int], seed: int, fraction: float = HOLD_OUT,
                   tile: int = TILE) -> np.ndarray:
    """A (rows, columns) boolean mask of randomly chosen square tiles."""
    rows, cols = -(-shape[0] // tile), -(-shape[1] // tile)
    n = rows * cols
    rng = np.random.default_rng(seed)
    pick = np.zeros(n, bool)
    pick[rng.choice(n, size=max(1, round(n * fraction)), replace=False)] = True
    grid = pick.reshape(rows, cols)
    return np.kron(grid, np.ones((tile, tile), bool))[: shape[0], : shape[1]]


@dataclass
class Agreement:
    """How well a prediction matches the corrections on the held-out voxels."""

    dice: float | None  # mean over foreground classes present; None when there are none
    accuracy: float

    @classmethod
    def of(cls, pred: np.ndarray, truth: np.ndarray, n_labels: int) -> Agreement:
        pred, truth = pred.ravel(), truth.ravel()
        scores = []
        for c in range(1, max(n_labels, 2)):
            total = int((pred == c).sum() + (truth == c).sum())
            if total:
                scores.append(2.0 * int(((pred == c) & (truth == c)).sum()) / total)
        accuracy = float((pred == truth).mean()) if pred.size else 1.0
        return cls(float(np.mean(scores)) if scores else None, accuracy)

def acceptance(before: Agreement, after: Agreement, voxels: int) -> tuple[dict, bool]:
    """The check as the widget shows it, and whether the update is recommended."""
    dice = before.dice is not None and after.dice is not None
    old, new = (before.dice, after.dice) if dice else (before.accuracy, after.accuracy)
    check = {"held_out_voxels": int(voxels), "measure": "Dice" if dice else "agreement",
             "before": round(old, 4), "after": round(new, 4)}
    return check, new >= old

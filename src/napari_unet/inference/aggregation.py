"""How the three planes' class probabilities are combined by default (``planes auto``).

A 2D net sees a voxel through the slice around it. On a scan of the whole head every
plane's slice shows that context as the net learned it (patches of the model's patch
size), and the planes' plain mean beats any one of them. A scan of part of the head (a
slab of a few dozen slices) gives the other two planes thin strips: the net sees a
fraction of its context, cut where the scan ends, and an intensity change across the slab
(a coil's bias field) becomes a steep gradient across each strip. On the bench, such
strips were confidently wrong together: averaged with equal weight they turned 0.93 /
0.94 (grey / white matter, the slab's own plane) into 0.83 / 0.75. So, per voxel:

1. **Context**: each plane's vote is the share of a patch-sized window centred on the
   voxel (in that plane's slice, at the model's pixel spacing) that lies inside the scan:
   1 everywhere on a whole-head scan; about 32/128 for a 32-slice slab's other planes.
2. **Agreement**: a *thin* plane, whose slices show less than :data:`THIN` of what the
   best-covered plane's show (a slab's other planes: 0.06..0.25 on the bench; a whole
   head's planes differ by less: 0.81 for the sample brain's narrowest against its
   widest, whose agreement never needed checking), counts only where its labels agree
   with that plane's on at least
   :data:`AGREE` of the voxels either calls foreground. Two planes that both see the
   anatomy agree on 0.91..0.96 of it (the bundled model, every bench condition); strips
   made unreliable by the slab fell to 0.65..0.87.

Failing that, the best-covered plane decides alone, as ``planes one`` would.

Rules that did worse on ``bench/planes.py`` (55 conditions, the shipped model; within
0.005 of the better of one and all on): this rule 52; context weights alone 36; context
times each plane's per-voxel confidence 34 (its 4th power 31); a geometric mean of the
planes' probabilities, context-weighted 34, plain 20; the plain mean where the two thin
planes agree and the best plane's confidence is under 0.7, 32. The model is about as
confident where a slab's strips are wrong as where they are right.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

AGREE = 0.9  # share of the foreground on which a thin plane must agree to count
THIN = 0.5  # coverage against the best-covered plane's under which a plane is thin
ALL = (0, 1, 2)


def in_slice(plane: int) -> tuple[int, int]:
    """The array axes a slice of ``plane`` spans (rows, columns)."""
    return tuple(a for a in ALL if a != plane)


def steps(spacing, pixel_spacing, plane: int) -> tuple[float, float]:
    """Model pixels per voxel along the two in-slice axes of ``plane`` (1: the scan's own
    pixels go through the net, as without a recorded pixel spacing)."""
    if spacing is None or pixel_spacing is None:
        return 1.0, 1.0
    rows, cols = in_slice(plane)
    return float(spacing[rows]) / pixel_spacing[0], float(spacing[cols]) / pixel_spacing[1]


def window_share(n: int, step: float, patch: int) -> np.ndarray:
    """Per index 0..n-1: the share of a ``patch``-pixel window centred on it that lies
    inside the ``n`` voxels (``step`` model pixels each)."""
    centre = (np.arange(n, dtype=np.float64) + 0.5) * step
    half = patch / 2.0
    inside = np.minimum(centre + half, n * step) - np.maximum(centre - half, 0.0)
    return np.clip(inside / patch, 0.0, 1.0).astype(np.float32)


def coverage(shape, plane: int, plane_steps, patch) -> float:
    """The share of a patch that a whole slice of ``plane`` can fill (1: no smaller than
    the patch either way)."""
    return float(np.prod([min(1.0, shape[a] * s / p)
                          for a, s, p in zip(in_slice(plane), plane_steps, patch, strict=True)]))


def context_weight(shape, plane: int, plane_steps, patch) -> np.ndarray:
    """The context each voxel has in ``plane``'s slice (rule 1): float32, broadcastable to
    ``shape[:3]`` (length 1 along ``plane``)."""
    rows, cols = in_slice(plane)
    r = window_share(shape[rows], plane_steps[0], patch[0])
    c = window_share(shape[cols], plane_steps[1], patch[1])
    out = np.ones((1, 1, 1), np.float32)
    out = out * r.reshape([-1 if a == rows else 1 for a in ALL])
    return out * c.reshape([-1 if a == cols else 1 for a in ALL])


def agreement(labels: np.ndarray, reference: np.ndarray) -> float:
    """Share of the voxels either map calls foreground (label > 0) where both agree;
    1.0 when neither has any."""
    fg = (labels > 0) | (reference > 0)
    n = int(np.count_nonzero(fg))
    return 1.0 if n == 0 else float(np.count_nonzero((labels == reference) & fg)) / n


def thin(coverages: Sequence[float], plane: int, best: int) -> bool:
    """Whether ``plane``'s slices show too little of the scan for its vote to count
    unchecked (rule 2)."""
    return coverages[plane] < THIN * coverages[best]


def order(coverages: Sequence[float], axis: int) -> list[int]:
    """Planes best-covered first (ties: ``axis``, the scan's own plane, first)."""
    return sorted(ALL, key=lambda a: (-round(coverages[a], 6), a != axis, a))


def aggregate(probabilities: Sequence[np.ndarray], weights: Sequence[np.ndarray | float]
              ) -> np.ndarray:
    """The weighted mean of per-plane probabilities (Z, Y, X, C): sum(w p) / sum(w), each
    weight broadcastable to (Z, Y, X). A plane left out has weight 0."""
    num = sum(np.asarray(w, np.float32)[..., None] * p
              for p, w in zip(probabilities, weights, strict=True))
    den = sum(np.asarray(w, np.float32) for w in weights)
    return (num / np.maximum(den, np.float32(1e-12))[..., None]).astype(np.float32)


def combine(probabilities: Sequence[np.ndarray], labels: Sequence[np.ndarray], axis: int,
            spacing=None, pixel_spacing=None, patch=(128, 128)) -> tuple[np.ndarray, list[int]]:
    """The whole rule on in-memory arrays: each plane's probabilities (Z, Y, X, C) and
    labels (index = the array axis its slices are cut along), ``axis`` the scan's own
    plane; returns the combined probabilities and the planes that counted.
    (``inference.planes`` streams the same rule one plane at a time.)"""
    shape = labels[0].shape[:3]
    plane_steps = [steps(spacing, pixel_spacing, a) for a in ALL]
    cover = [coverage(shape, a, plane_steps[a], patch) for a in ALL]
    planes = order(cover, axis)
    best = planes[0]
    joined = [a for a in planes if not thin(cover, a, best)
              or agreement(labels[a], labels[best]) >= AGREE]
    weights = [context_weight(shape, a, plane_steps[a], patch) for a in joined]
    return aggregate([probabilities[a] for a in joined], weights), joined

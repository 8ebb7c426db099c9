"""Small synthetic volumes for training tests: MR-like discs of two tissue classes."""

from __future__ import annotations

import numpy as np

TINY = dict(base=4, patch_size=(32, 32), batch_size=4)


def blobs(seed: int = 0, shape=(6, 48, 48)) -> tuple[np.ndarray, np.ndarray]:
    """An MR-like volume (arbitrary units, noisy) with discs of two tissue classes."""
    rng = np.random.default_rng(seed)
    _, y, x = np.mgrid[: shape[0], : shape[1], : shape[2]]
    lab = np.zeros(shape, np.uint8)
    for z in range(shape[0]):
        for c in (1, 2, 2):
            cy, cx, r = rng.uniform(10, shape[1] - 10), rng.uniform(10, shape[2] - 10), \
                rng.uniform(4, 9)
            lab[z][(y[z] - cy) ** 2 + (x[z] - cx) ** 2 < r**2] = c
    img = 100 + 300 * (lab == 1) + 600 * (lab == 2) + rng.normal(0, 30, shape)
    return img.astype(np.float32), lab


def smooth_volume(seed: int = 0, shape=(6, 48, 48)) -> np.ndarray:
    """A clean image volume for denoising: smooth shading plus bright discs."""
    _, y, x = np.mgrid[: shape[0], : shape[1], : shape[2]].astype(np.float32)
    shading = 200 + 150 * np.sin(y / 7.0) * np.cos(x / 9.0)
    return (shading + 400 * (blobs(seed, shape)[1] > 0)).astype(np.float32)


def falls(losses: list[float], k: int = 8) -> bool:
    return float(np.mean(losses[-k:])) < float(np.mean(losses[:k]))

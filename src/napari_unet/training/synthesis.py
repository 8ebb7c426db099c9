"""Images synthesised from label maps, SynthSeg-style (Billot et al., MedIA 2023).

A net trained on one scan learns that scan's contrast; drawn from the labels instead, a
patch shows the same anatomy with every tissue at a random intensity, so the net has to
find the boundaries from shape and context. Each class is split into a few sub-regions
by the training image's own intensity (the scalp, skull and CSF of a brain's background,
say), each drawn as a Gaussian with its own random mean and spread, then blurred (partial
volume); the usual domain randomisation (bias field, noise, resolution, ...) follows.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from scipy.cluster.vq import kmeans2

SUBREGIONS = 3  # intensity bands per class
MAX_SPREAD = 0.06  # the largest within-region standard deviation (normalised range)
BLUR = (0.3, 1.2)  # Gaussian blur sigma, pixels (one per batch)


def subregion_map(image: np.ndarray, labels: np.ndarray, n_labels: int,
                  bands: int = SUBREGIONS) -> np.ndarray:
    """``labels * bands + band``: each class cut into intensity clusters of ``image``.

    One-dimensional k-means (from the class's quantiles), so that ties, such as the air
    of a background class, stay in one cluster.
    """
    out = np.asarray(labels, np.int16) * bands
    for c in range(n_labels):
        inside = labels == c
        if not inside.any():
            continue
        values = image[inside].astype(np.float64)
        start = np.unique(np.quantile(values, (np.arange(bands) + 0.5) / bands))
        if len(start) < 2:
            continue
        with warnings.catch_warnings():  # an emptied cluster just means fewer bands
            warnings.simplefilter("ignore", UserWarning)
            centres, _ = kmeans2(values, start, minit="matrix", missing="warn")
        edges = np.sort(centres)
        out[inside] += np.searchsorted((edges[1:] + edges[:-1]) / 2, values).astype(np.int16)
    return out


def synthesize(regions: torch.Tensor, n_regions: int, generator: torch.Generator,
               blur: float) -> torch.Tensor:
    """(B, 1, H, W) images from (B, 1, H, W) region maps: random Gaussian per region, blurred."""
    b = regions.shape[0]
    means = torch.rand((b, n_regions), generator=generator, device=regions.device)
    spread = MAX_SPREAD * torch.rand((b, n_regions), generator=generator,
                                     device=regions.device)
    idx = regions.long().clamp(0, n_regions - 1).flatten(1)
    mu = means.gather(1, idx).view_as(regions)
    sd = spread.gather(1, idx).view_as(regions)
    noise = torch.randn(regions.shape, generator=generator, device=regions.device)
    return gaussian_blur(mu + sd * noise, blur).clamp(0.0, 1.0)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B, C, H, W), reflecting at the edges."""
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = (k / k.sum()).to(x.dtype)
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"),
                 k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"),
                    k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)

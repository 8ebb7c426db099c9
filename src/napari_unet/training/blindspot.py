"""Blind-spot masking for self-supervised denoising (Noise2Void / Noise2Self style).

With no clean reference, a network trained to map a noisy image to itself learns the
identity. Hiding a random subset of pixels (each replaced by a random neighbour) and
scoring the output only there forces the network to predict each pixel from its
surroundings; pixel-independent noise cannot be predicted, so the network learns the
signal. The loss mask marks the hidden pixels.
"""

from __future__ import annotations

import torch

RADIUS = 2  # neighbours come from the 5 x 5 window around each hidden pixel


def blindspot(x: torch.Tensor, fraction: float, generator: torch.Generator
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """(masked input, loss mask) for a batch ``x`` of shape (B, C, H, W).

    About ``fraction`` of the pixels (at least one per image) are replaced, in every
    channel, by the value of a random neighbour at most ``RADIUS`` pixels away (never
    the pixel itself). The mask is 1 at replaced pixels, shaped (B, 1, H, W).
    """
    b, _, h, w = x.shape
    dev = x.device  # the generator lives there too: no host round trip per batch
    hide = torch.rand((b, 1, h, w), generator=generator, device=dev) < fraction
    first = torch.zeros((b, 1, h * w), dtype=torch.bool, device=dev)
    first[:, :, 0] = True  # guarantee one hidden pixel per image (randomly placed below)
    perm = torch.randperm(h * w, generator=generator, device=dev)
    hide |= first[:, :, perm].view(b, 1, h, w)
    dy, dx = _offsets((b, 1, h, w), generator, dev)
    rows = torch.arange(h, device=dev).view(1, 1, h, 1).expand(b, 1, h, w)
    cols = torch.arange(w, device=dev).view(1, 1, 1, w).expand(b, 1, h, w)
    src_r = _reflect(rows + dy, h)
    src_c = _reflect(cols + dx, w)
    flat = (src_r * w + src_c).view(b, 1, h * w).expand(-1, x.shape[1], -1)
    neighbour = torch.gather(x.reshape(b, x.shape[1], h * w), 2, flat).view_as(x)
    return torch.where(hide, neighbour, x), hide.to(x.dtype)


def _offsets(shape, generator, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Random non-zero (dy, dx) in [-RADIUS, RADIUS]^2."""
    side = 2 * RADIUS + 1
    k = torch.randint(0, side * side - 1, shape, generator=generator, device=device)
    k = k + (k >= (side * side) // 2).long()  # skip the centre
    return k // side - RADIUS, k % side - RADIUS


def _reflect(i: torch.Tensor, n: int) -> torch.Tensor:
    """Mirror indices that fall outside [0, n) back in (so a neighbour is never the pixel)."""
    i = torch.where(i < 0, -i, i)
    i = torch.where(i > n - 1, 2 * (n - 1) - i, i)
    return i.clamp(0, n - 1)

"""Augmentation and domain randomisation of whole batches, as torch ops on the training device.

MONAI's transforms change one sample at a time, with numpy random states on the host;
at device speed (hundreds of patches a second) that, not the network, would set the
pace. Each op here is the batched form of a MONAI transform with the same
parametrisation, drawn per patch from one :class:`torch.Generator` on the device:

=====================  ===========================================================
op                     MONAI transform it follows
=====================  ===========================================================
:func:`histogram_shift`  ``RandHistogramShift`` (monotone piecewise-linear remap)
:func:`gamma`            ``RandAdjustContrast`` on the normalised [0, 1] scale
:func:`bias_field`       ``RandBiasField`` (exp of products of Legendre polynomials,
                         degree 3), evaluated over the whole slice, not the patch
:func:`low_resolution`   ``RandSimulateLowResolution`` (area down, bilinear up)
:func:`gibbs`            ``RandGibbsNoise`` (k-space truncated to a disc)
:func:`noise`            ``RandGaussianNoise`` / ``RandRicianNoise``
:func:`scale_shift`      ``RandScaleIntensity`` + ``RandShiftIntensity``
geometry (sampler)       ``RandAffine`` (rotation, zoom, flips) via ``grid_sample``
=====================  ===========================================================

:data:`LIGHT` is the everyday augmentation (flips and mild contrast);
:data:`DOMAIN` randomises what differs between scanners and sites, so that a model
trained on one scan holds on others (Billot et al., SynthSeg, MedIA 2023, argue the same
for synthetic contrasts).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .noise import add_noise


@dataclass(frozen=True)
class Randomization:
    """Ranges of the random changes: each intensity op is applied to a patch with
    probability ``p``, rotation and zoom together with probability ``p_spatial``.

    Intensities are on the normalised scale (0..1). ``zoom`` < 1 shrinks the anatomy,
    as coarser voxels do; ``noise`` is the sigma as a fraction of the range; ``gibbs`` is
    MONAI's alpha (0 = no ringing); ``low_res`` the zoom of the down-then-up resampling.
    A range of ``(1, 1)`` or ``0`` turns an op off.
    """

    p: float = 0.5
    p_spatial: float = 1.0
    rotate: float = 0.0  # degrees, +-
    zoom: tuple[float, float] = (1.0, 1.0)  # log-uniform
    stretch: float = 0.0  # extra per-axis zoom, log-uniform +-
    histogram: int = 0  # control points of the histogram shift (0 = off)
    gamma: tuple[float, float] = (1.0, 1.0)  # log-uniform
    bias: float = 0.0  # |Legendre coefficients| of the log bias field
    low_res: tuple[float, float] = (1.0, 1.0)
    gibbs: tuple[float, float] = (0.0, 0.0)
    noise: tuple[float, float] = (0.0, 0.0)
    scale: float = 0.0  # intensity x (1 + u * scale), u in [-1, 1]
    shift: float = 0.0  # intensity + u * shift

    @property
    def geometric(self) -> bool:
        return self.rotate > 0 or self.zoom != (1.0, 1.0) or self.stretch > 0


NONE = Randomization(p=0.0)
LIGHT = Randomization(p=0.4, gamma=(0.75, 1.35), scale=0.1, shift=0.05)
DOMAIN = Randomization(p=0.25, p_spatial=0.5, rotate=15.0, zoom=(0.6, 1.35), stretch=0.1,
                       histogram=6, gamma=(0.5, 2.0), bias=0.35, low_res=(0.35, 1.0),
                       gibbs=(0.0, 0.55), noise=(0.0, 0.09), scale=0.15, shift=0.08)

BIAS_DEGREE = 3


class Draw:
    """Random numbers for one batch of ``n``: from a generator on the device (no host sync),
    and from a host generator for the few draws that size a tensor."""

    def __init__(self, generator: torch.Generator, host: torch.Generator, n: int,
                 device: torch.device):
        self.g, self.host, self.n, self.device = generator, host, n, device

    def host_uniform(self, low: float, high: float) -> float:
        return float(torch.empty(()).uniform_(low, high, generator=self.host))

    def uniform(self, low: float, high: float, *shape: int) -> torch.Tensor:
        u = torch.rand((self.n, *shape), generator=self.g, device=self.device)
        return low + (high - low) * u

    def log_uniform(self, low: float, high: float) -> torch.Tensor:
        return torch.exp(self.uniform(math.log(low), math.log(high)))

    def coin(self, p: float) -> torch.Tensor:
        return self.uniform(0.0, 1.0) < p


def _per(x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """A per-sample value shaped to broadcast over (B, C, H, W)."""
    return v.view(-1, *([1] * (x.dim() - 1)))


def _apply(x: torch.Tensor, on: torch.Tensor, changed: torch.Tensor) -> torch.Tensor:
    return torch.where(_per(x, on), changed, x)


def intensity(x: torch.Tensor, coords: torch.Tensor, r: Randomization, d: Draw) -> torch.Tensor:
    """The intensity chain in acquisition order: contrast, coil, resolution, k-space, noise."""
    if r.histogram:
        x = _apply(x, d.coin(r.p), histogram_shift(x, _control_points(d, r.histogram)))
    if r.gamma != (1.0, 1.0):
        x = _apply(x, d.coin(r.p), gamma(x, d.log_uniform(*r.gamma)))
    if r.bias > 0:
        coeff = d.uniform(-r.bias, r.bias, n_bias_coefficients())
        x = _apply(x, d.coin(r.p), bias_field(x, coords, coeff))
    if r.low_res != (1.0, 1.0):  # one zoom per batch: F.interpolate takes one size
        zoom = d.host_uniform(*r.low_res)
        x = _apply(x, d.coin(r.p), low_resolution(x, zoom))
    if r.gibbs != (0.0, 0.0):
        x = _apply(x, d.coin(r.p), gibbs(x, d.uniform(*r.gibbs)))
    if r.noise != (0.0, 0.0):
        sigma = d.uniform(*r.noise)
        x = _apply(x, d.coin(r.p), noise(x, sigma, d.coin(0.5), d))
    if r.scale or r.shift:
        on = d.coin(r.p)
        x = _apply(x, on, scale_shift(x, d.uniform(-r.scale, r.scale),
                                      d.uniform(-r.shift, r.shift)))
    return x


def _control_points(d: Draw, k: int) -> torch.Tensor:
    """Sorted random inner control points in (0, 1) with fixed ends: (B, k)."""
    inner = torch.sort(d.uniform(0.0, 1.0, k - 2), dim=1).values
    zeros, ones = torch.zeros_like(inner[:, :1]), torch.ones_like(inner[:, :1])
    return torch.cat([zeros, inner, ones], dim=1)


def histogram_shift(x: torch.Tensor, floating: torch.Tensor) -> torch.Tensor:
    """Map equally spaced reference points 0..1 to ``floating`` (B, K), linearly between."""
    b, k = floating.shape
    flat = x.reshape(b, -1).clamp(0.0, 1.0)
    pos = flat * (k - 1)
    i = pos.floor().clamp(max=k - 2).long()
    frac = pos - i
    lo, hi = floating.gather(1, i), floating.gather(1, i + 1)
    return (lo + frac * (hi - lo)).view_as(x)


def gamma(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``x ** gamma`` on the normalised [0, 1] scale (per-sample gamma)."""
    return x.clamp(0.0, 1.0) ** _per(x, g)


def n_bias_coefficients(degree: int = BIAS_DEGREE) -> int:
    return (degree + 1) * (degree + 2) // 2


def legendre(t: torch.Tensor, degree: int = BIAS_DEGREE) -> list[torch.Tensor]:
    """P_0..P_degree at ``t`` (Bonnet's recursion)."""
    p = [torch.ones_like(t), t]
    for n in range(1, degree):
        p.append(((2 * n + 1) * t * p[n] - n * p[n - 1]) / (n + 1))
    return p[: degree + 1]


def bias_field(x: torch.Tensor, coords: torch.Tensor, coeff: torch.Tensor) -> torch.Tensor:
    """``x * exp(sum c_ij P_i(y) P_j(x))`` over the pairs j <= i, as MONAI orders them.

    ``coords``: (B, H, W, 2) positions (x, y) in [-1, 1] across the whole slice, so the
    field varies over the head, not over each patch.
    """
    py, px = legendre(coords[..., 1]), legendre(coords[..., 0])
    field = torch.zeros_like(coords[..., 0])
    k = 0
    for i in range(BIAS_DEGREE + 1):
        for j in range(i + 1):
            field = field + coeff[:, k].view(-1, 1, 1) * py[i] * px[j]
            k += 1
    return x * torch.exp(field).unsqueeze(1)


def low_resolution(x: torch.Tensor, zoom: float) -> torch.Tensor:
    """Area-average down to ``zoom`` of the size, bilinear back up (a coarser acquisition)."""
    h, w = x.shape[-2:]
    small = F.interpolate(x, size=(max(1, round(h * zoom)), max(1, round(w * zoom))),
                          mode="area")
    return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)


def gibbs(x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Keep the k-space disc of radius ``(1 - alpha) * max(H, W) * sqrt(2) / 2`` (MONAI's)."""
    h, w = x.shape[-2:]
    k = torch.fft.fftshift(torch.fft.fftn(x.float(), dim=(-2, -1)), dim=(-2, -1))
    yy = torch.arange(h, device=x.device, dtype=torch.float32) - (h - 1) / 2
    xx = torch.arange(w, device=x.device, dtype=torch.float32) - (w - 1) / 2
    dist = torch.sqrt(yy.view(-1, 1) ** 2 + xx.view(1, -1) ** 2)
    radius = (1 - alpha) * max(h, w) * math.sqrt(2) / 2
    k = k * (dist <= _per(x, radius)).to(k.dtype)
    out = torch.fft.ifftn(torch.fft.ifftshift(k, dim=(-2, -1)), dim=(-2, -1))
    return out.real.to(x.dtype)


def noise(x: torch.Tensor, sigma: torch.Tensor, rician: torch.Tensor, d: Draw) -> torch.Tensor:
    """Gaussian, or Rician (the magnitude of complex Gaussian noise) where ``rician``."""
    s = _per(x, sigma)
    return torch.where(_per(x, rician), add_noise(x, "rician", s, d.g),
                       add_noise(x, "gaussian", s, d.g))


def scale_shift(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    return x * (1 + _per(x, scale)) + _per(x, shift)


def affine_matrices(d: Draw, r: Randomization, flips: bool) -> torch.Tensor:
    """(B, 2, 2) maps from patch pixel offsets to slice pixel offsets (rotate, zoom, flip)."""
    on = d.coin(r.p_spatial)
    angle = torch.where(on, d.uniform(-r.rotate, r.rotate) * (math.pi / 180), 0.0)
    zoom = d.log_uniform(*r.zoom) if r.zoom != (1.0, 1.0) else torch.ones_like(angle)
    sy = sx = torch.where(on, 1 / zoom, 1.0)
    if r.stretch > 0:
        sy = sy * torch.where(on, d.log_uniform(1 / (1 + r.stretch), 1 + r.stretch), 1.0)
        sx = sx * torch.where(on, d.log_uniform(1 / (1 + r.stretch), 1 + r.stretch), 1.0)
    if flips:
        sy = sy * torch.where(d.coin(0.5), -1.0, 1.0)
        sx = sx * torch.where(d.coin(0.5), -1.0, 1.0)
    cos, sin = torch.cos(angle), torch.sin(angle)
    return torch.stack([torch.stack([cos * sy, -sin * sx], -1),
                        torch.stack([sin * sy, cos * sx], -1)], -2)

"""What the training scans' intensities look like after the model's normalisation.

A model only knows the scans it learned from. Stored in its file (``intensity_profile``),
this lets every result say how far its scan is from them (:func:`distance`):

- per training scan (up to :data:`MAX_SCANS`; more are merged with their nearest), the
  quantiles of the normalised intensities inside the scan's signal (the voxels above an
  Otsu threshold: the head, not the air around it), and for segmentation models the
  quantiles of each class's voxels in that signal (up to :data:`MAX_CLASSES` classes);
- a robust reading of each scan's noise (:func:`noise_level`; for a supervised denoiser,
  of the scan with the most noise it was trained to remove, whose range is kept as
  ``noise_added``).

The distance of a new scan is its 1-Wasserstein distance to the nearest training scan
(mean absolute difference of the quantile functions, in units of the normalised range):
0.1 means the intensities sit a tenth of the range away from any scan the model knows.
Pure numpy; the quantiles are estimated from at most :data:`MAX_SAMPLES` voxels a scan.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

LEVELS = np.linspace(0.0, 1.0, 21)  # the quantiles stored: 0, 5, ..., 100 %
MAX_SCANS = 32
MAX_CLASSES = 64
MAX_SAMPLES = 1_000_000
SAME_SCAN = 1e-3  # a W1 distance this small is the same scan (a merge keeps one)
MIN_VOXELS = 64  # fewer voxels of a class (or of signal) give no quantiles
NOISE_SLICES = 24  # slices read by the noise estimate
MAD_TO_SIGMA = 1.4826
IMMERKAER = 6.0  # sigma of the Immerkaer residual of unit white noise


@dataclass(frozen=True)
class ScanProfile:
    """One training scan (or a merged group of them)."""

    quantiles: tuple[float, ...]  # normalised intensities of its signal at LEVELS
    voxels: int  # signal voxels counted (the weight in a merge)
    noise: float = 0.0  # noise_level() of the scan, normalised units
    classes: tuple[tuple[float, ...] | None, ...] = ()  # per class, at LEVELS; None: absent
    scans: int = 1  # training scans merged into this one

    def to_dict(self) -> dict:
        d = {"quantiles": _rounded(self.quantiles), "voxels": int(self.voxels),
             "noise": round(float(self.noise), 6), "scans": int(self.scans)}
        if self.classes:
            d["classes"] = [None if q is None else _rounded(q) for q in self.classes]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ScanProfile:
        classes = tuple(None if q is None else tuple(float(v) for v in q)
                        for q in d.get("classes", ()))
        return cls(tuple(float(v) for v in d["quantiles"]), int(d["voxels"]),
                   float(d.get("noise", 0.0)), classes, int(d.get("scans", 1)))


@dataclass(frozen=True)
class IntensityProfile:
    """The ``intensity_profile`` of a model file."""

    scans: tuple[ScanProfile, ...]
    noise_added: tuple[float, float] | None = None  # supervised denoising: levels learned

    def to_dict(self) -> dict:
        d = {"levels": len(LEVELS), "scans": [s.to_dict() for s in self.scans]}
        if self.noise_added is not None:
            d["noise_added"] = [float(v) for v in self.noise_added]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> IntensityProfile:
        added = d.get("noise_added")
        return cls(tuple(ScanProfile.from_dict(s) for s in d["scans"]),
                   None if added is None else (float(added[0]), float(added[1])))

    @property
    def noise_learned(self) -> float:
        """The most noise the model learned from, as :func:`noise_level` reads it: in its
        scans (a supervised denoiser's with the most noise it added, see profile_of)."""
        return max((s.noise for s in self.scans), default=0.0)

    def merged(self, other: IntensityProfile | None) -> IntensityProfile:
        """This profile plus ``other``'s scans (a model that learned from both); a scan
        already here (the same quantiles: fine-tuned on again) is not added twice."""
        if other is None:
            return self
        new = tuple(s for s in other.scans if not any(
            w1(s.quantiles, t.quantiles) < SAME_SCAN for t in self.scans))
        added = _wider(self.noise_added, other.noise_added)
        return IntensityProfile(_capped(self.scans + new), added)


def _wider(a, b):
    if a is None or b is None:
        return a or b
    return (min(a[0], b[0]), max(a[1], b[1]))


def _rounded(values) -> list[float]:
    return [round(float(v), 5) for v in values]


# ----------------------------------------------------------------------------- measuring
def normalised_sample(array: np.ndarray, normalization) -> tuple[np.ndarray, np.ndarray]:
    """(strided voxel indices, their normalised intensities) of at most MAX_SAMPLES voxels
    (the first channel of a multi-channel scan)."""
    a = np.asarray(array)
    a = a[..., 0] if a.ndim == 4 else a
    step = a.size // MAX_SAMPLES + 1
    flat = a.reshape(-1)[::step].astype(np.float32)
    fitted = normalization.fit(a)
    x = (flat - fitted.low) / (fitted.high - fitted.low)
    if normalization.clip:
        x = np.clip(x, 0.0, 1.0)
    keep = np.isfinite(x)
    idx = np.arange(0, a.size, step)[keep]
    return idx, x[keep]


def otsu(x: np.ndarray, bins: int = 256) -> float:
    """The Otsu threshold of ``x``: the split that best separates two intensity groups."""
    lo, hi = float(x.min()), float(x.max())
    if hi <= lo:
        return lo
    hist, edges = np.histogram(x, bins=bins, range=(lo, hi))
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)[:-1].astype(float)
    w1 = hist.sum() - w0
    m0 = np.cumsum(hist * centres)[:-1] / np.maximum(w0, 1)
    m1 = (np.sum(hist * centres) - np.cumsum(hist * centres)[:-1]) / np.maximum(w1, 1)
    between = w0 * w1 * (m0 - m1) ** 2
    return float(edges[1:][np.argmax(between)])


def quantiles(x: np.ndarray) -> tuple[float, ...] | None:
    if x.size < MIN_VOXELS:
        return None
    return tuple(float(v) for v in np.quantile(x, LEVELS))


def scan_profile(array: np.ndarray, normalization, labels: np.ndarray | None = None,
                 n_classes: int = 0) -> ScanProfile | None:
    """The profile of one scan (``labels``: its label map, for segmentation models);
    None when the scan has too little signal to say anything."""
    idx, x = normalised_sample(array, normalization)
    if x.size < MIN_VOXELS:
        return None
    signal = x > otsu(x)
    q = quantiles(x[signal])
    if q is None:
        return None
    classes = ()
    if labels is not None and 0 < n_classes <= MAX_CLASSES:
        lab = np.asarray(labels).reshape(-1)[idx]
        classes = tuple(quantiles(x[signal & (lab == c)]) for c in range(n_classes))
    return ScanProfile(q, int(signal.sum()), noise_level(array, normalization), classes)


def noise_level(array: np.ndarray, normalization) -> float:
    """Noise sigma in normalised units (a share of the model's intensity range): the
    median absolute Immerkaer residual (a Laplacian-like high-pass that cancels smooth
    anatomy) inside the signal, over :data:`NOISE_SLICES` slices along axis 0, as a robust
    sigma (1.4826 x MAD). Heavy noise also widens a percentile range, so the reading grows
    a little more slowly than the noise (15% Rician noise on the sample T1 reads 12.6%)."""
    a = np.asarray(array)
    a = a[..., 0] if a.ndim == 4 else a
    if min(a.shape[1:3]) < 3:
        return 0.0
    fitted = normalization.fit(a)
    rows = np.unique(np.linspace(0, len(a) - 1, min(len(a), NOISE_SLICES)).astype(int))
    x = (a[rows].astype(np.float32) - fitted.low) / (fitted.high - fitted.low)
    x = np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=0.0)
    r = (x[:, :-2, :-2] + x[:, :-2, 2:] + x[:, 2:, :-2] + x[:, 2:, 2:]
         - 2 * (x[:, 1:-1, :-2] + x[:, 1:-1, 2:] + x[:, :-2, 1:-1] + x[:, 2:, 1:-1])
         + 4 * x[:, 1:-1, 1:-1])
    centre = x[:, 1:-1, 1:-1]
    inside = centre > otsu(centre[:: max(1, centre.size // MAX_SAMPLES + 1)].reshape(-1))
    r = r[inside]
    if r.size < MIN_VOXELS:
        return 0.0
    return float(MAD_TO_SIGMA * np.median(np.abs(r - np.median(r))) / IMMERKAER)


def profile_of(arrays, normalization, labels=None, n_classes: int = 0,
               noise_added=None, noise_kind: str = "rician") -> IntensityProfile | None:
    """The profile of training scans (``labels`` pair with them for segmentation).

    ``noise_added``: a supervised denoiser's noise levels (one, or the range drawn from);
    each scan's noise is then read with the most of that noise added (``noise_kind``), so
    that a scan to denoise is compared with the noisiest the model learned from by the
    same reading.
    """
    labels = labels or [None] * len(arrays)
    added = None if noise_added is None else tuple(float(v) for v in
                                                   np.broadcast_to(noise_added, (2,)))
    scans = []
    for a, lab in zip(arrays, labels, strict=True):
        scan = scan_profile(a, normalization, lab, n_classes)
        if scan is not None and added is not None:
            noisy = with_noise(a, noise_kind, added[1], normalization)
            scan = replace(scan, noise=noise_level(noisy, normalization))
        if scan is not None:
            scans.append(scan)
    if not scans:
        return None
    return IntensityProfile(_capped(tuple(scans)), added)


def with_noise(array: np.ndarray, kind: str, level: float, normalization,
               seed: int = 0) -> np.ndarray:
    """``array`` with synthetic noise of ``level`` x its normalised range, as training adds
    it (``napari_unet.training.noise``): gaussian, rician or poisson."""
    a = np.asarray(array, np.float32)
    fitted = normalization.fit(a)
    span = fitted.high - fitted.low
    x = (a - fitted.low) / span
    rng = np.random.default_rng(seed)
    if kind == "poisson":
        peak = 1.0 / (level * level)
        x = rng.poisson(np.clip(x, 0, None) * peak).astype(np.float32) / peak
    else:
        x = x + level * rng.standard_normal(a.shape, dtype=np.float32)
        if kind == "rician":
            x = np.hypot(x, level * rng.standard_normal(a.shape, dtype=np.float32))
    return x * span + fitted.low


# ----------------------------------------------------------------------------- comparing
def w1(a, b) -> float:
    """1-Wasserstein distance of two distributions given by quantiles at LEVELS."""
    d = np.abs(np.asarray(a, float) - np.asarray(b, float))
    return float(np.mean((d[:-1] + d[1:]) / 2))  # the trapezoid rule on the even levels


def _capped(scans: tuple[ScanProfile, ...]) -> tuple[ScanProfile, ...]:
    """At most MAX_SCANS profiles: the nearest pair merged until they fit."""
    scans = list(scans)
    while len(scans) > MAX_SCANS:
        pairs = [(w1(a.quantiles, b.quantiles), i, j) for i, a in enumerate(scans)
                 for j, b in enumerate(scans) if i < j]
        _, i, j = min(pairs)
        scans[i] = _merge(scans[i], scans[j])
        del scans[j]
    return tuple(scans)


def _merge(a: ScanProfile, b: ScanProfile) -> ScanProfile:
    """Two scan profiles as one: the quantiles of the voxel-weighted mixture."""
    wa, wb = a.voxels / (a.voxels + b.voxels), b.voxels / (a.voxels + b.voxels)
    classes = ()
    if len(a.classes) == len(b.classes):
        classes = tuple(_mix(qa, qb, wa, wb) if qa and qb else (qa or qb)
                        for qa, qb in zip(a.classes, b.classes, strict=True))
    return ScanProfile(_mix(a.quantiles, b.quantiles, wa, wb), a.voxels + b.voxels,
                       max(a.noise, b.noise), classes, a.scans + b.scans)


def _mix(qa, qb, wa: float, wb: float) -> tuple[float, ...]:
    fine = np.linspace(0, 1, 201)
    va, vb = np.interp(fine, LEVELS, qa), np.interp(fine, LEVELS, qb)
    values = np.concatenate([va, vb])
    weights = np.concatenate([np.full(201, wa), np.full(201, wb)])
    order = np.argsort(values)
    cdf = (np.cumsum(weights[order]) - weights[order] / 2) / weights.sum()
    return tuple(float(v) for v in np.interp(LEVELS, cdf, values[order]))


def distance(profile: IntensityProfile, scan: ScanProfile) -> float:
    """How far ``scan`` is from the nearest training scan (W1 of the signal quantiles)."""
    return min(w1(s.quantiles, scan.quantiles) for s in profile.scans)


def class_distance(profile: IntensityProfile, scan: ScanProfile) -> float | None:
    """The voxel-weighted mean W1 distance of the classes, to the nearest training scan
    (None without class quantiles on both sides)."""
    best = None
    for s in profile.scans:
        pairs = [(a, b) for a, b in zip(s.classes, scan.classes, strict=False) if a and b]
        if not pairs:
            continue
        d = float(np.mean([w1(a, b) for a, b in pairs]))
        best = d if best is None else min(best, d)
    return best


def is_finite_profile(p: IntensityProfile) -> bool:
    values = [v for s in p.scans for v in s.quantiles]
    return all(math.isfinite(v) for v in values)


def with_noise_added(p: IntensityProfile, levels) -> IntensityProfile:
    return replace(p, noise_added=None if levels is None else tuple(
        float(v) for v in np.broadcast_to(levels, (2,))))

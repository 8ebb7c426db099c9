"""Intensity normalisation, stored in every model file so inference reproduces training.

Two kinds, both computed once per volume (never per slice, so slices stay comparable):

- ``percentile`` (MR): the volume's ``lower``/``upper`` percentiles map to 0 and 1;
- ``window`` (CT): a fixed Hounsfield window ``lower``..``upper`` maps to 0 and 1.

Denoising maps the network's [0, 1] output back with :meth:`Fitted.inverse`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

from ..errors import TaskError

# Percentiles of a volume are estimated from at most this many voxels (exact for small ones).
_MAX_SAMPLES = 2_000_000


@dataclass(frozen=True)
class Normalization:
    kind: Literal["percentile", "window"] = "percentile"
    lower: float = 0.5
    upper: float = 99.5
    clip: bool = True

    def __post_init__(self):
        object.__setattr__(self, "lower", float(self.lower))  # canonical for the model hash
        object.__setattr__(self, "upper", float(self.upper))
        if self.kind not in ("percentile", "window"):
            raise TaskError(
                f"normalisation kind must be 'percentile' or 'window', not {self.kind!r}")
        if not self.lower < self.upper:
            raise TaskError(f"normalisation needs lower < upper (got {self.lower}, {self.upper})")
        if self.kind == "percentile" and not (self.lower >= 0 and self.upper <= 100):
            raise TaskError("percentile normalisation needs 0 <= lower < upper <= 100")

    @classmethod
    def default(cls, kind: str = "percentile", bounds=None) -> Normalization:
        """0.5..99.5 percentiles (MR) or a -1000..1000 HU window (CT) unless bounds given."""
        low, high = bounds or ((0.5, 99.5) if kind == "percentile" else (-1000.0, 1000.0))
        return cls(kind, low, high)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Normalization:
        return cls(d.get("kind", "percentile"), float(d["lower"]), float(d["upper"]),
                   bool(d.get("clip", True)))

    def fit(self, volume: np.ndarray) -> Fitted:
        """Intensity bounds of this volume (finite voxels only)."""
        if self.kind == "window":
            return Fitted(self.lower, self.upper, self.clip)
        flat = np.asarray(volume).reshape(-1)
        if flat.size > _MAX_SAMPLES:
            flat = flat[:: flat.size // _MAX_SAMPLES + 1]
        flat = flat[np.isfinite(flat)] if flat.dtype.kind == "f" else flat
        if flat.size == 0:
            return Fitted(0.0, 1.0, self.clip)
        lo, hi = np.percentile(flat, [self.lower, self.upper]).astype(float)
        if hi <= lo:  # constant image: avoid dividing by zero
            hi = lo + 1.0
        return Fitted(float(lo), float(hi), self.clip)


@dataclass(frozen=True)
class Fitted:
    """Bounds fitted to one volume; ``forward`` to [0, 1], ``inverse`` back."""

    low: float
    high: float
    clip: bool = True

    def forward(self, x):
        """numpy or torch array -> float32 in [0, 1] (MONAI's ScaleIntensityRange)."""
        from monai.transforms import ScaleIntensityRange

        t = ScaleIntensityRange(self.low, self.high, 0.0, 1.0, clip=self.clip,
                                dtype=np.float32)
        return t(x)

    def inverse(self, y):
        return y * (self.high - self.low) + self.low

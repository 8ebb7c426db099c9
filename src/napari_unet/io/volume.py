"""The Volume contract: a slices-first array plus the geometry needed to write results back.

``array`` axis 0 is the slowest axis as SimpleITK gives it (for an axial scan, the axial
slice index), then rows, then columns, then an optional trailing channel axis only when
the file truly has channels. ``spacing``, ``origin`` and ``direction`` are in the same
axis order; ``affine`` maps array indices (i, j, k) to world millimetres.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Volume:
    array: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    # direction[:, a] is the world unit vector of array axis a
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))
    modality: str = "OT"
    # where the volume came from and what a writer needs to write outputs back aligned
    # (format, path, NIfTI header / DICOM series UID and instances, ...); see io.source
    source: Any = None
    name: str = "volume"

    def __post_init__(self):
        self.spacing = tuple(float(s) for s in self.spacing)
        self.origin = tuple(float(o) for o in self.origin)
        self.direction = np.asarray(self.direction, dtype=float).reshape(3, 3)

    @property
    def has_channels(self) -> bool:
        return self.array.ndim == 4

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        return tuple(self.array.shape[:3])

    @property
    def n_channels(self) -> int:
        return self.array.shape[3] if self.has_channels else 1

    @property
    def affine(self) -> np.ndarray:
        """4x4 matrix: world = affine @ [i, j, k, 1] (array index order)."""
        a = np.eye(4)
        a[:3, :3] = self.direction * np.asarray(self.spacing)[None, :]
        a[:3, 3] = self.origin
        return a

"""The Volume contract: a slices-first array plus the geometry needed to write results back.

``array`` axis 0 is the slowest axis as SimpleITK gives it (for an axial scan, the axial
slice index), then rows, then columns, then an optional trailing channel axis only when
the file truly has channels. ``spacing`` and ``direction`` are in the same axis order;
``affine`` maps array indices (i, j, k) to world millimetres.

World convention: LPS (DICOM/ITK). ``origin`` is the LPS point (x, y, z) of voxel
(0, 0, 0) and ``direction[:, a]`` the LPS unit vector of array axis a; see
``napari_unet.io.geometry`` for every conversion (NIfTI RAS, SimpleITK, napari layers).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .source import Source


@dataclass
class Volume:
    array: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    # direction[:, a] is the world unit vector of array axis a
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))
    modality: str = "OT"
    # where the volume came from, for writing outputs back aligned (see io.source)
    source: Source = None
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

    def info(self) -> dict:
        """Everything but the array (geometry, modality, name, source, shape, dtype).

        Small and picklable: napari layers keep it in ``metadata`` so that results drawn
        on the layer can be written back in the source geometry (``Volume.from_info``).
        """
        return {
            "spacing": list(self.spacing),
            "origin": list(self.origin),
            "direction": self.direction.tolist(),
            "modality": self.modality,
            "name": self.name,
            "source": self.source,
            "shape": list(self.array.shape),
            "dtype": str(self.array.dtype),
        }

    @classmethod
    def from_info(cls, info: dict, array: np.ndarray) -> Volume:
        """A Volume with ``array`` and the geometry/source of ``info`` (from ``info()``)."""
        return cls(
            array=array,
            spacing=info["spacing"],
            origin=info["origin"],
            direction=np.asarray(info["direction"], float),
            modality=info.get("modality", "OT"),
            source=info.get("source"),
            name=info.get("name", "volume"),
        )

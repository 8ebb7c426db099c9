"""Where a Volume came from: what a writer needs to put outputs back in the same geometry.

Small, frozen and picklable (napari layers keep them in ``metadata``; Dask ships them to
workers). ``None`` means an array made in memory: outputs get a fresh header from the
Volume's geometry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


class ScanWarning(UserWarning):
    """Something about a scan was assumed or repaired while reading it (1 mm for a missing
    PixelSpacing, the qform for a broken sform, a malformed slice left out, ...).

    The same text is kept in ``Volume.source.warnings``, so reports can show it later.
    """


@dataclass(frozen=True)
class NiftiSource:
    path: str
    header: bytes  # the raw header block: outputs keep its qform/sform codes and units
    nifti_version: int = 1
    volume_index: int | None = None
    channels: bool = False
    warnings: tuple[str, ...] = field(default_factory=tuple)  # geometry that was assumed

    @property
    def files(self) -> tuple[str, ...]:
        return (self.path,)


@dataclass(frozen=True)
class DicomSource:
    path: str  # the file or folder the series was read from
    files: tuple[str, ...]  # one per slice (or one multi-frame file), in slice order
    sop_instance_uids: tuple[str, ...]
    series_uid: str = ""
    study_uid: str = ""
    frame_of_reference_uid: str = ""
    multi_frame: bool = False
    warnings: tuple[str, ...] = field(default_factory=tuple)  # geometry that was assumed
    # each file's (or frame's) array slice when blank slices stand in for missing ones
    slice_index: tuple[int, ...] | None = None
    # each array slice's distance (mm) from the first along the slice axis, where the
    # slices are unevenly spaced (the geometry's mean spacing misplaces them)
    slice_positions: tuple[float, ...] | None = None


Source = NiftiSource | DicomSource | None


def source_files(source: Source) -> list[Path]:
    """Every input file behind a source (outputs must never replace one of them)."""
    if source is None:
        return []
    return [Path(f) for f in (source.path, *source.files)]

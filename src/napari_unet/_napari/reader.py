"""npe2 reader: NIfTI files, DICOM files and DICOM folders as Image layers in millimetres.

Layers use array-index order (z, y, x) with ``scale`` = spacing and ``translate`` = origin
projected on the scan's axes, so napari's world coordinates are physical millimetres for
axis-aligned scans; oblique scans also get the residual rotation as ``affine``
(``io.geometry.layer_geometry``). The source ``Volume`` is kept in
``metadata["napari_unet_volume"]`` so results can be written back in its geometry.
A folder with several series opens one layer per series.

Paths this reader does not handle give ``None`` (napari tries other readers); files it
handles but cannot read raise ``VolumeReadError``, which napari shows as a notification.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from ..errors import VolumeReadError
from ..io.formats import has_dicom_suffix, is_nifti_path
from .layers import volume_layer_kwargs

MAX_PROBED_FILES = 20


def get_reader(path: str | list[str]):
    """Return ``read_layers`` if every path is NIfTI, DICOM or a folder with DICOM, else None."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    if paths and all(_accepts(Path(p)) for p in paths):
        return read_layers
    return None


def _accepts(path: Path) -> bool:
    if path.is_dir():
        return _has_dicom(path)
    return is_nifti_path(path) or has_dicom_suffix(path)


def _has_dicom(folder: Path) -> bool:
    """Cheap probe: a .dcm file, or a DICOM header among the first few files (walked
    lazily, so dropping a huge folder that holds no DICOM costs little)."""
    from ..io.dicom_header import read_header

    probed = 0
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(n for n in names if not n.startswith(".")):
            f = Path(root, name)
            if has_dicom_suffix(f) or read_header(f)[0] is not None:
                return True
            probed += 1
            if probed >= MAX_PROBED_FILES:
                return False
    return False


def read_layers(path: str | list[str]) -> list[tuple]:
    """Layer data tuples for every path (every image series of a folder)."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    layers = []
    for p in map(Path, paths):
        layers += _folder_layers(p) if p.is_dir() else [_layer(_read(p))]
    return layers


def _folder_layers(folder: Path) -> list[tuple]:
    from ..io.dicom import read_all_series

    results = read_all_series(folder)
    volumes = [v for _, v in results if not isinstance(v, VolumeReadError)]
    errors = [str(v) for _, v in results if isinstance(v, VolumeReadError)]
    if not volumes:
        raise VolumeReadError("\n".join(errors))
    for message in errors:  # the readable series open; the others are reported
        warnings.warn(message, stacklevel=2)
    return [_layer(volume) for volume in volumes]


def _read(path: Path):
    from ..io import read_volume

    return read_volume(path)


def _layer(volume) -> tuple:
    kwargs = volume_layer_kwargs(volume)
    if volume.has_channels:
        kwargs["channel_axis"] = 3
        kwargs["name"] = [f"{volume.name} [{c}]" for c in range(volume.n_channels)]
    return volume.array, kwargs, "image"

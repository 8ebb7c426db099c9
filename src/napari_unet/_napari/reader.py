"""npe2 reader: NIfTI files, DICOM files and DICOM folders as layers in LPS millimetres.

- Scans open as Image layers, label maps as Labels layers with their class names and
  colours (``io.labels``: NIfTI written by napari-unet or named like labels, DICOM SEG).
  A folder opens every image series, and every DICOM SEG in it on the grid of the series
  it references.
- Layers show radiologically with anatomical axis labels and mm units
  (``io.geometry.layer_geometry``, ``radiological``); the status bar reads LPS
  millimetres. The source ``Volume`` is kept in ``metadata["napari_unet_volume"]`` so
  results and edits are written back in its exact geometry.
- Paths this reader does not handle give ``None``; files it handles but cannot read
  raise ``VolumeReadError``, which napari shows as a notification.

Which reader napari picks is set by reader preferences (``preferences``), which
napari-unet registers for its file types when it first runs.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from ..errors import VolumeReadError
from ..io.formats import has_dicom_suffix, is_nifti_path
from .layers import class_colormap, class_features, volume_layer_kwargs

MAX_PROBED_FILES = 20
LABELS_OPACITY = 0.5


def get_reader(path: str | list[str]):
    """Return ``read_layers`` if every path is NIfTI, DICOM or a folder with DICOM, else None."""
    from .preferences import register_reader_preferences

    register_reader_preferences()
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
    """Layer data tuples for every path (every series and SEG of a folder)."""
    from .radiological import follow_current_viewer

    paths = [path] if isinstance(path, (str, Path)) else list(path)
    layers = []
    for p in map(Path, paths):
        layers += _folder_layers(p) if p.is_dir() else [_file_layer(p)]
    follow_current_viewer()
    return layers


def _file_layer(path: Path) -> tuple:
    from ..io import read_volume
    from ..io.dicom_header import read_header
    from ..io.labels import is_dicom_seg, nifti_label_map, read_dicom_seg

    if not is_nifti_path(path):
        ds, _ = read_header(path)
        if ds is not None and is_dicom_seg(ds):
            return labels_layer(read_dicom_seg(path))
    volume = read_volume(path)
    label_map = nifti_label_map(volume, path) if is_nifti_path(path) else None
    return labels_layer(label_map) if label_map is not None else image_layer(volume)


def _folder_layers(folder: Path) -> list[tuple]:
    from ..io.dicom import read_all_series
    from ..io.dicom_header import read_header
    from ..io.labels import read_dicom_seg, seg_series_uid
    from ..io.series import scan_folder

    scan = scan_folder(folder)
    segs = [f for f, reason in scan[0].skipped if reason.startswith("SEG")]
    try:
        results = read_all_series(folder, scan)
    except VolumeReadError:
        if not segs:
            raise
        results = []
    volumes = [v for _, v in results if not isinstance(v, VolumeReadError)]
    errors = [str(v) for _, v in results if isinstance(v, VolumeReadError)]
    layers = [image_layer(volume) for volume in volumes]
    by_series = {v.source.series_uid: v for v in volumes}
    for f in segs:
        try:
            ds, _ = read_header(f)
            layers.append(labels_layer(read_dicom_seg(f, by_series.get(seg_series_uid(ds)))))
        except VolumeReadError as e:
            errors.append(str(e))
    if not layers:
        raise VolumeReadError("\n".join(errors))
    for message in errors:  # the readable series open; the others are reported
        warnings.warn(message, stacklevel=2)
    return layers


def image_layer(volume) -> tuple:
    kwargs = volume_layer_kwargs(volume)
    if volume.has_channels:
        kwargs["channel_axis"] = 3
        kwargs["name"] = [f"{volume.name} [{c}]" for c in range(volume.n_channels)]
    return volume.array, kwargs, "image"


def labels_layer(label_map) -> tuple:
    """A Labels layer tuple: class names as ``features`` and one colour per class."""
    kwargs = {**volume_layer_kwargs(label_map.volume), "opacity": LABELS_OPACITY}
    names = label_map.class_names
    if names:
        kwargs.update(features=class_features(names),
                      colormap=class_colormap(len(names), label_map.class_codes))
    return label_map.volume.array, kwargs, "labels"

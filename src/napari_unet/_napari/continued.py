"""Continue correcting labels saved earlier: a result layer that starts from them.

A person corrects for an hour, saves the labels and comes back another day: the scan and
those labels open from files, and the inference widget's *continue from* runs the model
on the scan but gives the result layer the saved labels (labels of a gantry-tilted scan,
saved resampled onto an orthogonal grid, are put back on its voxels: exactly, since each
slice only moved within its plane; so are labels of a scan with unevenly spaced slices,
saved on even slices through its own). The model's own answer stays the
layer's reference, so the correction loop counts each slice where the saved labels differ
from it as the person's edit: what it learns from, and never overwrites.
"""

from __future__ import annotations

import numpy as np

from ..errors import NapariUnetError
from .layers import data_to_world, layer_kind


def labels_layers(viewer) -> list:
    """The 3D Labels layers a result could start from."""
    return [ly for ly in viewer.layers if layer_kind(ly) == "labels" and ly.data.ndim == 3]


def continue_problem(start, image) -> str | None:
    """Why ``start`` cannot seed a result on ``image`` (None when it can, or is None)."""
    if start is None or image is None or _offset(start, image) is not None \
            or _tilt_grid(start, image) is not None or _even_index(start, image) is not None:
        return None
    if tuple(start.data.shape) != tuple(image.data.shape[:3]):
        return (f"the labels {start.name!r} ({_shape(start)}) do not lie on the voxels of "
                f"{image.name!r} ({_shape(image)}): continue from labels of this scan")
    return (f"the labels {start.name!r} lie elsewhere in space than {image.name!r}: "
            "continue from labels saved on this scan")


def start_labels(start, image, task) -> np.ndarray:
    """``start``'s labels on ``image``'s grid (a DICOM SEG may hold only the slices with
    labels: the others are background) in the model's label type, checked against its
    classes."""
    data = np.asarray(start.data)
    outside = (data < 0) | (data >= task.n_labels)
    if outside.any():
        values = ", ".join(str(int(v)) for v in np.unique(data[outside])[:5])
        raise NapariUnetError(f"the labels {start.name!r} hold label {values}, which the "
                              f"model does not have ({task.numbered_classes()}): pick the "
                              "model they were made with")
    grid = _tilt_grid(start, image)
    if grid is not None:  # saved resampled from this tilted scan: back onto its voxels
        from ..io.orthogonal import OutputGrid, resample

        back = OutputGrid(data_to_world(image), tuple(image.data.shape[:3]))
        return resample(data, grid.affine, back, nearest=True).astype(task.label_dtype)
    index = _even_index(start, image)
    if index is not None:  # saved on even slices through this scan's uneven ones
        return data[index].astype(task.label_dtype)
    full = np.zeros(image.data.shape[:3], task.label_dtype)
    full[_box(_offset(start, image), data.shape)] = data
    return full


def _tilt_grid(start, image):
    """The orthogonal grid of a tilted ``image`` when ``start`` lies on it: labels
    napari-unet saved from this scan, resampled because ITK refuses sheared NIfTI files
    (``io.orthogonal``). Nearest-neighbour there and back gives the labels exactly."""
    from ..io.orthogonal import output_grid

    grid = output_grid(data_to_world(image), image.data.shape[:3])
    if not grid.resampled or tuple(start.data.shape) != grid.shape:
        return None
    return grid if np.allclose(data_to_world(start), grid.affine, atol=1e-3) else None


def _even_index(start, image) -> np.ndarray | None:
    """Where each slice of an unevenly spaced ``image`` lies among ``start``'s, when
    ``start`` holds labels napari-unet saved from it on evenly spaced slices
    (``io.orthogonal.even_stack``); else None. Each even slice took the labels of its
    nearest scan slice, so the slice nearest each scan slice gives them back exactly."""
    from ..io.orthogonal import even_stack
    from .layers import layer_volume

    volume = layer_volume(image)
    along = getattr(getattr(volume, "source", None), "slice_positions", None)
    if along is None or volume.spatial_shape != tuple(image.data.shape[:3]):
        return None
    affine, shape, _ = even_stack(data_to_world(image), image.data.shape[:3], along)
    if tuple(start.data.shape) != shape or not np.allclose(data_to_world(start), affine,
                                                          atol=1e-3):
        return None
    step = float(np.linalg.norm(affine[:3, 0]))
    return np.rint(np.asarray(along) / step).astype(int)


def _offset(start, image) -> np.ndarray | None:
    """Where ``start``'s first voxel sits in ``image``'s grid, when its voxels are the
    image's (same spacing and orientation, whole voxels apart, inside it); else None."""
    to_image = np.linalg.inv(data_to_world(image)) @ data_to_world(start)
    offset = to_image[:3, 3]
    whole = np.round(offset)
    if not (np.allclose(to_image[:3, :3], np.eye(3), atol=1e-3)
            and np.allclose(offset, whole, atol=1e-3)):
        return None
    end = whole + np.asarray(start.data.shape)
    if (whole < 0).any() or (end > np.asarray(image.data.shape[:3])).any():
        return None
    return whole.astype(int)


def _box(offset: np.ndarray, shape) -> tuple[slice, ...]:
    return tuple(slice(int(o), int(o) + int(n)) for o, n in zip(offset, shape, strict=True))


def edited_slices(labels: np.ndarray, output: np.ndarray, axis: int) -> int:
    """How many slices along ``axis`` differ from the model's answer (as the correction
    session will count them)."""
    from ..correction.session import differing_slices

    return int(differing_slices(np.moveaxis(labels, axis, 0),
                                np.moveaxis(output, axis, 0)).sum())


def _shape(layer) -> str:
    return " x ".join(str(n) for n in layer.data.shape)

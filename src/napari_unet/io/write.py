"""``write_volume``: results written as NIfTI in the geometry of the scan they came from.

Writes are atomic (a hidden temporary file in the target folder, then a rename), so a
failed or interrupted write leaves no partial output, and the source scan is never
overwritten. Every NIfTI is written on orthogonal axes, the only kind ITK reads: a scan
whose axes are really sheared (gantry tilt) has its results resampled
(``io.orthogonal``).
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import os
import uuid
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..errors import VolumeWriteError
from .source import ScanWarning, source_files
from .volume import Volume


def output_dtype(data: np.ndarray) -> np.dtype:
    """Labels: uint8, or uint16 above 255; other integers kept; floats as float32."""
    if data.dtype == bool:
        return np.dtype(np.uint8)
    if np.issubdtype(data.dtype, np.integer):
        lo, hi = (int(data.min()), int(data.max())) if data.size else (0, 0)
        if lo >= 0 and hi <= 255:
            return np.dtype(np.uint8)
        if lo >= 0 and hi <= 65535:
            return np.dtype(np.uint16)
        return data.dtype.newbyteorder("=")
    return np.dtype(np.float32)


def nifti_extension(path: Path) -> str:
    name = path.name.lower()
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            return ext
    raise VolumeWriteError(f"{path}: write NIfTI outputs as .nii.gz or .nii.")


def check_target(path: Path, like: Volume | None) -> None:
    """Refuse to overwrite the scan the output belongs to."""
    target = path.resolve()
    if like is not None and any(s.resolve() == target for s in source_files(like.source)):
        raise VolumeWriteError(f"{path}: is the input scan; choose another output path.")


def _read_umask() -> int:
    """The process umask (read once, at import, since reading it means setting it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def make_shareable(path: str | os.PathLike) -> None:
    """Give a file the mode a plain ``open`` would (mkstemp and safetensors make 0600)."""
    os.chmod(path, 0o666 & ~_UMASK)


# set by ``io.new_files.only_new_files``: the final rename must not replace a file
NEW_FILES_ONLY = contextvars.ContextVar("napari_unet_new_files_only", default=False)
_NO_HARD_LINKS = {errno.EPERM, errno.EXDEV, errno.EMLINK, errno.ENOSYS,
                  getattr(errno, "EOPNOTSUPP", errno.ENOSYS), getattr(errno, "ENOTSUP",
                                                                  errno.ENOSYS)}


NAME_MAX = 255  # bytes in one file name on the usual file systems


def temp_name(name: str, ext: str) -> str:
    """``.<name>.<random>.part<ext>``, ``name`` cut short so that the whole fits in a
    file name wherever ``name`` itself does (a long output name failed in its temporary
    file only)."""
    tail = f".{uuid.uuid4().hex[:8]}.part{ext}"
    room = NAME_MAX - 1 - len(tail.encode())
    head = name.encode()[:max(room, 0)].decode("utf-8", "ignore")
    return f".{head}{tail}"


@contextlib.contextmanager
def atomic_path(path: Path, ext: str):
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success (where
    ``NEW_FILES_ONLY`` is set, only when no file has that name: ``FileExistsError``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(temp_name(path.name, ext))
    try:
        yield tmp
        if NEW_FILES_ONLY.get():
            _place_new(tmp, path)
        else:
            os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _place_new(tmp: Path, path: Path) -> None:
    """Give ``tmp`` the name ``path`` only if nothing has it: a hard link fails atomically
    when the name is taken (a rename would replace); file systems without hard links get
    a check just before the rename."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
        if os.path.lexists(path):
            raise FileExistsError(errno.EEXIST, "File exists", str(path)) from None
        os.replace(tmp, path)


def unwritable_folder(path: Path) -> Path | None:
    """The folder that would stop ``path`` (a file or folder still to be made) from being
    created, i.e. its nearest existing ancestor when that is no writable folder; else None."""
    path = Path(path).absolute()
    folder = next(p for p in path.parents if p.exists())
    return None if folder.is_dir() and os.access(folder, os.W_OK | os.X_OK) else folder


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write a small text file (report, manifest, page) so readers never see half of it."""
    path = Path(path)
    with atomic_path(path, path.suffix) as tmp:
        tmp.write_text(text, encoding="utf-8")
        make_shareable(tmp)


def _cast(data: np.ndarray, dtype: np.dtype, path: Path) -> np.ndarray:
    """``data`` as ``dtype``, refused when a finite value would not survive the cast (an
    overflow to inf, or an integer wrapping round): a file must hold what was written."""
    if data.dtype != dtype and data.size and dtype.kind in "iuf" and data.dtype.kind in "iuf":
        finite = data[np.isfinite(data)] if data.dtype.kind == "f" else data
        info = np.finfo(dtype) if dtype.kind == "f" else np.iinfo(dtype)
        if finite.size and (finite.min() < info.min or finite.max() > info.max):
            raise VolumeWriteError(f"{path}: values {finite.min():g}..{finite.max():g} do not "
                                   f"fit in {dtype} ({info.min:g}..{info.max:g})")
    return np.ascontiguousarray(data, dtype=dtype)


class ResampledWarning(ScanWarning):
    """A result was written resampled onto an orthogonal grid (the scan's slices are
    stacked obliquely, or its axes sheared): ITK-based tools refuse sheared NIfTI files;
    or onto evenly spaced slices (the scan's are not): a NIfTI grid's slices are even."""


def resampled_note(name: str, grid) -> str:
    """The warning for a result written on the orthogonal grid ``grid``."""
    return (f"{name}: its voxel axes are sheared ({grid.shear_degrees:.1f} degrees: gantry "
            "tilt or slices stacked obliquely), which ITK-based tools refuse; NIfTI outputs "
            f"are resampled onto an orthogonal grid of {' x '.join(map(str, grid.shape))} "
            "voxels on the scan's own slice planes (labels nearest-neighbour, images "
            "linear), as dcm2niix's _Tilt files; a DICOM SEG references the slices as "
            "acquired.")


def even_note(name: str, affine: np.ndarray, shape) -> str:
    """The warning for a result put on evenly spaced slices (``affine``, ``shape``)."""
    step = float(np.linalg.norm(np.asarray(affine, float)[:3, 0]))
    return (f"{name}: its slices are unevenly spaced; NIfTI outputs are resampled onto "
            f"{shape[0]} evenly spaced slices {step:.3g} mm apart through the scan's own "
            "(labels nearest-neighbour, images linear), as dcm2niix's _Eq files, so that "
            "each slice stays at its ImagePositionPatient; a DICOM SEG references the "
            "slices as acquired.")


def _even_slices(like: Volume):
    """(affine, shape, at): ``like``'s grid, or evenly spaced slices through its own where
    a DICOM series' slices are unevenly spaced (``DicomSource.slice_positions``; ``at``:
    ``io.orthogonal.even_stack``), else ``at`` None."""
    from .orthogonal import even_stack

    along = getattr(like.source, "slice_positions", None)
    if along is None:
        return like.affine, like.spatial_shape, None
    return even_stack(like.affine, like.spatial_shape, along)


def nifti_grid(like: Volume):
    """The orthogonal grid (``io.orthogonal.OutputGrid``) NIfTI results of ``like`` are
    written on: its own voxels unless its axes are really sheared or its slices unevenly
    spaced."""
    from .orthogonal import output_grid

    affine, shape, at = _even_slices(like)
    grid = output_grid(affine, shape)
    if at is None:
        return grid
    return replace(grid, resampled=True, even_slices=True)


def write_volume(
    data: np.ndarray, path: str | Path, like: Volume | None = None, dtype=None,
    class_names=None, interpolation: str | None = None,
) -> Path:
    """Write ``data`` (slices-first like ``like.array``, optional trailing channel axis).

    Geometry: the scan's (``like``: NIfTI input keeps its header and affine; DICOM input
    the series geometry); without ``like``, SimpleITK's default (1 mm, array axis 0 =
    superior). qform and sform are written alike. A scan whose voxel axes are really
    sheared (gantry tilt) gets its results resampled onto an orthogonal grid, a DICOM
    series with unevenly spaced slices onto even ones through its own (``nifti_grid``,
    with a ``ResampledWarning``): ``interpolation`` "nearest" (default
    for labels: ``class_names`` given, booleans, integers) or "linear" (default for
    floats). ``dtype`` defaults to ``output_dtype`` (labels uint8/uint16, images
    float32). ``class_names`` (labels only) are stored in the file, which then reopens
    as labels (``io.labels``).
    """
    from . import geometry, nifti
    from .orthogonal import along_slices, output_grid, resample

    path = Path(path)
    ext = nifti_extension(path)
    data = np.asarray(data)
    if like is None:
        like = Volume(data, direction=geometry.DEFAULT_WORLD.T)
    if data.ndim not in (3, 4) or tuple(data.shape[:3]) != tuple(like.spatial_shape):
        raise VolumeWriteError(
            f"{path}: data of shape {data.shape} does not match the scan's spatial shape "
            f"{like.spatial_shape} (slices-first, optional trailing channel axis)."
        )
    if interpolation not in (None, "nearest", "linear"):
        raise ValueError(f"interpolation {interpolation!r}: use 'nearest' or 'linear'")
    check_target(path, like)
    data = _cast(data, np.dtype(output_dtype(data) if dtype is None else dtype), path)
    try:
        affine, shape, at = _even_slices(like)
        grid = output_grid(affine, shape)
    except VolumeWriteError as e:
        raise VolumeWriteError(f"{path}: {e}") from None
    nearest = interpolation == "nearest" or (interpolation is None and (
        class_names is not None or data.dtype.kind in "biu"))
    if at is not None:
        data = along_slices(data, at, nearest, label=str(path))
        warnings.warn(even_note(like.name, affine, shape), ResampledWarning, stacklevel=2)
    if grid.resampled:
        data = resample(data, affine, grid, nearest, label=str(path))
        warnings.warn(resampled_note(like.name, grid), ResampledWarning, stacklevel=2)
    image = nifti.nifti_image(data, like, class_names=class_names, affine=grid.affine)
    with atomic_path(path, ext) as tmp:
        image.to_filename(str(tmp))
    return path

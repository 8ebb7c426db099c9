"""NIfTI-1/NIfTI-2 (.nii, .nii.gz) reading and writing with nibabel.

Reading transposes nibabel's (i, j, k) data to slices-first (k, j, i) and converts the
RAS affine to the LPS Volume geometry (``io.geometry``). Scale slope/intercept are applied
(the array becomes float32); unscaled data keep their dtype in native byte order.

4D files: ``volume_index`` picks one volume; without it, a 4th axis of at most
``MAX_CHANNELS`` entries is read as channels (multi-contrast), a longer one (fMRI, DWI) is
refused with a message that says how to pick a volume. Vector-valued voxels stored the
NIfTI way (shape X, Y, Z, 1, C) count as 4D; other 5D and larger files are refused.

NIfTI has no modality field: ``guess_modality`` says "CT" when the minimum intensity is
below -500 (air is -1000 HU; MR intensities are not negative), else "MR". Intensity
normalisation defaults use it.

Writing with a NIfTI ``like`` copies the source header (qform/sform and their codes), so
the output loads in nibabel with exactly the input's affine; any other ``like`` writes the
Volume geometry as sform and qform with code 1 (scanner).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import VolumeReadError
from . import geometry
from .formats import nifti_stem
from .source import NiftiSource
from .volume import Volume

MAX_CHANNELS = 4
# intensities this low only occur in CT (air is -1000 HU); used to guess the modality
CT_MIN_THRESHOLD = -500.0


def read_nifti(path: str | Path, volume_index: int | None = None) -> Volume:
    """Read a .nii/.nii.gz file into a slices-first Volume (see the module docstring)."""
    import nibabel as nib

    path = Path(path)
    try:
        img = nib.load(str(path))
        if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
            raise VolumeReadError(f"{path}: not a NIfTI image ({type(img).__name__}).")
        data = _pick_volume(path, _load_data(img), volume_index)
    except VolumeReadError:
        raise
    except Exception as e:  # nibabel/gzip/numpy raise many types for broken files
        raise VolumeReadError(
            f"{path}: cannot read this NIfTI file ({type(e).__name__}: {e}). "
            "It may be empty, truncated or not a NIfTI file."
        ) from e
    channels = data.ndim == 4
    array = np.ascontiguousarray(data.transpose(2, 1, 0, 3) if channels else data.T)
    spacing, origin, direction = geometry.geometry_from_affine(
        geometry.volume_affine_from_nifti(img.affine)
    )
    source = NiftiSource(
        path=str(path.resolve()),
        header=bytes(img.header.binaryblock),
        nifti_version=2 if isinstance(img, nib.Nifti2Image) else 1,
        volume_index=volume_index,
        channels=channels,
    )
    return Volume(array, spacing, origin, direction, guess_modality(array), source,
                  nifti_stem(path))


def _load_data(img) -> np.ndarray:
    # nibabel moves scl_slope/inter from the loaded header to the array proxy
    slope = getattr(img.dataobj, "slope", 1.0)
    inter = getattr(img.dataobj, "inter", 0.0)
    if slope == 1.0 and inter == 0.0:
        data = np.asarray(img.dataobj)
        return data.astype(data.dtype.newbyteorder("="), copy=False)
    return img.get_fdata(dtype=np.float32)


def _pick_volume(path: Path, data: np.ndarray, volume_index: int | None) -> np.ndarray:
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim == 5 and data.shape[3] == 1:  # NIfTI vector voxels: dim[5] holds them
        data = data[:, :, :, 0, :]
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim > 4:
        raise VolumeReadError(
            f"{path}: {data.ndim}D NIfTI (shape {data.shape}) is not supported; "
            "use a 3D file, or 4D with volumes or channels on the 4th axis."
        )
    if data.ndim == 3:
        if volume_index not in (None, 0):
            raise VolumeReadError(f"{path}: 3D file has no volume {volume_index}.")
        return data
    n = data.shape[3]
    if volume_index is not None:
        if not -n <= volume_index < n:
            raise VolumeReadError(f"{path}: volume_index {volume_index} out of range 0..{n - 1}.")
        return data[..., volume_index]
    if n > MAX_CHANNELS:
        raise VolumeReadError(
            f"{path}: 4D file with {n} volumes; pick one with volume_index=0..{n - 1} "
            f"(a 4th axis of at most {MAX_CHANNELS} is read as channels)."
        )
    return data


def guess_modality(array: np.ndarray) -> str:
    """'CT' when intensities go well below zero (air is -1000 HU), else 'MR'."""
    numeric = array.size and np.issubdtype(array.dtype, np.number)
    return "CT" if numeric and float(np.min(array)) < CT_MIN_THRESHOLD else "MR"


def nifti_image(data: np.ndarray, like: Volume, class_names=None):
    """A nibabel image of the slices-first ``data`` in the geometry of ``like``.

    ``class_names`` marks ``data`` as a label map (intent ``label``, names in a header
    extension: ``io.labels``), so that it reopens as labels.
    """
    img = _nifti_image(data, like)
    if class_names is not None:
        from .labels import class_names_extension

        img.header.set_intent("label")
        img.header.extensions.append(class_names_extension(class_names))
    return img


def _nifti_image(data: np.ndarray, like: Volume):
    import nibabel as nib

    xyz = data.transpose(2, 1, 0, 3) if data.ndim == 4 else data.T
    src = like.source
    if isinstance(src, NiftiSource):
        klass = nib.Nifti2Image if src.nifti_version == 2 else nib.Nifti1Image
        hdr = klass.header_class(binaryblock=src.header, check=False)
        if hdr.endianness != "<":
            hdr = hdr.as_byteswapped("<")
        hdr.set_data_shape(xyz.shape)
        hdr.set_data_dtype(xyz.dtype)
        hdr.set_slope_inter(None, None)
        hdr.set_intent("none")
        hdr["cal_min"] = hdr["cal_max"] = 0
        hdr["descrip"] = b"napari-unet"
        return klass(xyz, None, header=hdr)
    affine = geometry.nifti_affine_from_volume(like.affine)
    img = nib.Nifti1Image(xyz, affine, dtype=xyz.dtype)
    img.set_sform(affine, code=1)
    if np.allclose(like.direction.T @ like.direction, np.eye(3), atol=1e-5):
        img.set_qform(affine, code=1)
    else:  # the quaternion qform cannot hold a shear: keep the exact sform only
        img.set_qform(None, code=0)
    img.header.set_xyzt_units("mm")
    img.header["descrip"] = b"napari-unet"
    return img

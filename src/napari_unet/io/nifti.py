"""NIfTI-1/NIfTI-2 (.nii, .nii.gz) reading and writing (headers and images by nibabel).

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

Writing with a NIfTI ``like`` keeps the source header (codes, units of time, extensions;
NIfTI-2 becomes NIfTI-1, which ITK reads, unless an axis is too long for it);
every output's orientation is written as sform and qform alike with pixdim its voxel
sizes and the source's spatial unit (``set_orientation``), so ITK and nibabel put every
voxel at the same place; a
NIfTI source's own affine is kept (to float32, as NIfTI stores it). Sheared geometry is
never written: ``io.write`` puts results on an orthogonal grid first (``io.orthogonal``).
Any other ``like`` writes its geometry with codes 1 (scanner).
"""

from __future__ import annotations

import gzip
import logging
import math
import warnings
from pathlib import Path

import numpy as np

from ..errors import NapariUnetError, VolumeReadError
from ..limits import check_allocation, human_bytes
from . import geometry
from .formats import nifti_stem
from .source import NiftiSource, ScanWarning
from .volume import Volume

MAX_CHANNELS = 4
# intensities this low only occur in CT (air is -1000 HU); used to guess the modality
CT_MIN_THRESHOLD = -500.0
# header extensions (AFNI, DICOM, CIFTI XML) are metadata: more than this is not a header
MAX_EXTENSION_BYTES = 256 * 2**20
# the 3x3 part of an affine is degenerate below this ratio of its singular values
RANK_TOLERANCE = 1e-6
# NIfTI-1 holds axes up to this length; longer ones need NIfTI-2, which ITK cannot read
NIFTI1_MAX_DIM = 32767


def read_nifti(path: str | Path, volume_index: int | None = None) -> Volume:
    """Read a .nii/.nii.gz file into a slices-first Volume (see the module docstring).

    The header is read and checked first: its sizes against the memory limit and the
    file, its orientation (sform, else qform, else pixdim, as nibabel chooses) for
    non-finite or degenerate values. Only then is the image data read, and no further
    than the header says (``_read_block``).
    """
    path = Path(path)
    try:
        hdr, fixes = _checked_header(path)
        affine, notes, hdr = _checked_affine(path, hdr)
        notes = [f"{path}: {fix}" for fix in fixes] + notes
        data = _pick_volume(path, _read_data(path, hdr), volume_index)
    except NapariUnetError:  # ours already say what is wrong (or a setting is)
        raise
    except Exception as e:  # nibabel/gzip/numpy raise many types for broken files
        raise VolumeReadError(
            f"{path}: cannot read this NIfTI file ({type(e).__name__}: {e}). "
            "It may be empty, truncated or not a NIfTI file."
        ) from e
    for note in notes:
        warnings.warn(note, ScanWarning, stacklevel=3)
    channels = data.ndim == 4
    array = np.ascontiguousarray(data.transpose(2, 1, 0, 3) if channels else data.T)
    spacing, origin, direction = geometry.geometry_from_affine(
        geometry.volume_affine_from_nifti(affine)
    )
    source = NiftiSource(
        path=str(path.resolve()),
        header=bytes(hdr.binaryblock),
        nifti_version=2 if hdr.sizeof_hdr == 540 else 1,
        volume_index=volume_index,
        channels=channels,
        warnings=tuple(notes),
    )
    return Volume(array, spacing, origin, direction, guess_modality(array), source,
                  nifti_stem(path))


# --- the header, before any data is read --------------------------------------------------


def _open(path: Path):
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


class _Fixes(list):
    """Collects what nibabel's header checks fixed (a logger as ``check_fix`` uses it)."""

    def log(self, level: int, message: str) -> None:
        if level >= logging.WARNING and message:
            self.append(message)


def _checked_header(path: Path):
    """The NIfTI-1/2 header block as nibabel fixes it on load (sizes checked), and the
    fixes nibabel would have logged (zero pixdims taken as 1 mm, ...), as notes."""
    import nibabel as nib

    with _open(path) as f:
        raw = f.read(nib.Nifti2Header.template_dtype.itemsize)
    for klass in (nib.Nifti1Header, nib.Nifti2Header):
        size = klass.template_dtype.itemsize
        if len(raw) >= size and klass.may_contain_header(raw[:size]):
            hdr, fixes = klass(raw[:size], check=False), _Fixes()
            _data_offset(path, hdr)  # nibabel's checks fail on an infinite offset
            hdr.check_fix(logger=fixes)  # nibabel's own checks: fixes, or errors
            if hdr["magic"] not in (b"n+1", b"n+2"):
                raise VolumeReadError(f"{path}: the header of a NIfTI pair (.hdr/.img); "
                                      "convert it to a single .nii or .nii.gz file.")
            _check_sizes(path, hdr)
            return hdr, fixes
    raise VolumeReadError(f"{path}: no NIfTI-1 or NIfTI-2 header at the start of the file "
                          f"({len(raw)} bytes read); not a NIfTI file, or truncated.")


def _check_sizes(path: Path, hdr) -> None:
    """Dimensions x data type, extensions and (uncompressed) file size, before reading."""
    shape, dtype, offset = hdr.get_data_shape(), hdr.get_data_dtype(), _data_offset(path, hdr)
    if not shape or min(shape) < 1:
        raise VolumeReadError(f"{path}: the header gives the image an empty axis "
                              f"(shape {shape}); there are no voxels to read.")
    if dtype.kind == "c":
        raise VolumeReadError(f"{path}: complex-valued data ({dtype}) is not a scan "
                              "napari-unet can segment or denoise.")
    if offset - hdr.sizeof_hdr > MAX_EXTENSION_BYTES:
        raise VolumeReadError(
            f"{path}: the header puts the image data {human_bytes(offset)} into the file "
            f"(vox_offset); header extensions over {human_bytes(MAX_EXTENSION_BYTES)} are "
            "refused.")
    voxels = math.prod(shape)
    data_bytes = voxels * dtype.itemsize
    out = 4 * voxels if _scaling(hdr) else data_bytes
    copies = (_scaling(hdr) is not None or not dtype.isnative) + (len(shape) > 3)
    check_allocation(data_bytes + copies * out,
                     f"{path}: an image of {' x '.join(map(str, shape))} {dtype} voxels",
                     VolumeReadError)
    size = path.stat().st_size
    if not path.name.lower().endswith(".gz") and size < offset + data_bytes:
        raise VolumeReadError(
            f"{path}: truncated: the header asks for {data_bytes:,} bytes of image data "
            f"from byte {offset:,}, but the file holds {size:,} bytes in all.")


def _data_offset(path: Path, hdr) -> int:
    offset = float(hdr["vox_offset"])
    if not math.isfinite(offset) or offset < 0:
        raise VolumeReadError(f"{path}: invalid vox_offset {offset} in the header.")
    return max(int(offset), hdr.sizeof_hdr + 4)


def _scaling(hdr) -> tuple[float, float] | None:
    """(slope, intercept) when the data are scaled (nibabel's rules), else None."""
    slope, inter = hdr.get_slope_inter()
    if slope is None or (slope, inter) == (1.0, 0.0):
        return None
    return float(slope), float(inter or 0.0)


def _checked_affine(path: Path, hdr) -> tuple[np.ndarray, list[str], object]:
    """The voxel-to-RAS affine nibabel would use, checked; a broken sform gives way to a
    good qform (with a note). The header kept for outputs has the codes of broken
    transforms set to 0, so outputs say what was used."""
    kinds = [k for k in ("sform", "qform") if int(hdr[f"{k}_code"]) != 0] or ["pixdim"]
    checked = {k: _affine(hdr, k) for k in kinds}
    problems = {k: f"the {k} {problem}" for k, (_, problem) in checked.items() if problem}
    chosen = next((k for k in kinds if k not in problems), None)
    if chosen is None:
        raise VolumeReadError(f"{path}: no usable orientation: "
                              f"{'; '.join(problems.values())}.")
    notes = [f"{path}: {problems[k]}; the {chosen} is used instead."
             for k in kinds[: kinds.index(chosen)]]
    if problems:
        hdr = hdr.copy()
        for kind in set(problems) - {"pixdim"}:
            getattr(hdr, f"set_{kind}")(None, code=0)
    return checked[chosen][0], notes, hdr


def _affine(hdr, kind: str) -> tuple[np.ndarray | None, str | None]:
    """(affine, None), or (None, what is wrong with it)."""
    try:
        affine = {"sform": hdr.get_sform, "qform": hdr.get_qform,
                  "pixdim": hdr.get_base_affine}[kind]()
    except Exception as e:  # nibabel refuses impossible quaternions and pixdims
        return None, f"cannot be computed ({e})"
    if not np.all(np.isfinite(affine)):
        return None, "holds non-finite values (NaN or infinity)"
    singular = np.linalg.svd(affine[:3, :3], compute_uv=False)
    if singular[0] == 0:
        return None, "is all zeros"
    rank = int(np.sum(singular > RANK_TOLERANCE * singular[0]))
    if rank < 3:
        return None, f"is degenerate (rank {rank} of 3: voxel axes collapse onto each other)"
    return affine, None


# --- the data ------------------------------------------------------------------------------

CHUNK_BYTES = 32 * 2**20


def _read_data(path: Path, hdr) -> np.ndarray:
    """The image as nibabel's (i, j, k[, ...]) array: scaled to float32 when the header
    says so, else the stored type in native byte order; RGB voxels as a trailing axis."""
    shape, dtype = hdr.get_data_shape(), hdr.get_data_dtype()
    block = _read_block(path, _data_offset(path, hdr), math.prod(shape) * dtype.itemsize)
    data = block.view(dtype).reshape(shape, order="F")
    if data.dtype.names:  # RGB24/RGBA32 voxels: channels on a trailing axis
        data = np.stack([data[name] for name in data.dtype.names], axis=-1)
    scaling = _scaling(hdr)
    if scaling is not None:
        out = data.astype(np.float32)
        with np.errstate(over="ignore", invalid="ignore"):
            out *= np.float32(scaling[0])
            out += np.float32(scaling[1])
        return out
    if data.dtype.kind == "f" and data.dtype.itemsize > 8:
        return data.astype(np.float64)
    return data.astype(data.dtype.newbyteorder("="), copy=False)


def _read_block(path: Path, offset: int, nbytes: int) -> np.ndarray:
    """``nbytes`` from ``offset`` (decompressed for .gz), read in chunks into an array
    whose pages are committed only as the stream delivers them: a stream shorter than
    the header claims costs only what it held, and bytes past the image (a stream that
    never ends) are never decompressed."""
    block = np.empty(nbytes, np.uint8)
    view, got = memoryview(block), 0
    with _open(path) as f:
        f.seek(offset)
        while got < nbytes:
            n = f.readinto(view[got : got + CHUNK_BYTES])
            if not n:
                raise VolumeReadError(
                    f"{path}: truncated: the header asks for {nbytes:,} bytes of image data "
                    f"from byte {offset:,}, but the data end after {got:,} bytes.")
            got += n
    return block


def _pick_volume(path: Path, data: np.ndarray, volume_index: int | None) -> np.ndarray:
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim == 5 and data.shape[3] == 1:  # NIfTI vector voxels: dim[5] holds them
        data = data[:, :, :, 0, :]
    if data.ndim == 1:
        raise VolumeReadError(f"{path}: a 1D NIfTI (shape {data.shape}) is not an image.")
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


def nifti_image(data: np.ndarray, like: Volume, class_names=None, affine=None):
    """A nibabel image of the slices-first ``data`` in the geometry of ``like``, or on
    ``affine`` (index to LPS; ``io.orthogonal``: a grid of its own, orthogonal).

    ``class_names`` marks ``data`` as a label map (intent ``label``, names in a header
    extension: ``io.labels``), so that it reopens as labels.
    """
    img = _nifti_image(data, like, like.affine if affine is None else affine)
    if class_names is not None:
        from .labels import class_names_extension

        img.header.set_intent("label")
        img.header.extensions.append(class_names_extension(class_names))
    return img


def _nifti_image(data: np.ndarray, like: Volume, affine: np.ndarray):
    import nibabel as nib

    xyz = data.transpose(2, 1, 0, 3) if data.ndim == 4 else data.T
    ras = geometry.nifti_affine_from_volume(affine)
    src = like.source
    if isinstance(src, NiftiSource):
        klass = nib.Nifti2Image if src.nifti_version == 2 else nib.Nifti1Image
        hdr = klass.header_class(binaryblock=src.header, check=False)
        if hdr.endianness != "<":
            hdr = hdr.as_byteswapped("<")
        if klass is nib.Nifti2Image and max(xyz.shape) <= NIFTI1_MAX_DIM:
            klass, hdr = nib.Nifti1Image, _as_nifti1(hdr)  # ITK reads no NIfTI-2
        if len(hdr.get_data_shape()) == 2 and xyz.ndim == 3 and xyz.shape[2] == 1:
            xyz = xyz[:, :, 0]  # a 2D scan's result is 2D too
        codes = _xform_codes(hdr, ras)
        hdr.set_slope_inter(None, None)
        hdr.set_intent("none")
        hdr["cal_min"] = hdr["cal_max"] = 0
        for text in ("aux_file", "db_name", "intent_name"):  # free text: may name a patient
            if text in hdr:
                hdr[text] = b""
    else:  # DICOM patient coordinates, or an array made in memory
        klass, hdr, codes = nib.Nifti1Image, nib.Nifti1Header(), (1, 1)
    hdr.set_data_shape(xyz.shape)
    hdr.set_data_dtype(xyz.dtype)
    hdr["descrip"] = b"napari-unet"
    set_orientation(hdr, ras, *codes)
    return klass(xyz, None, header=hdr)


def _as_nifti1(hdr):
    """A NIfTI-2 header's fields (codes, units, intent, extensions) in a NIfTI-1 header."""
    import nibabel as nib

    out = nib.Nifti1Header.from_header(hdr, check=False)
    out["sizeof_hdr"] = nib.Nifti1Header.template_dtype.itemsize
    return out


def set_orientation(hdr, ras: np.ndarray, sform_code: int, qform_code: int) -> None:
    """Write the voxel-to-RAS ``ras`` (orthogonal axes) as sform and qform alike, with
    pixdim its voxel sizes, so that ITK (which takes voxel sizes from pixdim, directions
    from the sform or qform) and nibabel (the sform) put every voxel at the same place.

    ``ras`` is in the unit of ``hdr``'s source (nibabel reads a NIfTI's numbers as they
    are): a source in metres or microns keeps its unit, which ITK scales to mm on both
    files alike; any other header says millimetres."""
    hdr.set_sform(ras, code=sform_code)
    hdr.set_qform(ras, code=qform_code)  # and pixdim: the axes' lengths, qfac
    space, time = hdr.get_xyzt_units()
    hdr.set_xyzt_units(xyz=space if space in ("meter", "micron") else "mm", t=time)


def _xform_codes(hdr, ras: np.ndarray) -> tuple[int, int]:
    """(sform, qform) codes for an output of a NIfTI source: the source's sform code (or
    its qform's; aligned (2) when it had neither); its qform code where its qform was
    this geometry already, else the sform's (the qform now says what the sform does)."""
    sform, qform = int(hdr["sform_code"]), int(hdr["qform_code"])
    out = sform or qform or 2
    if qform:
        try:
            same = np.allclose(hdr.get_qform(), ras, atol=1e-3)
        except Exception:  # an impossible quaternion: the qform is replaced anyway
            same = False
        if same:
            return out, qform
    return out, out

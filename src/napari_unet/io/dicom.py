"""DICOM reading: single files, multi-frame files and folders of one or several series.

Finding, sorting and checking the slices of a series is ``io.series``' job; each file's
header is checked by ``io.dicom_header``. Pixels and geometry come from SimpleITK (GDCM):
rescale slope/intercept applied (CT in HU; int16 when the values fit, float32 when the
rescale is fractional), compressed transfer syntaxes as far as GDCM decodes them.
Before GDCM sees a file, the memory its header asks for is checked against
``limits.check_allocation``, uncompressed pixel data must fit in the file, and a data set
encoded against its transfer syntax is re-encoded (in a temporary folder) by pydicom.
What was assumed or repaired (missing slices, uneven spacing, a missing PixelSpacing,
files left out of a series) is a ``ScanWarning`` naming the series and also kept in
``Volume.source.warnings``. A single file is read on its own (pass its folder to read
its whole series).

What GDCM assumes of the slices is checked against their headers after it reads them:
slices stacked obliquely (gantry tilt, sheared stacking) get the slice axis from their
own positions, kept as a shear in ``direction`` (not orthogonal then), with a
``ScanWarning``; slices off the normal by no more than the rounding of their positions
or a tenth of a voxel form a straight stack (``geometry.shear_noise_mm``); each frame
of an enhanced multi-frame file gets its own rescale slope/intercept (GDCM applies the
first frame's to all); an enhanced file's frames stored out of spatial order are put in
order. Where whole slices are missing, blank slices stand
in for them. ``DicomSource.slice_index`` maps each file (or frame) to its array slice
then, for the DICOM SEG, so that no slice moves to the mean spacing or a wrong place;
slices unevenly spaced in other ways keep their distances along the stack in
``DicomSource.slice_positions``, for NIfTI outputs on even slices through them.
"""

from __future__ import annotations

import contextlib
import re
import tempfile
import warnings
from pathlib import Path

import numpy as np

from ..errors import VolumeReadError
from ..limits import check_allocation
from . import geometry
from .c_stderr import captured
from .dicom_header import (
    MISENCODED,
    MalformedTag,
    floats_tag,
    frame_rescales,
    frames_in,
    int_tag,
    non_image_reason,
    pixel_samples,
    read_header,
    text_tag,
)
from .series import (
    SeriesInfo,
    SeriesList,
    SliceSpacingWarning,
    check_series,
    choose_series,
    frame_normal,
    frame_order,
    grid_indices,
    position_step,
    scan_folder,
    slice_positions,
)
from .slice_rescue import undecodable_left_out
from .source import DicomSource, ScanWarning
from .volume import Volume

_PIXEL_DATA_TAGS = (b"\xe0\x7f\x10\x00", b"\x7f\xe0\x00\x10")  # (7FE0,0010): LE, BE

# --- reading -----------------------------------------------------------------------------


def read_dicom_file(path: str | Path) -> Volume:
    """One DICOM file: a single slice (1 x rows x cols) or a multi-frame volume."""
    path = Path(path)
    ds, reason = read_header(path)
    if ds is None:
        raise VolumeReadError(f"{path}: {reason}.")
    reason = non_image_reason(ds)
    if reason:
        raise VolumeReadError(f"{path}: not an image to open: {reason}.")
    notes = check_series(str(path), [(str(path), ds)])
    _warn(notes, SliceSpacingWarning)
    return _read_members(path, str(path), path.stem, [(str(path), ds)], notes)


def read_dicom_folder(folder: str | Path, series: int | str | None = None) -> Volume:
    """One series of a folder (``series``: index, SeriesInstanceUID or its short hash)."""
    folder = Path(folder)
    listing, groups = scan_folder(folder)
    info = choose_series(folder, listing, series)
    return _read_series(folder, listing, groups, info)


def read_all_series(
    folder: str | Path, scan: tuple[SeriesList, dict] | None = None
) -> list[tuple[SeriesInfo, Volume | VolumeReadError]]:
    """Every image series of a folder, scanning the headers once (``scan``: the result of
    ``scan_folder`` when the caller has it); failures are returned (not raised) so that
    one broken series does not hide the others."""
    folder = Path(folder)
    listing, groups = scan if scan is not None else scan_folder(folder)
    choose_series(folder, listing, 0)  # raises the "no image series" error
    out = []
    for info in listing:
        try:
            out.append((info, _read_series(folder, listing, groups, info)))
        except VolumeReadError as e:
            out.append((info, e))
    return out


def _read_series(folder: Path, listing: SeriesList, groups: dict, info: SeriesInfo) -> Volume:
    members = groups[info.uid]
    label = f"{folder} (series {info.uid_hash})"
    if len(members) > 1 and any(frames_in(ds) > 1 for _, ds in members):
        raise VolumeReadError(f"{label}: mixes multi-frame files with other files; "
                              "open the multi-frame file itself.")
    left_out = [f"{label}: {note}" for note in info.notes]
    _warn(left_out, ScanWarning)
    notes = check_series(label, members)
    _warn(notes, SliceSpacingWarning)
    name = folder.name if len(listing) == 1 else f"{folder.name}_{info.uid_hash}"
    try:
        return _read_members(folder, label, name, members, left_out + notes)
    except VolumeReadError as e:  # one undecodable slice must not sink its series
        decodable, lost = undecodable_left_out(label, members, e)
        lost_notes = [f"{label}: {note}" for note in lost]
        _warn(lost_notes, ScanWarning)
        notes = check_series(label, decodable)
        _warn(notes, SliceSpacingWarning)
        return _read_members(folder, label, name, decodable, left_out + lost_notes + notes)


def _warn(notes: list[str], category: type[Warning]) -> None:
    for note in notes:
        warnings.warn(note, category, stacklevel=4)


def _read_members(path: Path, label: str, name: str, members: list, notes: list[str]) -> Volume:
    """Pixels and geometry of one series (or file); ``label`` names it in messages."""
    _check_pixel_data(label, members)
    with _gdcm_readable(label, members, notes) as files:
        image = _execute_gdcm(label, files)
    spacing, origin, direction = geometry.geometry_from_sitk(image)
    ds0 = members[0][1]
    spacing = _checked_spacing(label, ds0, spacing, notes)
    if not np.all(np.isfinite(direction)) or abs(np.linalg.det(direction)) < 1e-3:
        raise VolumeReadError(f"{label}: the orientation GDCM reads is degenerate "
                              f"({np.round(direction, 3).tolist()}); cannot place the voxels.")
    array = _sitk().GetArrayFromImage(image)
    del image  # the array is a copy: free GDCM's buffer before compacting
    array = _frame_rescale(label, members, array)
    positions = slice_positions(members)
    array, positions, order = _in_order(label, members, array, positions)
    array, positions, index = _fill_gaps(array, positions)
    index = _compose(order, index)
    spacing, origin, direction = _stacking(label, positions, position_step(members), spacing,
                                           origin, direction, notes)
    along = _uneven(positions, position_step(members), spacing, direction)
    source = DicomSource(
        path=str(Path(path).resolve()),
        files=tuple(str(Path(f).resolve()) for f, _ in members),
        sop_instance_uids=tuple(text_tag(ds, "SOPInstanceUID") for _, ds in members),
        series_uid=text_tag(ds0, "SeriesInstanceUID"),
        study_uid=text_tag(ds0, "StudyInstanceUID"),
        frame_of_reference_uid=text_tag(ds0, "FrameOfReferenceUID"),
        multi_frame=frames_in(ds0) > 1,
        warnings=tuple(notes),
        slice_index=index,
        slice_positions=along,
    )
    return Volume(_compact(array), spacing, origin, direction,
                  text_tag(ds0, "Modality") or "OT", source, name)


# --- after GDCM: what it assumes of the slices ------------------------------------------


def _in_order(label: str, members: list, array: np.ndarray, positions):
    """(array, positions, order): an enhanced file's frames stored out of spatial order,
    put in order (GDCM stacks them in file order); ``order[k]`` is the frame now at k."""
    if positions is None or len(members) != 1 or len(positions) < 3:
        return array, positions, None
    order = frame_order(positions, frame_normal(members[0][1]))
    if order is None:
        return array, positions, None
    return array[order], positions[order], order


def _compose(order, index) -> tuple[int, ...] | None:
    """Each file frame's array slice, from the reordering and the stand-in gaps."""
    if order is None:
        return index
    rank = np.empty(len(order), int)
    rank[order] = np.arange(len(order))
    return tuple(int(i) for i in (rank if index is None else np.asarray(index)[rank]))


def _fill_gaps(array: np.ndarray, positions: np.ndarray | None):
    """(array, positions, index): where whole slices are missing from an evenly spaced
    series, blank slices (the series' lowest value) stand in for them, so that every slice
    keeps its own position; ``index`` gives each file's array slice (None: one each)."""
    if positions is None or len(positions) < 2:
        return array, positions, None
    along = np.linalg.norm(positions - positions[0], axis=1)
    index = grid_indices(along)
    if index is None:
        return array, positions, None
    full = np.full((index[-1] + 1, *array.shape[1:]), array.min(), array.dtype)
    full[index] = array
    t = np.arange(len(full))[:, None] / index[-1]
    return full, positions[0] + t * (positions[-1] - positions[0]), tuple(int(i) for i in index)


def _stacking(label: str, positions, rounding_step, spacing, origin, direction,
              notes: list[str]):
    """GDCM's geometry with the slice axis taken from the slices' own positions
    (``geometry.stacking_from_positions``): straight where they sit off the normal by no
    more than rounding or a tenth of a voxel; a shear where they step obliquely (gantry
    tilt), noted: GDCM would drop the shear in silence."""
    if positions is None:
        return spacing, origin, direction
    spacing, origin, direction, tilt = geometry.stacking_from_positions(
        spacing, origin, direction, positions, rounding_step)
    if tilt is not None:
        note = (f"{label}: the slices are stacked obliquely ({tilt:.1f} degrees from their "
                "normal: gantry tilt or sheared stacking); each slice is kept at its own "
                "ImagePositionPatient, and NIfTI outputs are resampled onto an orthogonal "
                "grid (ITK-based tools refuse sheared NIfTI files).")
        notes.append(note)
        _warn([note], ScanWarning)
    return spacing, origin, direction


def _uneven(positions, rounding_step, spacing, direction) -> tuple[float, ...] | None:
    """Each slice's distance (mm) from the first along the slice axis where the mean
    spacing would move one by more than geometry noise (``geometry.shear_noise_mm``), so
    that outputs can put it back (``io.orthogonal.even_stack``); else None."""
    if positions is None or len(positions) < 3:
        return None
    along = (np.asarray(positions, float) - positions[0]) @ np.asarray(direction, float)[:, 0]
    off = float(np.abs(along - np.arange(len(along)) * spacing[0]).max())
    if off <= geometry.shear_noise_mm(spacing, rounding_step) or np.any(np.diff(along) <= 0):
        return None
    return tuple(float(v) for v in along)


def _frame_rescale(label: str, members: list, array: np.ndarray) -> np.ndarray:
    """Each frame's own RescaleSlope/Intercept for an enhanced file: GDCM applies the
    first frame's to all frames, so the others are undone and redone here."""
    ds = members[0][1]
    if len(members) != 1 or frames_in(ds) < 2:
        return array
    try:
        pairs = frame_rescales(ds)
    except (AttributeError, IndexError, KeyError, TypeError, ValueError) as e:
        raise VolumeReadError(f"{label}: unreadable per-frame rescale ({e}).") from e
    if pairs is None or len(set(pairs)) == 1:
        return array
    if len(pairs) != len(array) or any(s == 0 for s, _ in pairs):
        raise VolumeReadError(f"{label}: the frames have different rescale slopes/intercepts "
                              f"and {len(pairs)} transformations for {len(array)} frames "
                              "(or a zero slope); the values cannot be restored.")
    (s0, i0), numbers = pairs[0], [v for pair in pairs for v in pair]
    exact = all(float(v).is_integer() for v in numbers)
    check_allocation(array.size * 8, f"{label}: per-frame rescale", VolumeReadError)
    out = np.empty(array.shape, np.int64 if exact else np.float64)
    for k, (slope, intercept) in enumerate(pairs):
        stored = np.rint((array[k].astype(np.float64) - i0) / s0)
        out[k] = stored * slope + intercept
    return out


# --- before GDCM ---------------------------------------------------------------------------


def _check_pixel_data(label: str, members: list) -> None:
    """Refuse what the headers ask for if it exceeds the memory limit or the files."""
    samples = sum(pixel_samples(ds) for _, ds in members)
    # GDCM's buffer plus the numpy copy, at the type GDCM decodes to
    check_allocation(2 * samples * _decoded_itemsize(members[0][1]),
                     f"{label}: {samples:,} pixel samples", VolumeReadError)
    for f, ds in members:
        needed = _native_pixel_bytes(ds)
        size = Path(f).stat().st_size
        if needed > size:
            raise VolumeReadError(_missing_pixels(f, needed, size))


def _missing_pixels(path: str, needed: int, size: int) -> str:
    """Why a file holds fewer bytes than its pixels need: no PixelData element, or cut."""
    raw = Path(path).read_bytes()  # smaller than the (memory-checked) pixel data
    if not any(tag in raw for tag in _PIXEL_DATA_TAGS):
        return (f"{path}: no pixel data: the header describes an image but the file has "
                "no PixelData element.")
    return (f"{path}: truncated: the header asks for {needed:,} bytes of uncompressed pixel "
            f"data but the file holds {size:,} bytes in all.")


def _decoded_itemsize(ds) -> int:
    """Bytes per sample GDCM gives: wider for rescaled values (float64 if fractional)."""
    stored = max(int_tag(ds, "BitsAllocated", 16), 8) // 8
    try:
        slope = floats_tag(ds, "RescaleSlope", 1)
        intercept = floats_tag(ds, "RescaleIntercept", 1)
    except MalformedTag:
        return 8
    rescale = [v for v in (slope, intercept) if v is not None]
    if not rescale:
        return stored
    return 8 if any(float(v[0]) != int(v[0]) for v in rescale) else max(stored, 4)


def _native_pixel_bytes(ds) -> int:
    """Bytes of pixel data an uncompressed transfer syntax stores; 0 when compressed."""
    try:
        ts = ds.file_meta.TransferSyntaxUID
        if ts.is_compressed or ts.is_deflated:
            return 0
    except Exception:  # no file meta: GDCM guesses an uncompressed syntax
        pass
    bits = int_tag(ds, "BitsAllocated", 16)
    return (pixel_samples(ds) * bits + 7) // 8


@contextlib.contextmanager
def _gdcm_readable(label: str, members: list, notes: list[str]):
    """The member files as GDCM may read them: misencoded ones re-encoded to temporaries."""
    files = [f for f, _ in members]
    bad = [i for i, (_, ds) in enumerate(members) if getattr(ds, MISENCODED, False)]
    if not bad:
        yield files
        return
    note = (f"{label}: {len(bad)} file(s) encoded against their transfer syntax (implicit "
            "versus explicit VR); re-encoded by pydicom before decoding.")
    notes.append(note)
    _warn([note], ScanWarning)
    with tempfile.TemporaryDirectory(prefix="napari-unet-") as tmp:
        for i in bad:
            files[i] = _reencode(files[i], Path(tmp) / f"{i}.dcm")
        yield files


def _reencode(src: str, dst: Path) -> str:
    import pydicom

    check_allocation(Path(src).stat().st_size, f"{src}: re-encoding", VolumeReadError)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom's note on the encoding: we give ours
            ds = pydicom.dcmread(src)
            for _ in ds.iterall():  # convert every element: implicit-VR ones carry no VR
                pass
        ts = ds.file_meta.TransferSyntaxUID
        ds.save_as(dst, implicit_vr=ts.is_implicit_VR, little_endian=ts.is_little_endian)
    except Exception as e:
        raise VolumeReadError(f"{src}: encoded against its transfer syntax and cannot be "
                              f"re-encoded ({type(e).__name__}: {e}).") from e
    return str(dst)


# --- GDCM ----------------------------------------------------------------------------------


def _execute_gdcm(label: str, files: list[str]):
    """GDCM's image; what its decoders print (fd 2) goes into our error or a warning."""
    failure = None
    with captured() as printed:
        try:
            image = _execute_gdcm_quietly(label, files)
        except VolumeReadError as e:
            failure = e
    if failure is not None:
        if printed.lines:
            raise VolumeReadError(f"{str(failure).rstrip('.')}; the image decoder said: "
                                  f"{printed.summary()}.") from failure
        raise failure
    if printed.lines:
        _warn([f"{label}: the image decoder reported problems while reading the pixel data "
               f"({printed.summary()}); check the images"], ScanWarning)
    return image


def _execute_gdcm_quietly(label: str, files: list[str]):
    sitk = _sitk()
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # spacing notes are ours (ScanWarning)
    try:
        if len(files) == 1:
            reader = sitk.ImageFileReader()
            reader.SetImageIO("GDCMImageIO")
            reader.SetFileName(files[0])
        else:
            reader = sitk.ImageSeriesReader()
            reader.SetImageIO("GDCMImageIO")
            reader.SetFileNames(files)
        image = reader.Execute()
    except RuntimeError as e:
        reason = next((ln for ln in str(e).splitlines() if "ERROR" in ln), str(e))
        reason = re.sub(r"\(0x[0-9a-fA-F]+\)", "", reason)  # drop ITK object addresses
        raise VolumeReadError(
            f"{label}: SimpleITK/GDCM cannot read the pixel data ({reason.strip()}); "
            "the file may be truncated or use an unsupported compression."
        ) from e
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)
    if image.GetDimension() == 2:  # some IOs give 2D for a single slice
        image = sitk.JoinSeries(image)
    return image


def _sitk():
    import SimpleITK as sitk

    return sitk


def _checked_spacing(label: str, ds, spacing: tuple, notes: list[str]) -> tuple:
    """GDCM's spacing, with a note when PixelSpacing was missing or unusable (GDCM then
    silently takes 1 mm), and 1 mm wherever GDCM's value is not a positive number."""
    problem = _pixel_spacing_problem(ds)
    fixed = tuple(float(s) if np.isfinite(s) and s > 0 else 1.0 for s in spacing)
    if problem:
        note = (f"{label}: {problem}; in-plane spacing {fixed[1]:g} x {fixed[2]:g} mm "
                "assumed, so distances and volumes in this scan are not real millimetres.")
        notes.append(note)
        _warn([note], ScanWarning)
    return fixed


def _pixel_spacing_problem(ds) -> str | None:
    try:
        spacing = floats_tag(ds, "PixelSpacing", 2)
        if spacing is None:
            spacing = _functional_group_spacing(ds)
    except MalformedTag as e:
        return f"malformed {e}"
    if spacing is None:
        return "no PixelSpacing"
    if np.any(spacing <= 0):
        return f"PixelSpacing {spacing.tolist()} is not positive"
    return None


def _functional_group_spacing(ds) -> np.ndarray | None:
    """PixelSpacing of an enhanced multi-frame file (shared, else first frame's group)."""
    for keyword in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        try:
            measures = ds.get(keyword)[0].PixelMeasuresSequence[0]
        except (AttributeError, IndexError, KeyError, TypeError):
            continue
        return floats_tag(measures, "PixelSpacing", 2)
    return None


def _compact(array: np.ndarray) -> np.ndarray:
    """float64 -> float32; wide integers -> int16 when the values fit (CT in HU)."""
    if array.dtype == np.float64:
        return array.astype(np.float32)
    if array.dtype in (np.int32, np.int64, np.uint32) and array.size:
        lo, hi = int(array.min()), int(array.max())
        if lo >= -32768 and hi <= 32767:
            return array.astype(np.int16)
    return array

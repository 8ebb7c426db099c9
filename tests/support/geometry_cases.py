"""Scans whose geometry is hard for the next tool: a gantry-tilted head CT, a CT
reconstructed in zones of different slice spacing, an oblique MR
whose positions are rounded to 0.1 mm as some scanners write them, and nibabel's real
Siemens two-slice pair (a 0.3 degree tilt of the slice planes while the positions step
straight along z).

Each builder returns the folder; ``dicom_voxel_centres`` gives every voxel's LPS centre
computed by hand from the files (ImagePositionPatient, ImageOrientationPatient,
PixelSpacing), the reference the tests hold our outputs to. Pixel values are set from
world positions computed the same way, so the content of a file can be checked where
it lies (``ball``, ``ramp``).
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pydicom

from .dicom_factory import write_dicom_series

# a world-defined object: a ball (LPS mm) the tilted CT holds
BALL_CENTRE = np.array([2.0, 12.0, 60.0])
BALL_RADIUS = 11.0
# a world-defined intensity: linear in LPS, so linear interpolation reproduces it exactly
RAMP = np.array([3.0, -2.0, 5.0])
RAMP_OFFSET = 400.0


def ball(points: np.ndarray) -> np.ndarray:
    return (np.linalg.norm(points - BALL_CENTRE, axis=-1) <= BALL_RADIUS).astype(np.uint8)


def ball_edge_mm(points: np.ndarray) -> np.ndarray:
    """How far each point lies from the ball's surface."""
    return np.abs(np.linalg.norm(points - BALL_CENTRE, axis=-1) - BALL_RADIUS)


def ramp(points: np.ndarray) -> np.ndarray:
    return points @ RAMP + RAMP_OFFSET


def _rotation(x_deg: float, z_deg: float) -> np.ndarray:
    a, b = np.deg2rad(x_deg), np.deg2rad(z_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    rz = np.array([[np.cos(b), -np.sin(b), 0], [np.sin(b), np.cos(b), 0], [0, 0, 1]])
    return rz @ rx


def tilted_ct(folder: str | Path, tilt_deg: float = 15.0, shape=(14, 48, 52),
              pixel=(0.8, 0.7), table_step: float = 2.5, content: str = "ball") -> Path:
    """A head CT as a tilted gantry acquires it: the slice planes tilted by ``tilt_deg``
    about the left-right axis, the table (ImagePositionPatient) stepping straight along
    z. Pixel values: ``content`` ("ball": 1000 HU inside ``BALL_*``, -1000 outside;
    "ramp": ``ramp`` of the voxel's centre), stored with RescaleIntercept -1024."""
    folder = Path(folder)
    cos, sin = math.cos(math.radians(tilt_deg)), math.sin(math.radians(tilt_deg))
    row, col = np.array([1.0, 0.0, 0.0]), np.array([0.0, cos, -sin])
    first = np.array([-shape[2] * pixel[1] / 2, -shape[1] * pixel[0] / 2 + 10.0, 45.0])
    ipps = [first + [0.0, 0.0, k * table_step] for k in range(shape[0])]
    files = write_dicom_series(np.zeros(shape), folder, spacing=(table_step, *pixel),
                               modality="CT", rescale=(1.0, -1024.0))
    for f, ipp in zip(sorted(files), ipps, strict=True):
        _set_plane(f, ipp, row, col, pixel, content, tilt=tilt_deg)
    return folder


def zoned_ct(folder: str | Path, steps=(1.0,) * 9 + (2.5,) * 8, shape=(32, 36),
             pixel=(0.8, 0.7)) -> Path:
    """An axial head CT reconstructed in zones of different slice spacing (``steps``
    between consecutive slices, mm), as helical CT is: the ball of ``BALL_*`` (1000 HU)
    in air (-1000 HU), stored with RescaleIntercept -1024."""
    folder = Path(folder)
    z = BALL_CENTRE[2] - sum(steps) / 2 + np.concatenate([[0.0], np.cumsum(steps)])
    first = np.array([BALL_CENTRE[0] - shape[1] * pixel[1] / 2,
                      BALL_CENTRE[1] - shape[0] * pixel[0] / 2, 0.0])
    files = write_dicom_series(np.zeros((len(z), *shape)), folder, spacing=(1.0, *pixel),
                               modality="CT", rescale=(1.0, -1024.0))
    for f, zk in zip(sorted(files), z, strict=True):
        _set_plane(f, first + [0.0, 0.0, zk], np.array([1.0, 0, 0]), np.array([0, 1.0, 0]),
                   pixel, "ball")
    return folder


def rounded_oblique_mr(folder: str | Path, shape=(16, 40, 36), spacing=(3.0, 0.9, 0.9),
                       decimals: int = 1) -> Path:
    """An oblique MR (20 degrees about x, 12 about z) stacked along its normal, whose
    ImagePositionPatient values are rounded to ``decimals`` places and
    ImageOrientationPatient to 6, as some scanners and PACS write them."""
    folder = Path(folder)
    rot = _rotation(20.0, 12.0)
    row, col = rot[:, 0], rot[:, 1]
    normal = np.cross(row, col)
    origin = np.array([-17.33, 8.71, 30.42])
    files = write_dicom_series(np.zeros(shape), folder, spacing=spacing)
    for k, f in enumerate(sorted(files)):
        ipp = np.round(origin + k * spacing[0] * normal, decimals)
        _set_plane(f, ipp, np.round(row, 6), np.round(col, 6), spacing[1:], "ramp",
                   decimals=decimals)
    return folder


def siemens_pair(folder: str | Path) -> Path:
    """nibabel's two real Siemens MR slices (nibabel/tests/data/0.dcm and 1.dcm)."""
    import nibabel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = Path(nibabel.__file__).parent / "tests" / "data"
    for name in ("0.dcm", "1.dcm"):
        shutil.copy(data / name, folder / name)
    return folder


def _set_plane(path: Path, ipp, row, col, pixel, content: str, tilt: float | None = None,
               decimals: int | None = None) -> None:
    ds = pydicom.dcmread(path)
    fmt = f"{{:.{decimals}f}}" if decimals is not None else "{:.10g}"
    ds.ImagePositionPatient = [fmt.format(v) for v in ipp]
    ds.ImageOrientationPatient = [f"{v:.10g}" for v in (*row, *col)]
    ds.PixelSpacing = [f"{v:.10g}" for v in pixel]
    if tilt is not None:
        ds.GantryDetectorTilt = f"{tilt:g}"
    world = _plane_centres(ds)
    value = np.where(ball(world), 1000.0, -1000.0) if content == "ball" else ramp(world)
    slope, intercept = float(ds.get("RescaleSlope", 1)), float(ds.get("RescaleIntercept", 0))
    ds.PixelData = np.round((value - intercept) / slope).astype(np.int16).tobytes()
    ds.save_as(path)


def _plane_centres(ds) -> np.ndarray:
    """LPS centre of each pixel (rows x columns x 3) of one slice, from its header."""
    ipp = np.asarray(ds.ImagePositionPatient, float)
    iop = np.asarray(ds.ImageOrientationPatient, float)
    dr, dc = (float(v) for v in ds.PixelSpacing)  # between rows, between columns
    r = np.arange(int(ds.Rows))[:, None, None]
    c = np.arange(int(ds.Columns))[None, :, None]
    return ipp + c * dc * iop[:3] + r * dr * iop[3:]


def dicom_slices(folder: str | Path) -> list:
    """The series' datasets sorted along the slice normal (as every DICOM reader
    stacks them)."""
    sets = [pydicom.dcmread(f) for f in sorted(Path(folder).rglob("*.dcm"))]
    iop = np.asarray(sets[0].ImageOrientationPatient, float)
    normal = np.cross(iop[:3], iop[3:])
    return sorted(sets, key=lambda ds: float(np.dot(ds.ImagePositionPatient, normal)))


def dicom_voxel_centres(folder: str | Path) -> np.ndarray:
    """LPS centre of every voxel (slices x rows x columns x 3), computed by hand from the
    files (slice k: the k-th along the normal)."""
    return np.stack([_plane_centres(ds) for ds in dicom_slices(folder)])


def dicom_values(folder: str | Path) -> np.ndarray:
    """Rescaled pixel values (slices x rows x columns), in ``dicom_slices`` order."""
    return np.stack([ds.pixel_array * float(ds.get("RescaleSlope", 1))
                     + float(ds.get("RescaleIntercept", 0)) for ds in dicom_slices(folder)])


def dicom_pixel_coordinates(folder: str | Path, points: np.ndarray):
    """Where LPS ``points`` lie in a DICOM series, by hand from its headers: (index of
    the nearest slice plane, fractional (row, column) in it, distance off that plane,
    (rows, columns))."""
    sets = dicom_slices(folder)
    ipp = np.array([ds.ImagePositionPatient for ds in sets], float)
    iop = np.asarray(sets[0].ImageOrientationPatient, float)
    dr, dc = (float(v) for v in sets[0].PixelSpacing)
    normal = np.cross(iop[:3], iop[3:])
    normal /= np.linalg.norm(normal)
    planes = (ipp - ipp[0]) @ normal
    along = (points - ipp[0]) @ normal
    k = np.abs(along[:, None] - planes[None, :]).argmin(axis=1)
    rel = points - ipp[k]
    rc = np.stack([rel @ iop[3:] / dr, rel @ iop[:3] / dc], axis=1)
    size = np.array([int(sets[0].Rows), int(sets[0].Columns)], float)
    return k, rc, np.abs(along - planes[k]), size

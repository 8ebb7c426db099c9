"""Property-based fuzzing of the readers: random NIfTI headers, DICOM tag values and model
metadata, starting from real files (nibabel-written headers, pydicom's test files, a saved
model). The property: ``read_volume`` gives a valid Volume or a ``VolumeReadError``,
``load_model`` a working Model or a ``ModelFileError``, never anything else, and no
allocation beyond the memory limit.

Run as a script so the memory cap (``RLIMIT_AS``) binds only the fuzzing process:

    python tests/support/fuzz.py nifti --examples 2000 --seed 7

``NAPARI_UNET_MAX_BYTES`` is set to 256 MB and the address space to what the process uses
after its imports plus 1.5 GB: an allocation that skips ``limits.check_allocation`` (or
gets past it on a wrong estimate) ends in a MemoryError, which fails the property.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import math
import os
import re
import shutil
import struct
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

UNFORESEEN = re.compile(r"\b(IndexError|KeyError|TypeError|AttributeError|OverflowError|"
                        r"ZeroDivisionError|NameError|RecursionError|MemoryError)\b")
OUTCOMES: collections.Counter = collections.Counter()  # what the examples came to
LIMIT_BYTES = 256 * 2**20
HEADROOM_BYTES = 1536 * 2**20

# --- values that break things ------------------------------------------------------------

FLOATS = st.one_of(
    st.sampled_from([0.0, -0.0, 1.0, -1.0, 1e-30, 1e30, 3.4e38, math.nan, math.inf,
                     -math.inf]),
    st.floats(allow_nan=True, allow_infinity=True, width=32),
)
INT16 = st.one_of(st.sampled_from([0, 1, -1, 2, 3, 7, 8, 32767, -32768]),
                  st.integers(-32768, 32767))
TEXTS = st.one_of(
    st.sampled_from(["", "1A", "nan", "inf", "-1", "0", "1e308", "0\\0", "1\\2\\3",
                     "abc", "1" * 80, "\x00\x01", "\x1b[31m"]),
    st.text(max_size=20),
)


# --- NIfTI ----------------------------------------------------------------------------------

NIFTI_FIELDS = {
    "dim": st.one_of(st.lists(INT16, min_size=8, max_size=8), st.tuples(
        st.integers(1, 7), *[st.sampled_from([1, 2, 3, 600, 5000, 32767])] * 7).map(list)),
    "pixdim": st.lists(FLOATS, min_size=8, max_size=8),
    "datatype": st.one_of(st.sampled_from([2, 4, 8, 16, 32, 64, 128, 256, 512, 768, 1024,
                                           1280, 1536, 1792, 2048, 2304, 0, 999]), INT16),
    "bitpix": INT16,
    "vox_offset": st.one_of(st.sampled_from([0.0, 352.0, 348.0, 353.0, 1e9, 4e9]), FLOATS),
    "scl_slope": FLOATS,
    "scl_inter": FLOATS,
    "qform_code": st.integers(-3, 6),
    "sform_code": st.integers(-3, 6),
    "quatern_b": FLOATS, "quatern_c": FLOATS, "quatern_d": FLOATS,
    "qoffset_x": FLOATS,
    "srow_x": st.lists(FLOATS, min_size=4, max_size=4),
    "srow_y": st.lists(FLOATS, min_size=4, max_size=4),
    "srow_z": st.lists(FLOATS, min_size=4, max_size=4),
    "magic": st.sampled_from([b"n+1", b"ni1", b"n+2", b"xxx"]),
}


@st.composite
def nifti_files(draw):
    """Bytes of a (possibly gzipped) NIfTI file: a valid header with fields overwritten,
    data of the claimed size, cut short or padded."""
    from support.hostile import gzip_bytes, small_header

    shape = tuple(draw(st.lists(st.integers(1, 6), min_size=3, max_size=4)))
    dtype = draw(st.sampled_from([np.uint8, np.int16, np.float32, np.float64]))
    hdr = small_header(shape, dtype)
    for name in draw(st.lists(st.sampled_from(sorted(NIFTI_FIELDS)), max_size=4,
                              unique=True)):
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            hdr[name] = draw(NIFTI_FIELDS[name])
    n = int(np.prod(shape)) * np.dtype(dtype).itemsize
    data = np.random.default_rng(draw(st.integers(0, 9))).bytes(n)
    cut = draw(st.sampled_from([None, None, None, 0, 1, n // 2, n + 100]))
    raw = hdr.binaryblock + b"\0" * 4 + (data if cut is None else (data + data)[:cut])
    gz = draw(st.booleans())
    return (gzip_bytes(raw) if gz else raw), (".nii.gz" if gz else ".nii")


def fuzz_nifti(examples: int, seed: int | None) -> None:
    from napari_unet.errors import VolumeReadError
    from napari_unet.io import read_volume

    @_settings(examples, seed)
    @given(nifti_files())
    def property_(file):
        content, suffix = file
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp, "fuzz" + suffix)
            path.write_bytes(content)
            _expect(lambda: check_volume(_quietly(read_volume, path)), VolumeReadError, path)

    property_()


# --- DICOM ----------------------------------------------------------------------------------

US = st.one_of(st.sampled_from([0, 1, 2, 3, 7, 8, 12, 16, 32, 64, 65535]),
               st.integers(0, 65535)).map(lambda v: struct.pack("<H", v))
DICOM_TAGS = {
    "Rows": US, "Columns": US, "BitsAllocated": US, "BitsStored": US, "HighBit": US,
    "PixelRepresentation": US, "SamplesPerPixel": US, "PlanarConfiguration": US,
    "NumberOfFrames": TEXTS, "PixelSpacing": TEXTS, "SliceThickness": TEXTS,
    "ImageOrientationPatient": TEXTS, "ImagePositionPatient": TEXTS,
    "RescaleSlope": TEXTS, "RescaleIntercept": TEXTS, "PhotometricInterpretation": TEXTS,
    "SeriesInstanceUID": TEXTS, "InstanceNumber": TEXTS,
}
TRANSFER_SYNTAXES = ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2",
                     "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.90",
                     "1.2.840.10008.1.2.5", "1.2.3.4.5"]
SEED_FILES = ["CT_small.dcm", "MR_small.dcm", "MR_small_RLE.dcm", "JPEG2000.dcm",
              "SC_rgb_jpeg.dcm", "rtdose.dcm", "MR_small_bigendian.dcm",
              "SC_rgb_small_odd.dcm"]


def _raw(strategy):
    return strategy.map(lambda v: v if isinstance(v, bytes) else v.encode("latin-1", "replace"))


TAG_EDITS = st.lists(st.sampled_from(sorted(DICOM_TAGS)).flatmap(
    lambda k: st.tuples(st.just(k), st.one_of(st.none(), _raw(DICOM_TAGS[k]), _raw(TEXTS)))),
    max_size=4)


@st.composite
def dicom_cases(draw):
    """(seed file name or "series", tag edits, transfer syntax or None, cut fraction)."""
    seed = draw(st.sampled_from(SEED_FILES + ["series"]))
    syntax = draw(st.one_of(st.none(), st.none(), st.sampled_from(TRANSFER_SYNTAXES)))
    cut = draw(st.sampled_from([None, None, None, 0.3, 0.9, 0.99]))
    return seed, draw(TAG_EDITS), syntax, cut


def _write_dicom_case(folder: Path, case) -> Path:
    import pydicom
    from pydicom.data import get_testdata_file

    from support.dicom_factory import write_dicom_series
    from support.hostile import set_raw

    seed, edits, syntax, cut = case
    if seed == "series":
        files = write_dicom_series(np.arange(3 * 36).reshape(3, 6, 6), folder / "series")
        target, result = files[1], folder / "series"
    else:
        target = folder / seed
        shutil.copy(get_testdata_file(seed), target)
        result = target
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(target)
        for _ in ds.iterall():  # convert raw elements (implicit VR ones carry no VR)
            pass
        for keyword, value in edits:
            if value is None:
                if keyword in ds:
                    delattr(ds, keyword)
            else:
                set_raw(ds, keyword, value)
        if edits:
            ds.save_as(target)
    if syntax:
        _relabel(target, syntax)
    if cut is not None:
        target.write_bytes(target.read_bytes()[: int(target.stat().st_size * cut)])
    return result


def _relabel(path: Path, syntax: str) -> None:
    """Change the file meta's TransferSyntaxUID without re-encoding the data set (what a
    buggy writer does; pydicom refuses to write such a file on purpose)."""
    import io

    import pydicom
    from pydicom.filewriter import write_file_meta_info

    raw = path.read_bytes()
    meta = pydicom.filereader.read_file_meta_info(path)
    start = 132 + 12 + int.from_bytes(raw[140:144], "little")  # after (0002,0000) + group
    meta.TransferSyntaxUID = syntax
    encoded = io.BytesIO()
    write_file_meta_info(encoded, meta, enforce_standard=True)
    path.write_bytes(raw[:128] + b"DICM" + encoded.getvalue() + raw[start:])


def fuzz_dicom(examples: int, seed: int | None) -> None:
    from napari_unet.errors import VolumeReadError
    from napari_unet.io import read_volume

    @_settings(examples, seed)
    @given(dicom_cases())
    def property_(case):
        with tempfile.TemporaryDirectory() as tmp:
            path = _write_dicom_case(Path(tmp), case)
            _expect(lambda: check_volume(_quietly(read_volume, path)), VolumeReadError, path)

    property_()


# --- model files ----------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), FLOATS, TEXTS),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(TEXTS, inner, max_size=3)),
    max_leaves=6,
)
META_PATHS = ["name", "default_axis", "patch_size", "hash", "format", "format_version",
              "provenance", "architecture", "architecture.in_channels",
              "architecture.out_channels", "architecture.base", "architecture.upsampling",
              "architecture.variant", "task", "task.kind", "task.n_classes",
              "task.in_channels", "task.class_names", "task.threshold", "normalization",
              "normalization.kind", "normalization.lower", "normalization.upper",
              "normalization.clip", "unknown", "architecture.unknown"]
SMALL_INTS = st.one_of(st.integers(-3, 40), st.sampled_from([200000, 2**31, 10**12]))


@st.composite
def model_edits(draw):
    """Edits of a model file: metadata fields (some plausible ints, so sizes are reached,
    re-hashed or not), then maybe the safetensors layer (header length, tensor entries,
    truncation)."""
    edits = draw(st.lists(st.tuples(st.sampled_from(META_PATHS),
                                    st.one_of(st.just(...), SMALL_INTS, JSON_VALUES)),
                          max_size=3))
    tensor = draw(st.one_of(st.none(), st.tuples(
        st.sampled_from(["dtype", "shape", "data_offsets"]),
        st.one_of(st.sampled_from(["F16", "I64", "BOOL", "U8", "X"]),
                  st.lists(st.integers(-1, 2**40), max_size=4)))))
    length = draw(st.one_of(st.none(), st.none(), st.integers(0, 2**64 - 1)))
    cut = draw(st.sampled_from([None, None, None, 0.5, 0.99]))
    return edits, draw(st.booleans()), tensor, length, cut


def _edit_meta(meta: dict, edits) -> None:
    for path, value in edits:
        *parents, key = path.split(".")
        target = meta
        for p in parents:
            target = target.get(p) if isinstance(target, dict) else None
        if not isinstance(target, dict):
            continue
        if value is ...:
            target.pop(key, None)
        else:
            target[key] = value


def _write_model_case(src: Path, dst: Path, case) -> Path:
    from safetensors.torch import load_file

    from napari_unet.model.checkpoint import ModelMeta, content_hash, read_header

    edits, rehash, tensor, length, cut = case
    state, meta = load_file(str(src)), read_header(src)
    _edit_meta(meta, edits)
    if rehash:  # metadata too broken to hash stays as edited
        with contextlib.suppress(Exception):
            meta["hash"] = content_hash(state, ModelMeta.from_dict(meta))
    raw = src.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    header["__metadata__"]["napari_unet"] = json.dumps(meta)
    if tensor is not None:
        header[sorted(k for k in header if k != "__metadata__")[0]][tensor[0]] = tensor[1]
    body = json.dumps(header).encode()
    body += b" " * (-len(body) % 8)
    out = (length if length is not None else len(body)).to_bytes(8, "little") + body
    out += raw[8 + n :]
    dst.write_bytes(out if cut is None else out[: int(len(out) * cut)])
    return dst


def fuzz_models(examples: int, seed: int | None) -> None:
    from napari_unet.errors import ModelFileError
    from napari_unet.model.checkpoint import load_model
    from support.hostile import tiny_model_file

    with tempfile.TemporaryDirectory() as tmp:
        good = tiny_model_file(Path(tmp, "good.safetensors"))

        @_settings(examples, seed)
        @given(model_edits())
        def property_(case):
            path = _write_model_case(good, Path(tmp, "fuzz.safetensors"), case)
            _expect(lambda: check_model(load_model(path, device="cpu")), ModelFileError, path)

        property_()


# --- the property's other half: what a valid result is ---------------------------------------


def _expect(read, error: type, path: Path) -> None:
    """``read()`` succeeds, or raises ``error`` naming ``path``; anything else fails."""
    try:
        read()
        OUTCOMES["valid result"] += 1
    except error as e:
        assert str(path) in str(e), e
        assert not UNFORESEEN.search(str(e)), e  # a path no check foresaw: a weak message
        reason = str(e).replace(str(path), "").replace(str(path.parent), "")
        OUTCOMES[f"{error.__name__}: {re.sub(r'[0-9.,]+', 'N', reason)[:70]}"] += 1


def check_volume(vol) -> None:
    """A Volume anything downstream can use: real voxels, finite, non-degenerate geometry."""
    assert vol.array.ndim in (3, 4) and min(vol.array.shape) >= 1, vol.array.shape
    assert vol.array.dtype.kind in "biuf", vol.array.dtype
    assert all(math.isfinite(s) and s > 0 for s in vol.spacing), vol.spacing
    assert np.all(np.isfinite(vol.origin)) and np.all(np.isfinite(vol.direction))
    assert abs(np.linalg.det(vol.direction)) > 1e-6, vol.direction
    assert len(vol.spacing) == 3 and vol.affine.shape == (4, 4)


def check_model(model) -> None:
    import torch

    meta = model.meta
    assert meta.default_axis in (0, 1, 2) and min(meta.patch_size) >= 1
    assert meta.hash.startswith("sha256:")
    x = torch.zeros(1, meta.architecture.in_channels, 8, 8)
    with torch.no_grad():
        assert model.net(x).shape[1] == meta.architecture.out_channels


# --- running -------------------------------------------------------------------------------


def _settings(examples: int, seed: int | None):
    common = dict(max_examples=examples, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck), print_blob=True)
    if seed is None:
        return settings(derandomize=True, **common)
    from hypothesis import seed as with_seed

    def apply(f):
        return with_seed(seed)(settings(**common)(f))

    return apply


def _quietly(read, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return read(path)


def cap_memory() -> None:
    """Limit this process: 256 MB per checked allocation, 1.5 GB of address space more
    than it holds now (one thread everywhere, so threads' arenas do not eat the cap)."""
    import resource

    import SimpleITK as sitk
    import torch

    os.environ["NAPARI_UNET_MAX_BYTES"] = str(LIMIT_BYTES)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    torch.set_num_threads(1)
    with open("/proc/self/statm") as f:
        current = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    resource.setrlimit(resource.RLIMIT_AS, (current + HEADROOM_BYTES, resource.RLIM_INFINITY))


TARGETS = {"nifti": fuzz_nifti, "dicom": fuzz_dicom, "models": fuzz_models}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="+", choices=sorted(TARGETS))
    parser.add_argument("--examples", type=int, default=50)
    parser.add_argument("--seed", type=int, help="random seed (default: derandomized)")
    parser.add_argument("--stats", action="store_true", help="count the outcomes")
    args = parser.parse_args(argv)
    cap_memory()
    try:  # the cap is real: an allocation no limit checked fails here
        np.ones(HEADROOM_BYTES + LIMIT_BYTES, np.uint8)
        raise SystemExit("the memory cap does not hold")
    except MemoryError:
        print(f"memory cap holds; limit {LIMIT_BYTES} bytes")
    for target in args.targets:
        OUTCOMES.clear()
        TARGETS[target](args.examples, args.seed)
        print(f"fuzz {target}: {sum(OUTCOMES.values())} runs ({args.examples} examples, "
              "plus hypothesis' shrinking/replays), property held")
        if args.stats:
            for outcome, n in OUTCOMES.most_common():
                print(f"  {n:6d}  {outcome}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())

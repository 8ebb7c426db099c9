"""Builders of hostile input files (headers that lie, streams that end early or never) and
a way to measure what reading them costs, in a fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

TESTS = Path(__file__).resolve().parents[1]


def small_header(shape=(5, 4, 3), dtype=np.int16, affine=None) -> nib.Nifti1Header:
    """A valid NIfTI-1 header with sform and qform (code 1) for ``shape``."""
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(shape)
    hdr.set_data_dtype(dtype)
    affine = np.diag([2.0, 2.0, 3.0, 1.0]) if affine is None else affine
    hdr.set_qform(affine, code=1)
    hdr.set_sform(affine, code=1)
    hdr["vox_offset"] = 352
    return hdr


def set_fields(hdr: nib.Nifti1Header, **fields) -> nib.Nifti1Header:
    """Write raw header fields (even values nibabel's setters would refuse)."""
    for name, value in fields.items():
        hdr[name] = value
    return hdr


def write_nifti(path: Path, hdr: nib.Nifti1Header, data: bytes | None = None) -> Path:
    """``hdr`` + 4 extension bytes + ``data`` (default: the bytes the header asks for),
    gzip-compressed for ``.gz`` names."""
    if data is None:
        n = int(np.prod(hdr.get_data_shape())) * hdr.get_data_dtype().itemsize
        data = (np.arange(n) % 251).astype(np.uint8).tobytes()
    raw = hdr.binaryblock + b"\0" * 4 + data
    path.write_bytes(gzip_bytes(raw) if path.name.endswith(".gz") else raw)
    return path


def gzip_bytes(raw: bytes, zeros: int = 0, tail: bytes = b"", finish: bool = True) -> bytes:
    """A gzip stream of ``raw`` followed by ``zeros`` zero bytes (compressed ~1000:1);
    ``tail`` is appended after the compressed data as it stands (garbage, if not
    ``finish``ed: a reader that decompresses past ``raw`` + zeros fails on it)."""
    comp = zlib.compressobj(6, zlib.DEFLATED, 31)
    out = [comp.compress(raw)]
    chunk = b"\0" * (1 << 22)
    for start in range(0, zeros, len(chunk)):
        out.append(comp.compress(chunk[: min(len(chunk), zeros - start)]))
    out.append(comp.flush(zlib.Z_FINISH if finish else zlib.Z_SYNC_FLUSH))
    return b"".join(out) + tail


def peak_rss_of_read(path: Path, env: dict | None = None) -> dict:
    """Read ``path`` with ``read_volume`` in a fresh process: the error (if any) and how
    many MB its peak resident memory grew while reading."""
    code = textwrap.dedent(f"""
        import json, resource
        from napari_unet.io import read_volume
        import nibabel, SimpleITK, pydicom  # imported before the baseline is taken
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            shape, error = list(read_volume({str(path)!r}).array.shape), None
        except Exception as e:
            shape, error = None, f"{{type(e).__name__}}: {{e}}"
        grew = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
        print(json.dumps({{"shape": shape, "error": error, "grew_mb": grew}}))
    """)
    run_env = {**os.environ, **(env or {})}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=run_env, timeout=300, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def set_raw(ds, keyword: str, value: bytes) -> None:
    """Put ``value`` as the raw bytes of ``keyword`` (values pydicom would refuse to set)."""
    from pydicom.datadict import dictionary_VR, tag_for_keyword
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    tag = Tag(tag_for_keyword(keyword))
    value = value + b" " if len(value) % 2 else value
    ds[tag] = RawDataElement(tag, dictionary_VR(tag), len(value), value, 0, False, True)


def edit_dicom(path: Path, **raw_values: bytes) -> Path:
    """Rewrite ``path`` with raw tag values (None deletes the tag)."""
    import pydicom

    ds = pydicom.dcmread(path)
    for keyword, value in raw_values.items():
        if value is None:
            if keyword in ds:
                delattr(ds, keyword)
        else:
            set_raw(ds, keyword, value)
    ds.save_as(path)
    return path


def tiny_model_file(path: Path, name: str = "tiny", base: int = 2) -> Path:
    """A real, valid model file of a tiny 3-class UNet."""
    import torch

    from napari_unet.model.checkpoint import Model
    from napari_unet.model.tasks import make_task

    torch.manual_seed(0)
    model = Model.new(make_task("segment", n_classes=3), base=base, name=name,
                      patch_size=(32, 32))
    return model.save(path)


def rewrite_model_meta(src: Path, dst: Path, edit, rehash: bool = True) -> Path:
    """Copy a model file with its metadata changed by ``edit(meta_dict)``; with ``rehash``
    the content hash is recomputed, as an attacker (or a careless tool) would."""
    from safetensors.torch import load_file, save_file

    from napari_unet.model.checkpoint import ModelMeta, content_hash, read_header

    state, meta = load_file(str(src)), read_header(src)
    edit(meta)
    if rehash:
        meta["hash"] = content_hash(state, ModelMeta.from_dict(meta))
    save_file(state, str(dst), metadata={"napari_unet": json.dumps(meta)})
    return dst

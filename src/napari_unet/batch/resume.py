"""Resume: a scan is finished when its manifest matches the model and settings.

The manifest ``OUTDIR/.napari-unet/<name>.json`` is written only after every output of
the scan has been renamed into place, so its presence means the outputs are complete.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..io.write import atomic_write_text
from .files import state_dir


def manifest_path(outdir: str | os.PathLike, name: str) -> Path:
    return state_dir(outdir) / f"{name}.json"


def input_key(scan) -> str:
    """Which input a manifest belongs to: path and series; size and mtime for a file."""
    from .naming import uid_hash

    key = f"{scan.input}|{uid_hash(scan.series) if scan.series else ''}"
    path = Path(scan.input)
    if path.is_file():
        st = path.stat()
        key += f"|{st.st_size}|{st.st_mtime_ns}"
    return key


def write_manifest(outdir: str | os.PathLike, scan, model_hash: str, digest: str,
                   outputs: list[str], qc: str | None) -> None:
    record = {"input": input_key(scan), "model_hash": model_hash, "settings_digest": digest,
              "outputs": outputs, "qc": qc}
    atomic_write_text(manifest_path(outdir, scan.name), json.dumps(record, indent=1))


def finished(outdir: str | os.PathLike, scan, model_hash: str, digest: str) -> dict | None:
    """The manifest if this scan's outputs exist for this input, model and settings."""
    path = manifest_path(outdir, scan.name)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    expected = {"input": input_key(scan), "model_hash": model_hash, "settings_digest": digest}
    if any(record.get(k) != v for k, v in expected.items()):
        return None
    outputs = record.get("outputs") or []
    if not outputs or not all((Path(outdir) / o).is_file() for o in outputs):
        return None
    return record

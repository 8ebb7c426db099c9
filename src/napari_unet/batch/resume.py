"""Resume: a scan is finished when its manifest matches the model and settings.

The manifest ``OUTDIR/.napari-unet/<name>.json`` is written only after every output of
the scan has been renamed into place, so its presence means the outputs are complete.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .files import atomic_write_text, state_dir


def manifest_path(outdir: str | os.PathLike, name: str) -> Path:
    return state_dir(outdir) / f"{name}.json"


def write_manifest(outdir: str | os.PathLike, name: str, model_hash: str, digest: str,
                   outputs: list[str], qc: str | None) -> None:
    record = {"model_hash": model_hash, "settings_digest": digest, "outputs": outputs,
              "qc": qc}
    atomic_write_text(manifest_path(outdir, name), json.dumps(record, indent=1))


def finished(outdir: str | os.PathLike, name: str, model_hash: str,
             digest: str) -> dict | None:
    """The manifest if this scan's outputs exist for this model and settings, else None."""
    path = manifest_path(outdir, name)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if record.get("model_hash") != model_hash or record.get("settings_digest") != digest:
        return None
    outputs = record.get("outputs") or []
    if not outputs or not all((Path(outdir) / o).is_file() for o in outputs):
        return None
    return record

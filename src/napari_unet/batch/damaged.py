"""Whether an output that changed since napari-unet wrote it can still be read.

Resume keeps an output a person edited (their corrections are never redone), but not one
cut short (an interrupted copy or sync, a disk that filled): that is no finished result,
and a rerun must not skip its scan as if it were. The readers are the ones people open
the files with next (gzip, nibabel, pydicom, json); a file of another kind is taken as
readable.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path


def unreadable(path: Path) -> str | None:
    """Why ``path`` (a file, or a derived series' folder) cannot be read whole; None if
    it can."""
    if path.is_dir():
        return next((why for p in sorted(path.iterdir()) if (why := unreadable(p))), None)
    try:
        _read(path)
    except Exception as exc:  # noqa: BLE001 - the readers raise many kinds for a bad file
        return f"{type(exc).__name__}: {exc}"[:300]
    return None


def _read(path: Path) -> None:
    name = path.name.lower()
    if name.endswith(".gz"):  # the whole stream, its length and CRC checked
        with gzip.open(path, "rb") as f:
            while f.read(1 << 20):
                pass
    if name.endswith((".nii", ".nii.gz")):
        import nibabel as nib
        import numpy as np

        np.asanyarray(nib.load(path).dataobj)
    elif name.endswith(".dcm") or path.parent.name.endswith("_denoised"):
        import pydicom

        ds = pydicom.dcmread(path)  # every DICOM file napari-unet writes holds pixels
        if "PixelData" not in ds:
            raise ValueError("no pixel data")
        ds.pixel_array  # noqa: B018 - decoding is the check
    elif name.endswith(".json"):
        json.loads(path.read_text(encoding="utf-8"))

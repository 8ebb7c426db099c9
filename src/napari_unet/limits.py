"""Limits on sizes read from files, checked before any memory is allocated.

A header, a model's metadata or a label value can claim any size; a careful tool refuses
before it tries. The limit is a share of the memory this machine has available now
(``NAPARI_UNET_MAX_BYTES`` overrides it, for clusters that know better).
"""

from __future__ import annotations

import math
import os

from .errors import NapariUnetError, SettingsError

MEMORY_SHARE = 0.5  # of the available memory, for one array that a file asks for


def memory_limit() -> int:
    """Bytes one allocation driven by a file may take."""
    override = os.environ.get("NAPARI_UNET_MAX_BYTES")
    if override:
        try:
            limit = float(override)
        except ValueError:
            limit = math.nan
        if not limit > 0 or math.isinf(limit):
            raise SettingsError(f"NAPARI_UNET_MAX_BYTES={override!r} is not a number of "
                                "bytes (e.g. 8e9)")
        return int(limit)
    import psutil

    return int(psutil.virtual_memory().available * MEMORY_SHARE)


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1024 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PB"


def check_allocation(nbytes: float, what: str, error: type[NapariUnetError] = NapariUnetError,
                     limit: int | None = None) -> None:
    """Raise ``error`` when ``what`` (a phrase naming the file) would need too much memory."""
    source = "given" if limit is not None else (
        "NAPARI_UNET_MAX_BYTES" if os.environ.get("NAPARI_UNET_MAX_BYTES") else
        "half the memory available now; set NAPARI_UNET_MAX_BYTES to change it")
    limit = memory_limit() if limit is None else limit
    if nbytes > limit:
        raise error(f"{what} would need {human_bytes(nbytes)} of memory, over the limit of "
                    f"{human_bytes(limit)} ({source})")

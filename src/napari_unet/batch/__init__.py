"""Batch processing of scan folders: discovery, naming, resume, reports, QC, scale-out.

The CLI's ``napari-unet predict`` is a thin face over :func:`run_batch`; the per-scan
work (:func:`napari_unet.batch.runner.process_scan`) is a top-level picklable function so
the same code runs in-process, in local worker processes or on a Dask cluster.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "BatchSettings": "settings",
    "BatchResult": "runner",
    "run_batch": "runner",
    "process_scan": "runner",
    "Scan": "discover",
    "discover_scans": "discover",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'napari_unet.batch' has no attribute {name!r}")

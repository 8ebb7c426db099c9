"""Batch processing of scan folders: discovery, naming, resume, reports, QC, scale-out.

The CLI's ``napari-unet predict`` is a thin face over :func:`run_batch`; the per-scan
work (:func:`napari_unet.batch.scan_job.process_scan`) is a top-level picklable function so
the same code runs in-process, in local worker processes or on a Dask cluster.
What the batch may touch in the output folder is in :mod:`.outdir` and :mod:`.owned`,
what it may print in :mod:`.privacy`.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "BatchSettings": "settings",
    "BatchResult": "runner",
    "run_batch": "runner",
    "process_scan": "scan_job",
    "BatchJob": "scan_job",
    "Scan": "discover",
    "discover_scans": "discover",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'napari_unet.batch' has no attribute {name!r}")

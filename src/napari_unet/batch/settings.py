"""Batch settings: one typed object built by the CLI (or a script) and passed to the runner."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import SettingsError

FORMATS = ("nifti", "dicom-seg", "both")
# inference settings that change how fast a scan runs, not what is written
_NOT_IN_DIGEST = ("batch_size", "device")


def _inference_settings():
    from ..inference.predictor import InferenceSettings

    return InferenceSettings()


@dataclass
class BatchSettings:
    """Inference settings plus what the batch does around them."""

    inference: Any = field(default_factory=_inference_settings)  # an InferenceSettings
    format: str = "nifti"  # nifti | dicom-seg | both (SEG only for DICOM input)
    overwrite: bool = False  # redo scans whose outputs already exist
    workers: int = 1  # local worker processes (1 = in this process)
    scheduler: str | None = None  # address of an existing Dask scheduler
    quiet: bool = False
    qc: bool = True  # QC pictures and index.html
    series: str | None = None  # only this DICOM series (UID, short hash or index)

    def __post_init__(self):
        if self.format not in FORMATS:
            raise SettingsError(f"format {self.format!r}: use one of {', '.join(FORMATS)}")
        if self.workers < 1:
            raise SettingsError(f"workers must be at least 1, got {self.workers}")
        if self.scheduler and self.workers > 1:
            raise SettingsError("use either --workers (local processes) or --scheduler "
                             "(a Dask cluster), not both")

    @property
    def probabilities(self) -> bool:
        return bool(getattr(self.inference, "probabilities", False))

    def to_dict(self) -> dict:
        """JSON-ready, for report.json."""
        d = {k: v for k, v in asdict(self).items() if k != "inference"}
        return {**_inference_dict(self.inference), **d}

    def digest(self) -> str:
        """Hash of everything that changes the written outputs (resume compares it)."""
        inf = {k: v for k, v in _inference_dict(self.inference).items()
               if k not in _NOT_IN_DIGEST}
        ident = {"inference": inf, "format": self.format}
        return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()
                              ).hexdigest()[:16]


def _inference_dict(inference: Any) -> dict:
    d = asdict(inference)
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()
            if not callable(v)}

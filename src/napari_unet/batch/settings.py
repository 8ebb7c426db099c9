"""Batch settings: one typed object built by the CLI (or a script) and passed to the runner."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field

from ..errors import SettingsError
from ..inference.predictor import InferenceSettings

FORMATS = ("nifti", "dicom", "dicom-seg", "both")  # batch.naming.output_names says what
NAMINGS = ("auto", "counter")  # auto: from file names / series attributes; counter: scan-0001
# how Dask addresses a scheduler: [scheme://]host:port, or inproc://NAME; the port is
# required (without one dask fails late, then hangs ~20 s closing its client)
SCHEDULER_SCHEMES = ("tcp", "tls", "ucx", "ws", "wss", "inproc")
_NETWORK = "|".join(SCHEDULER_SCHEMES[:-1])
_SCHEDULER = re.compile(rf"^(?:inproc://[\w.\-/]+|(?:(?:{_NETWORK})://)?"
                        r"(?:[\w.\-]+|\[[0-9A-Fa-f:.%\w]+\]):\d{1,5}(?:/[\w.\-/]*)?)$")
# inference settings that change how fast a scan runs, not what is written
_NOT_IN_DIGEST = ("batch_size", "device")


@dataclass
class BatchSettings:
    """Inference settings plus what the batch does around them."""

    inference: InferenceSettings = field(default_factory=InferenceSettings)
    format: str = "nifti"  # nifti | dicom | dicom-seg | both (DICOM only for DICOM input)
    overwrite: bool = False  # redo finished scans (replacing only napari-unet's own files)
    workers: int = 1  # local worker processes (1 = in this process)
    scheduler: str | None = None  # address of an existing Dask scheduler
    quiet: bool = False
    qc: bool = True  # QC pictures and index.html
    series: str | None = None  # only this DICOM series (UID, short hash or index)
    input_paths: bool = True  # report.json names each scan's input path
    # BIDS inputs: entity -> value(s), None (absent) or "*" (any), over the model's default
    bids_filter: dict = field(default_factory=dict)
    names: str = "auto"  # auto | counter (scan-0001, ...: no part of any input's name)

    def __post_init__(self):
        if self.format not in FORMATS:
            raise SettingsError(f"format {self.format!r}: use one of {', '.join(FORMATS)}")
        if self.names not in NAMINGS:
            raise SettingsError(f"names {self.names!r}: use one of {', '.join(NAMINGS)}")
        if self.workers < 1:
            raise SettingsError(f"workers must be at least 1, got {self.workers}")
        if self.scheduler and self.workers > 1:
            raise SettingsError("use either --workers (local processes) or --scheduler "
                                "(a Dask cluster), not both")
        if self.scheduler is not None and not _SCHEDULER.match(self.scheduler):
            raise SettingsError(f"--scheduler {self.scheduler!r} is not a Dask scheduler "
                                "address; expected e.g. tcp://HOST:8786 (schemes: "
                                f"{', '.join(SCHEDULER_SCHEMES)})")

    @property
    def probabilities(self) -> bool:
        return self.inference.probabilities

    def to_dict(self) -> dict:
        """JSON-ready, for report.json."""
        d = {k: v for k, v in asdict(self).items() if k != "inference"}
        return {**_json_ready(self.inference.to_dict()), **d}

    def output_settings(self) -> dict:
        """Everything that changes the written outputs (BIDS sidecars record it)."""
        inf = {k: v for k, v in _json_ready(self.inference.to_dict()).items()
               if k not in _NOT_IN_DIGEST}
        return {"inference": inf, "format": self.format}

    def digest(self) -> str:
        """Hash of everything that changes the written outputs (resume compares it)."""
        ident = self.output_settings()
        if ident["inference"].get("planes") == "auto":  # the model's hash covers its planes;
            del ident["inference"]["planes"]  # runs from before planes resume as they were
        return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()
                              ).hexdigest()[:16]


def _json_ready(d: dict) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}

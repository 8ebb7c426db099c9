"""``report.json``: one entry per scan, rewritten atomically after every scan.

Layout (DESIGN.md): ``{"model": {"name", "hash"}, "settings": {...}, "scans": [{"input",
"status", "outputs", "error", "seconds"}]}``. Extra keys say how far the run got
(``finished``, ``counts``, ``total``) and per scan its output ``name`` and ``qc`` picture,
so an interrupted run still leaves a valid, readable report.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections import Counter
from pathlib import Path

from ..io.write import atomic_write_text

STATUSES = ("ok", "failed", "skipped")
REPORT_NAME = "report.json"


def entry(scan, status: str, outputs: list[str] | None = None, error: str | None = None,
          seconds: float = 0.0, qc: str | None = None, reason: str | None = None,
          warnings: list[str] | None = None) -> dict:
    """A report entry for one scan (``scan`` is a :class:`~.discover.Scan`).

    ``error`` says why a scan failed, ``reason`` why it was skipped; ``outputs`` and
    ``qc`` are paths relative to the output folder.
    """
    if status not in STATUSES:
        raise ValueError(f"status {status!r} is not one of {STATUSES}")
    return {"input": scan.input, "name": scan.name, "status": status,
            "outputs": list(outputs or []), "error": error, "seconds": round(seconds, 3),
            "qc": qc, "reason": reason, "warnings": list(warnings or [])}


class Report:
    """Collects entries in input order and saves the whole report after each one."""

    def __init__(self, outdir: str | os.PathLike, model: dict, settings: dict, order: list[str]):
        self.path = Path(outdir) / REPORT_NAME
        self.model = model
        self.settings = settings
        self._rank = {name: i for i, name in enumerate(order)}
        self.entries: list[dict] = []
        self.started = _now()
        self.finished = False

    @property
    def total(self) -> int:
        return len(self._rank)

    @property
    def counts(self) -> Counter:
        return Counter(e["status"] for e in self.entries)

    def add(self, item: dict) -> None:
        self.entries.append(item)
        self.entries.sort(key=lambda e: self._rank.get(e["name"], len(self._rank)))
        self.save()

    def finish(self) -> None:
        self.finished = True
        self.save()

    def to_dict(self) -> dict:
        counts = self.counts
        return {"model": self.model, "settings": self.settings, "scans": self.entries,
                "total": self.total, "counts": {s: counts.get(s, 0) for s in STATUSES},
                "started": self.started, "updated": _now(), "finished": self.finished}

    def save(self) -> None:
        atomic_write_text(self.path, json.dumps(self.to_dict(), indent=2))


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")

"""``report.json`` (and ``index.html``): rewritten after every scan that runs (a burst
of resumed scans in steps), so an interrupted run still leaves a valid, readable report.

Layout (DESIGN.md): ``{"model": {"name", "hash"}, "settings": {...}, "scans": [{"input",
"status", "outputs", "error", "seconds"}]}``. Extra keys: per scan its output ``name``,
``qc`` picture, ``reason`` (why skipped), ``warnings``, ``resampled`` (NIfTI outputs
of a scan with sheared axes, put on an orthogonal grid), for a BIDS image its
``entities``, and the result's quality (``score``, ``review``, ``review_reasons`` in plain
words, and the figures behind them in ``quality``: :mod:`napari_unet.inference.quality`);
at the top ``total``, ``counts``, ``to_review``, ``started``, ``updated``, ``finished``,
``earlier_scans`` (entries of earlier runs into this folder whose outputs are still
there), ``write_errors`` (report or page writes that failed and were retried) and, for a
BIDS run, ``bids`` (the query that chose the images, and how many it chose). ``input``
is the only key that holds a path, and is null with ``--no-input-paths``; errors,
reasons and warnings name scans by their patient-free names.

A write that fails (a full disk) is recorded and retried with the next save; the scans
go on, and the batch exits 1 at the end.
"""

from __future__ import annotations

import datetime as _dt
import json
import time
from collections import Counter

from . import qc
from .owned import NotOurs, OwnedTexts
from .resume import present

STATUSES = ("ok", "failed", "skipped")
REPORT_NAME = "report.json"
FINAL_SAVE_TRIES = 3


def entry(scan, status: str, outputs: list[str] | None = None, error: str | None = None,
          seconds: float = 0.0, qc: str | None = None, reason: str | None = None,
          warnings: list[str] | None = None, resampled: dict | None = None,
          quality: dict | None = None) -> dict:
    """A report entry for one scan (``scan`` is a :class:`~.discover.Scan`).

    ``error`` says why a scan failed, ``reason`` why it was skipped; ``outputs`` and
    ``qc`` are paths relative to the output folder; ``resampled`` which NIfTI outputs
    were resampled onto an orthogonal grid, and how (``io.orthogonal``), or None;
    ``quality`` is the result's :meth:`~napari_unet.inference.quality.Quality.to_dict`,
    whose score, review flag and reasons also come to the top of the entry (``score``,
    ``review``, ``review_reasons``).
    """
    if status not in STATUSES:
        raise ValueError(f"status {status!r} is not one of {STATUSES}")
    quality = _checked_quality(quality)
    item = {"input": scan.input, "name": scan.name, "status": status,
            "outputs": list(outputs or []), "error": error, "seconds": round(seconds, 3),
            "qc": qc, "reason": reason,
            "warnings": list(getattr(scan, "notes", ())) + list(warnings or []),
            "resampled": resampled,
            "score": quality.get("score") if quality else None,
            "review": bool(quality.get("review")) if quality else False,
            "review_reasons": list(quality.get("reasons", [])) if quality else [],
            "quality": quality}
    if getattr(scan, "bids", None) is not None:  # a BIDS image: who and what it is
        item["entities"] = dict(scan.bids.entities)
    return item


def _checked_quality(quality) -> dict | None:
    """A quality record as the report and page may use it: one read back from an earlier
    run's manifest could be anything, so the score must be a number in 0..1, the flag a
    boolean and the reasons short texts, or there is no quality record."""
    if not isinstance(quality, dict):
        return None
    score, reasons = quality.get("score"), quality.get("reasons", [])
    ok = (score is None or (isinstance(score, (int, float)) and not isinstance(score, bool)
                            and 0.0 <= score <= 1.0))
    ok = ok and isinstance(quality.get("review"), bool) and isinstance(reasons, list)
    ok = ok and all(isinstance(r, str) and len(r) <= 500 for r in reasons)
    return quality if ok else None


def to_review(entries: list[dict]) -> list[dict]:
    """The entries flagged for review, least trusted first."""
    flagged = [e for e in entries if e.get("review")]
    return sorted(flagged, key=lambda e: (e.get("score") is None, e.get("score") or 0.0))


class Report:
    """Collects entries in input order and saves the report (and page) after each one."""

    def __init__(self, texts: OwnedTexts, model: dict, settings: dict, order: list[str],
                 pages: bool = True, input_paths: bool = True, bids: dict | None = None):
        self.texts = texts
        self.path = texts.outdir / REPORT_NAME
        self.index_path = texts.outdir / qc.INDEX_NAME if pages else None
        self.model, self.settings = model, settings
        self.input_paths = input_paths
        self.bids = bids  # BIDS runs: the query that chose the images
        self._rank = {name: i for i, name in enumerate(order)}
        self.entries: list[dict] = []
        self._earlier = self._earlier_entries()
        self.write_errors: list[str] = []
        self.started = _now()
        self.finished = False
        self._next_save = 0.0  # skipped scans: saves take at most ~5% of the time

    @property
    def total(self) -> int:
        return len(self._rank)

    @property
    def counts(self) -> Counter:
        return Counter(e["status"] for e in self.entries)

    def add(self, item: dict) -> None:
        if not self.input_paths:
            item["input"] = None
        self.entries.append(item)
        self.entries.sort(key=lambda e: self._rank.get(e["name"], len(self._rank)))
        # every scan that ran is saved at once; a burst of resumed scans is saved in steps
        if item["status"] != "skipped" or time.monotonic() >= self._next_save:
            self.save()

    def to_dict(self) -> dict:
        counts = self.counts
        report = {"model": self.model, "settings": self.settings, "scans": self.entries,
                  "total": self.total, "counts": {s: counts.get(s, 0) for s in STATUSES},
                  "to_review": len(to_review(self.entries)),
                  "started": self.started, "updated": _now(), "finished": self.finished,
                  "earlier_scans": self.earlier, "write_errors": self.write_errors}
        if self.bids is not None:
            report["bids"] = self.bids
        return report

    @property
    def earlier(self) -> list[dict]:
        """Entries of earlier runs, less the outputs this run has written (or resumed)."""
        current = {o for e in self.entries for o in e["outputs"]}
        kept = ({**e, "outputs": [o for o in e["outputs"] if o not in current]}
                for e in self._earlier)
        return [e for e in kept if e["outputs"]]

    def save(self) -> bool:
        """Write report.json and index.html; a failure is recorded, not raised."""
        ok, start = True, time.monotonic()
        report = self.to_dict()
        pages = [(REPORT_NAME, lambda: json.dumps(report, indent=2))]
        if self.index_path is not None:
            pages.append((qc.INDEX_NAME, lambda: qc.index_page(report)))
        for name, text in pages:
            try:
                self.texts.write(name, text())
            except (OSError, NotOurs) as exc:
                ok = False
                self._record_failure(name, exc)
        self._next_save = time.monotonic() + 20 * (time.monotonic() - start)
        return ok

    def _record_failure(self, name: str, exc: Exception) -> None:
        why = f"{name} could not be written ({exc.strerror if isinstance(exc, OSError) else exc})"
        if why not in self.write_errors:  # once per reason, however often it is retried
            self.write_errors.append(why)

    def close(self, finished: bool) -> None:
        """The final save, tried a few times (each failure is in ``write_errors``)."""
        self.finished = finished
        for attempt in range(FINAL_SAVE_TRIES):
            if attempt:
                time.sleep(0.5 * attempt)
            if self.save():
                return

    def _earlier_entries(self) -> list[dict]:
        """Entries of earlier runs whose outputs are still in the folder, each with the
        model that wrote them; a scan of this run may share its name (another model)."""
        text = self.texts.read(REPORT_NAME)
        try:
            old = json.loads(text or "{}")
        except ValueError:
            return []
        if not isinstance(old, dict):
            return []
        out, seen = [], set()
        for e in _old_entries(old):
            outputs = [o for o in e["outputs"] if isinstance(o, str) and o not in seen]
            if outputs and all(present(self.texts.outdir / o) for o in outputs):
                seen.update(outputs)
                out.append({**e, "outputs": outputs,
                            "input": e.get("input") if self.input_paths else None})
        return out


def _old_entries(old: dict) -> list[dict]:
    """An old report's scans (with its model) and its own earlier scans, newest first."""
    model = old.get("model") if isinstance(old.get("model"), dict) else None
    scans = [{**e, "model": e.get("model") or model} for e in old.get("scans") or []
             if isinstance(e, dict)]
    earlier = [e for e in old.get("earlier_scans") or [] if isinstance(e, dict)]
    return [e for e in scans + earlier if isinstance(e.get("outputs"), list)]


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")

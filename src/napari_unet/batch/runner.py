"""Run a model over many scans into one output folder (``napari-unet predict``).

:func:`run_batch` checks the output folder (before the model is loaded), discovers the
scans, reaches the executor, and only then makes the folder (a refused command leaves
none behind) and takes its run lock; it skips finished scans, hands the rest to an executor
(:mod:`.executors`; the per-scan work is :func:`.scan_job.process_scan`) and records each
result in ``report.json`` and ``index.html`` as it arrives. Every message it records or
passes on names scans by their patient-free names (:mod:`.privacy`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import SettingsError
from . import bids_dataset as bids_outputs
from . import outdir as folder
from . import qc, resume, scan_job
from .counter_names import counter_names
from .discover import Scan, discover_scans
from .executors import executor
from .owned import OwnedTexts
from .privacy import scrub
from .report import REPORT_NAME, Report, entry
from .scan_job import BatchJob
from .settings import BatchSettings

RESUMED = "outputs exist for this model and settings (use --overwrite to redo)"


class NoScansFound(SettingsError):
    """The inputs hold no NIfTI file and no DICOM series."""


@dataclass
class BatchResult:
    report: dict
    report_path: Path
    index_path: Path | None

    @property
    def counts(self) -> dict:
        return self.report["counts"]

    @property
    def write_errors(self) -> list[str]:
        return self.report["write_errors"]

    @property
    def exit_code(self) -> int:
        """0 when every scan is ok or skipped and every report write succeeded; else 1."""
        return 1 if self.counts.get("failed") or self.write_errors else 0


def run_batch(inputs: list[str | os.PathLike], outdir: str | os.PathLike, model: str,
              settings: BatchSettings | None = None,
              progress: Callable[[int, int], None] | None = None,
              on_scan: Callable[[str, dict | None], None] | None = None,
              cancel: Callable[[], bool] | None = None) -> BatchResult:
    """Predict every scan under ``inputs`` into ``outdir``; see the module docstring.

    ``progress(done, total)`` is called after each scan; ``on_scan(name, None)`` when a
    scan starts (in-process runs only) and ``on_scan(name, entry)`` when it ends.
    Problems with the output folder or the model raise
    :class:`~napari_unet.errors.SettingsError` / ``ModelFileError`` before any work.
    """
    settings = settings or BatchSettings()
    out = folder.check(outdir)  # created only once nothing can refuse the command
    loaded, ref = _load_for_batch(model, settings)
    if settings.format == "dicom-seg" and loaded.task.kind != "segment":
        raise SettingsError(f"{model}: a {loaded.task.kind} model writes images, not "
                            "segmentations; --format dicom-seg needs a segmentation model")
    found = _discover(inputs, out, settings.series, _bids_request(settings, loaded))
    if found.bids is not None and settings.names == "counter":
        raise SettingsError("--names counter does not apply to a BIDS dataset: its outputs "
                            "are named by their BIDS entities (subject labels are pseudonyms)")
    with executor(settings) as run:
        bids = found.bids is not None
        _check_folder(out, settings, create=False, bids=bids)  # refusals before anything
        with folder.claimed(out):
            report = _run_claimed(out, found, loaded, ref, settings, run,
                                  (progress, on_scan, cancel))
    return BatchResult(report.to_dict(), report.path, report.index_path)


def _run_claimed(out: Path, found, loaded, ref: str, settings: BatchSettings, run,
                 callbacks) -> Report:
    """The run proper, in the claimed (made and locked) output folder."""
    progress, on_scan, cancel = callbacks
    texts = _check_folder(out, settings, bids=found.bids is not None)
    folder.clear_partial(out)
    link = None
    if found.bids is not None:
        link = bids_outputs.write_dataset_files(texts, found.bids, loaded, out, settings)
    if settings.names == "counter":  # no part of an input's name anywhere
        scans = counter_names(out, found.scans)
        for name in found.file_names:
            found.identifiers.add_word(name)
    else:
        scans = [resume.claim_name(out, s) for s in found.scans]
    job = BatchJob(ref, loaded.hash, str(out), settings, settings.digest(), bids_link=link)
    scan_job.remember_model(job, loaded)
    report = Report(texts, {"name": loaded.name, "hash": loaded.hash,
                            "task": loaded.task.kind},
                    settings.to_dict(), [s.name for s in scans], pages=settings.qc,
                    input_paths=settings.input_paths,
                    bids=bids_outputs.report_section(found.bids))
    record = _recorder(report, scans, out, found.identifiers, progress, on_scan)
    _run(scans, job, record, run, cancel, on_scan)
    report.close(finished=len(report.entries) == len(scans))
    folder.clear_partial(out)
    return report


def _bids_request(settings: BatchSettings, model):
    from .bids import BidsRequest, model_suffixes

    return BidsRequest(settings.bids_filter, model_suffixes(model), model.task.kind)


def _discover(inputs: list, out: Path, series: str | None, bids=None):
    """The scans; refused (exit 2) when there are none, or none is the --series asked for,
    even beside NIfTI files that would run (a series dropped in silence is not what was
    asked)."""
    found = discover_scans(inputs, exclude=out, series=series, bids=bids)
    matched = any(s.kind == "dicom" and s.series is not None for s in found.scans)
    if series is not None and not matched:
        raise NoScansFound(f"no DICOM series matching --series {series} found in the inputs")
    if not found.scans:
        raise NoScansFound("no NIfTI file or DICOM series found in the inputs")
    return found


def _check_folder(out: Path, settings: BatchSettings, create: bool = True,
                  bids: bool = False) -> OwnedTexts:
    """Refuse (exit 2) before any work when the report or page (or a BIDS dataset's
    description) would replace a file napari-unet did not write, or a folder or state
    file it uses is a link; without ``create`` (before the folder is claimed) nothing is
    made."""
    if not create:
        folder.refusals(out, qc.QC_DIR if settings.qc and not bids else None)
    texts = OwnedTexts(out)
    texts.check(REPORT_NAME, folder.OutputFolderError)
    if bids:
        bids_outputs.check_description(texts)
    if settings.qc:
        texts.check(qc.INDEX_NAME, folder.OutputFolderError)
        if not bids:  # BIDS runs put pictures in sub-*/figures
            folder.real_dir(out, qc.QC_DIR, create=create)
    return texts


def _run(scans: list[Scan], job: BatchJob, record, run, cancel, on_scan) -> None:
    todo = []
    for scan in scans:
        done = _already_done(scan, job)
        if done is not None:
            record(done)
        elif scan.skip_reason or scan.error:
            record(scan_job.process_scan(scan, job))
        else:
            todo.append(scan)
    for item in run(todo, job, cancel, lambda name: on_scan and on_scan(name, None)):
        record(item)


def _load_for_batch(model: str, settings: BatchSettings):
    """Load the model once here (for its hash; in-process runs reuse it)."""
    from ..model.checkpoint import bundled_models, load_model

    loaded = load_model(model, device=settings.inference.device)
    ref = str(model) if str(model) in bundled_models() and not Path(model).is_file() \
        else str(Path(model).resolve())
    return loaded, ref


def _already_done(scan: Scan, job: BatchJob) -> dict | None:
    if job.settings.overwrite or scan.skip_reason or scan.error:
        return None
    record = resume.finished(Path(job.outdir), scan, job.model_hash, job.digest,
                             qc=job.settings.qc)
    if record is None:
        return None
    kept = [f"{rel} was changed after napari-unet wrote it (edited by hand?): kept as it is"
            for rel in record["changed"]]
    return entry(scan, "skipped", record["outputs"], qc=record.get("qc"), reason=RESUMED,
                 quality=record.get("quality"), resampled=record.get("resampled"),
                 warnings=kept)


def _recorder(report: Report, scans: list[Scan], out: Path, identifiers: set[str],
              progress, on_scan) -> Callable[[dict], None]:
    """Record one entry: messages made patient-free, then report, page and callbacks."""
    inputs = {s.name: s.input for s in scans}

    def record(item: dict) -> None:
        paths = {inputs[item["name"]]: item["name"], f"{out}{os.sep}": "",
                 str(out): "the output folder"}
        for key in ("error", "reason"):
            item[key] = scrub(item[key], paths, identifiers)
        item["warnings"] = [scrub(w, paths, identifiers) for w in item["warnings"]]
        report.add(item)
        if on_scan:
            on_scan(item["name"], item)
        if progress:
            progress(len(report.entries), report.total)

    if progress:
        progress(0, report.total)
    return record

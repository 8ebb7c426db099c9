"""One scan of a batch: read, predict, write every output, commit; runs in any worker.

:func:`process_scan` is top-level and picklable, so the same code runs in this process,
in local worker processes or on a Dask cluster. It never raises: any failure becomes a
``failed`` report entry, so one broken scan (or a CUDA out-of-memory) does not end the
batch. Outputs are written to temporary files first; :func:`commit_outputs` renames them
into place only where the target is absent or napari-unet's own (:mod:`.owned`).

DICOM outputs (a SEG, a derived series) that cannot be made keep the result as NIfTI:
when the source's kind of DICOM cannot carry them (``UnsupportedSourceError``: an RT
Dose, a PET scan) the scan is ``ok`` with a warning; for any other reason (source files
gone, a full disk) it fails, so the run exits 1. ``--format both`` on NIfTI input writes
NIfTI and says so in a warning.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import NapariUnetError, UnsupportedSourceError
from ..io.source import DicomSource
from . import outdir as folder
from . import qc, resume
from .discover import Scan
from .naming import output_names
from .owned import (
    NotOurs,
    check_replaceable,
    check_replaceable_folder,
    digest,
    folder_digests,
)
from .report import entry
from .settings import BatchSettings

_MODELS: dict[tuple, object] = {}  # per worker process: the model, loaded once


@dataclass(frozen=True)
class BatchJob:
    """What every scan of a batch shares; small and picklable (sent to each worker)."""

    model_ref: str  # bundled model name or absolute model file path
    model_hash: str
    outdir: str
    settings: BatchSettings
    digest: str
    bids_link: str | None = None  # BIDS runs: the source dataset's name in BIDS URIs


@dataclass
class _Written:
    """A scan's temporary outputs (``folders``: those that are a derived series' folder)
    and what went wrong short of failing it."""

    temps: dict[str, Path]
    outputs: list[str]
    picture: str | None = None
    error: str | None = None
    quality: dict | None = None  # the result's Quality.to_dict()
    warnings: list[str] = field(default_factory=list)
    folders: set[str] = field(default_factory=set)
    resampled: dict | None = None  # NIfTI outputs put on an orthogonal grid (gantry tilt)

    def discard(self) -> None:
        for tmp in self.temps.values():
            _remove(tmp)


NO_DICOM = ("no DICOM output: the input is NIfTI, and a DICOM SEG or derived series must "
            "reference the DICOM images it was computed from; the NIfTI is written")


def same_for_every_scan(warning: str) -> bool:
    """Warnings about the run's settings or model, not the scan (NIfTI input with
    --format both, a model's classes without codes): the console says them once."""
    from ..io.dicom_seg import UNCODED

    return warning == NO_DICOM or UNCODED in warning


def process_scan(scan: Scan, job: BatchJob) -> dict:
    """Predict one scan and write its outputs; returns its report entry, never raises."""
    start = time.perf_counter()
    if scan.skip_reason:
        return entry(scan, "skipped", reason=scan.skip_reason)
    if scan.error:
        return entry(scan, "failed", error=scan.error)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            written, notes = _predict_and_write(scan, job)
        except Exception as exc:  # noqa: BLE001 - fault isolation: record and go on
            _free_accelerator_memory()
            return entry(scan, "failed", error=message(exc), seconds=_since(start),
                         warnings=_warning_texts(caught))
    status = "failed" if written.error else "ok"
    return entry(scan, status, written.outputs, error=written.error, seconds=_since(start),
                 qc=written.picture, warnings=sorted(set(_warning_texts(caught)) | notes),
                 quality=written.quality, resampled=written.resampled)


def cached_model(job: BatchJob):
    """The job's model, loaded once per worker process and checked against its hash."""
    from ..model.checkpoint import load_model

    device = job.settings.inference.device
    key = (job.model_ref, job.model_hash, str(device))
    if key not in _MODELS:
        model = load_model(job.model_ref, device=device)
        if model.hash != job.model_hash:
            raise NapariUnetError(f"{job.model_ref}: this worker's model file differs from "
                                  "the one the batch started with (hash mismatch)")
        _MODELS.clear()
        _MODELS[key] = model
    return _MODELS[key]


def remember_model(job: BatchJob, model) -> None:
    """Seed this process's cache with a model already loaded (in-process runs)."""
    _MODELS.clear()
    _MODELS[(job.model_ref, job.model_hash, str(job.settings.inference.device))] = model


LOOKS_LIKE_LABELS = ("the input looks like a label map (a few whole-number values), not a "
                     "scan; segmenting or denoising it is rarely useful")


def _predict_and_write(scan: Scan, job: BatchJob) -> tuple[_Written, set[str]]:
    from ..inference.predictor import predict
    from ..inference.quality import assess
    from ..io import read_volume
    from ..io.labels import few_label_values

    model = cached_model(job)
    volume = read_volume(scan.input, series=scan.series)
    # the SEG's SeriesDescription (and any other name) is the patient-free scan name
    volume = replace(volume, name=scan.name)
    names = _names(scan, job, model, volume)
    outdir = Path(job.outdir)
    known = (resume.read_manifest(outdir, scan.name) or {}).get("files", {})
    for rel, role in names.items():  # fail before predicting when an output could not be
        _check_name_length(outdir, rel)  # committed
        try:
            if role == "series":
                check_replaceable_folder(outdir, rel, known)
            else:
                check_replaceable(outdir, rel, known.get(rel, ()))
        except NotOurs:
            _another_scans(outdir, rel, scan.name)
            raise
    pred = predict(volume, model, job.settings.inference)
    quality = assess(volume, model, pred)
    written = _Written({}, [], quality=quality.to_dict())
    try:
        _write_outputs(scan, job, model, volume, pred, names, written)
        written.resampled = _resampled(volume, written.outputs)
        commit_outputs(job, scan, written)
    finally:
        written.discard()
    # geometry the reader had to assume (also warned, so caught above for any source)
    notes = set(volume.source.warnings if isinstance(volume.source, DicomSource) else ())
    notes.update(written.warnings)
    if job.settings.format == "both" and not isinstance(volume.source, DicomSource):
        notes.add(NO_DICOM)
    if few_label_values(volume.array):
        notes.add(LOOKS_LIKE_LABELS)
    return written, notes


def _another_scans(outdir: Path, rel: str, name: str) -> None:
    """Raise :class:`NotOurs` naming the other scan whose output ``rel`` is, if one is
    (not "not written by napari-unet", which invites moving that scan's result away)."""
    other = resume.owner_of(outdir, rel, name)
    if other is not None:
        raise NotOurs(f"{rel} in the output folder is the output of another scan, {other}: "
                      "both would have this name (in a BIDS dataset, images the output's "
                      "name cannot tell apart, such as a T1w and a T2w for one dseg); it is "
                      "never overwritten: run them into separate output folders")


def _check_name_length(outdir: Path, rel: str) -> None:
    """Refuse an output whose name the file system cannot hold (a BIDS label hundreds of
    characters long): found before predicting, not as a rename that fails halfway
    through the scan's outputs."""
    try:
        limit = os.pathconf(outdir, "PC_NAME_MAX")
    except (AttributeError, OSError, ValueError):
        limit = 255
    for part in Path(rel).parts:
        if len(part.encode()) > limit:
            raise NapariUnetError(f"{rel}: this output's name is {len(part.encode())} bytes "
                                  f"long, more than the file system allows ({limit}); "
                                  "shorten the input's name")


def _resampled(volume, outputs: list[str]) -> dict | None:
    """The report's note on NIfTI outputs resampled onto an orthogonal grid (the scan's
    axes are sheared: gantry tilt), or None."""
    from ..io.write import nifti_grid

    niftis = [rel for rel in outputs if rel.endswith((".nii.gz", ".nii"))]
    grid = nifti_grid(volume)
    return {"outputs": niftis, **grid.describe()} if niftis and grid.resampled else None


def _names(scan: Scan, job: BatchJob, model, volume) -> dict[str, str]:
    """Relative output path -> role, QC picture included."""
    if scan.bids is not None:
        from .bids_dataset import output_paths

        return output_paths(scan.bids, model.task, job.settings)
    dicom_input = isinstance(volume.source, DicomSource)
    fmt = job.settings.format
    if fmt in ("dicom", "dicom-seg") and not dicom_input:
        what = "DICOM SEG" if fmt == "dicom-seg" else "DICOM"
        raise NapariUnetError(f"{scan.input}: {what} output needs DICOM input; use --format "
                              "nifti (or both: DICOM as well where the input is DICOM)")
    names = output_names(scan.name, model.task.kind, job.settings.format, dicom_input,
                         job.settings.probabilities)
    by_path = {name: role for role, name in names.items()}
    if job.settings.qc:
        by_path[f"{qc.QC_DIR}/{scan.name}.png"] = "qc"
    return by_path


def _write_outputs(scan: Scan, job: BatchJob, model, volume, pred, names: dict,
                   written: _Written) -> None:
    from ..io import write_volume

    outdir = Path(job.outdir)
    for rel, role in names.items():
        if role in ("seg", "series", "qc") or role.startswith("sidecar:") or role == "tsv":
            continue
        data = _array(role, pred)
        if data is None:
            continue
        written.temps[rel] = folder.temp_path(outdir, rel)
        names_of = list(model.task.class_names) if role == "labels" else None
        write_volume(data, written.temps[rel], like=volume, class_names=names_of)
    if scan.bids is not None:  # the sidecars of the images written, the class table
        from .bids_dataset import text_outputs

        for rel, text in text_outputs(scan.bids, model, job, names, written.temps).items():
            written.temps[rel] = folder.temp_path(outdir, rel)
            written.temps[rel].write_text(text, encoding="utf-8")
    for rel, role in names.items():
        if role in ("seg", "series"):
            _write_dicom(scan, job, model, volume, pred, rel, role, written)
    written.outputs = list(written.temps)
    qc_name = next((rel for rel, role in names.items() if role == "qc"), None)
    if qc_name is not None:
        written.picture = _write_qc(scan, model, volume, pred, written, qc_name, job.outdir)


def _qc_title(name: str, quality: dict | None) -> str:
    """The picture's title: the scan's name and its quality score (review or not)."""
    if not quality or quality.get("score") is None:
        return name
    return f"{name}  -  quality {quality['score']:.2f}" + (
        ": review" if quality.get("review") else "")


def _array(role: str, pred):
    if role.startswith("probseg:"):
        channel = int(role.split(":")[1])
        return None if pred.probabilities is None else pred.probabilities[..., channel]
    return {"labels": pred.labels, "image": pred.image, "uncertainty": pred.uncertainty,
            "probabilities": pred.probabilities}[role]


def _write_dicom(scan: Scan, job: BatchJob, model, volume, pred, rel: str, role: str,
                 written: _Written) -> None:
    """A DICOM SEG (``seg``) or derived series (``series``); one that cannot be written
    keeps the result as NIfTI (see the module docstring for ok or failed)."""
    from ..io import write_dicom_seg, write_volume
    from ..io.dicom_derived import write_derived_series

    outdir = Path(job.outdir)
    tmp = folder.temp_path(outdir, rel)
    try:
        if role == "seg":
            write_dicom_seg(pred.labels, tmp, like=volume, algorithm=model.name,
                            class_names=list(model.task.class_names),
                            class_codes=model.meta.class_codes)
        else:
            write_derived_series(pred.image, tmp, like=volume, algorithm=model.name,
                                 model_hash=model.hash)
    except Exception as exc:  # noqa: BLE001 - highdicom raises many kinds for odd series
        _remove(tmp)
        seg = role == "seg"
        kept = f"{scan.name}_labels.nii.gz" if seg else f"{scan.name}_denoised.nii.gz"
        if kept not in written.temps:
            written.temps[kept] = folder.temp_path(outdir, kept)
            write_volume(pred.labels if seg else pred.image, written.temps[kept], like=volume,
                         class_names=list(model.task.class_names) if seg else None)
        why = message(exc).replace(str(tmp), rel)  # name the output, not its temp file
        why = why.replace(str(tmp.relative_to(outdir)), rel)
        what = "DICOM SEG" if seg else "derived DICOM series"
        text = (f"{what} not written ({why}); the {'labels are' if seg else 'denoised image is'}"
                f" kept as NIfTI ({kept})")
        if isinstance(exc, UnsupportedSourceError):
            written.warnings.append(text)
        else:
            written.error = text
        return
    written.temps[rel] = tmp
    if role == "series":
        written.folders.add(rel)


def _remove(path: Path) -> None:
    """A temporary output: a file, or a derived series' folder."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _write_qc(scan: Scan, model, volume, pred, written: _Written, name: str,
              outdir: str) -> str:
    kind = model.task.kind
    result = pred.image if kind == "denoise" else pred.labels
    written.temps[name] = folder.temp_path(Path(outdir), name)
    qc.render_qc(volume.array, result, volume.spacing, kind, written.temps[name],
                 title=_qc_title(scan.name, written.quality), n_labels=model.task.n_labels)
    return name


def commit_outputs(job: BatchJob, scan: Scan, written: _Written) -> None:
    """Rename the scan's temporary files into place, recording their hashes first.

    A target that exists must be napari-unet's own (its hash in the manifest; a derived
    series' folder: every file in it); the manifest lists old and new hashes while the
    renames run, so a run killed halfway still recognises every file; then it is
    rewritten as ``done`` (or ``incomplete``).
    """
    outdir = Path(job.outdir)
    old = (resume.read_manifest(outdir, scan.name) or {}).get("files", {})
    new: dict[str, str | None] = {}
    for rel, tmp in written.temps.items():
        if rel in written.folders:
            check_replaceable_folder(outdir, rel, old)
            new.update(folder_digests(tmp, rel))
        else:
            check_replaceable(outdir, rel, old.get(rel, ()))
            new[rel] = digest(tmp)
    files = {**old, **{rel: list(dict.fromkeys([*old.get(rel, ()), h])) for rel, h in new.items()}}
    base = resume.base_record(scan, job.model_hash, job.digest)
    resume.write_manifest(outdir, scan.name, {**base, "status": "committing", "files": files})
    for parent in {str(Path(rel).parent) for rel in written.temps} - {"."}:
        folder.real_dir(outdir, parent)  # sub-01/ses-1/anat, qc: folders, never links
    placed = []
    try:
        for rel, tmp in written.temps.items():
            if rel in written.folders:
                _replace_folder(outdir, rel, tmp)
            else:
                _rename(tmp, outdir, rel)
            placed.append(rel)
    except BaseException:
        for rel in placed:  # a failed scan leaves none of its new outputs behind
            _remove(outdir / rel)
        raise
    stale = {k for k in files for rel in written.folders if k.startswith(f"{rel}/")}
    files = {k: v for k, v in files.items() if k not in stale}
    files.update({rel: [h] for rel, h in new.items()})
    status = "incomplete" if written.error else "done"
    resume.write_manifest(outdir, scan.name, {**base, "status": status, "files": files,
                                              "outputs": written.outputs,
                                              "qc": written.picture,
                                              "quality": written.quality,
                                              "resampled": written.resampled,
                                              "stats": resume.file_stats(outdir, new)})


def _rename(tmp: Path, outdir: Path, rel: str) -> None:
    """Put an output in place; what the system refuses names the output, not the
    temporary file."""
    try:
        os.replace(tmp, outdir / rel)
    except OSError as exc:
        raise type(exc)(exc.errno, exc.strerror, rel) from exc


def _replace_folder(outdir: Path, rel: str, tmp: Path) -> None:
    """Put a derived series' folder in place; an old one (checked to be ours) goes to the
    temporary folder first and is deleted after (a folder cannot replace a full one)."""
    target = outdir / rel
    if os.path.lexists(target):
        old = folder.temp_path(outdir, f"{rel}-replaced")
        os.rename(target, old)
        os.rename(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, target)


def message(exc: BaseException) -> str:
    """One scan's error: ours as it is, what the OS refused in plain words (a full disk,
    a file gone), anything else with its type."""
    from ..os_errors import is_known, plain

    if isinstance(exc, NapariUnetError):
        text = str(exc)
    elif is_known(exc):
        text = plain(exc, advice=True)
    else:
        text = f"{type(exc).__name__}: {exc}"
    return text[:2000]


def _warning_texts(caught) -> list[str]:
    return sorted({str(w.message) for w in caught if not issubclass(
        w.category, (DeprecationWarning, PendingDeprecationWarning, FutureWarning))})


def _free_accelerator_memory() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def _since(start: float) -> float:
    return time.perf_counter() - start


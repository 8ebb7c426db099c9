"""One scan of a batch: read, predict, write every output, commit; runs in any worker.

:func:`process_scan` is top-level and picklable, so the same code runs in this process,
in local worker processes or on a Dask cluster. It never raises: any failure becomes a
``failed`` report entry, so one broken scan (or a CUDA out-of-memory) does not end the
batch. Outputs are written to temporary files first; :func:`commit_outputs` renames them
into place only where the target is absent or napari-unet's own (:mod:`.owned`).
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import NapariUnetError
from ..io.source import DicomSource
from . import outdir as folder
from . import qc, resume
from .discover import Scan
from .naming import output_names
from .owned import check_replaceable, digest
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


@dataclass
class _Written:
    """A scan's temporary outputs and what went wrong short of failing it."""

    temps: dict[str, Path]
    outputs: list[str]
    picture: str | None = None
    error: str | None = None
    quality: dict | None = None  # the result's Quality.to_dict()


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
                 quality=written.quality)


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
    record = resume.read_manifest(outdir, scan.name) or {}
    for rel in names:  # fail before predicting when an output could not be committed
        check_replaceable(outdir, rel, record.get("files", {}).get(rel, ()))
    pred = predict(volume, model, job.settings.inference)
    quality = assess(volume, model, pred)
    written = _Written({}, [], quality=quality.to_dict())
    try:
        _write_outputs(scan, job, model, volume, pred, names, written)
        commit_outputs(job, scan, written)
    finally:
        for tmp in written.temps.values():
            tmp.unlink(missing_ok=True)
    # geometry the reader had to assume (also warned, so caught above for any source)
    notes = set(volume.source.warnings if isinstance(volume.source, DicomSource) else ())
    if few_label_values(volume.array):
        notes.add(LOOKS_LIKE_LABELS)
    return written, notes


def _names(scan: Scan, job: BatchJob, model, volume) -> dict[str, str]:
    """Relative output path -> role, QC picture included."""
    dicom_input = isinstance(volume.source, DicomSource)
    if job.settings.format == "dicom-seg" and not dicom_input:
        raise NapariUnetError(f"{scan.input}: DICOM SEG output needs DICOM input; use "
                              "--format nifti (or both: SEG where the input is DICOM)")
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
        if role in ("seg", "qc"):
            continue
        data = {"labels": pred.labels, "image": pred.image, "uncertainty": pred.uncertainty,
                "probabilities": pred.probabilities}[role]
        if data is None:
            continue
        written.temps[rel] = folder.temp_path(outdir, rel)
        names_of = list(model.task.class_names) if role == "labels" else None
        write_volume(data, written.temps[rel], like=volume, class_names=names_of)
    seg = next((rel for rel, role in names.items() if role == "seg"), None)
    if seg is not None:
        _write_seg(scan, job, model, volume, pred, seg, written)
    written.outputs = list(written.temps)
    if job.settings.qc:
        written.picture = _write_qc(scan, job, model, volume, pred, written)


def _qc_title(name: str, quality: dict | None) -> str:
    """The picture's title: the scan's name and its quality score (review or not)."""
    if not quality or quality.get("score") is None:
        return name
    return f"{name}  -  quality {quality['score']:.2f}" + (
        ": review" if quality.get("review") else "")


def _write_seg(scan: Scan, job: BatchJob, model, volume, pred, rel: str,
               written: _Written) -> None:
    """A DICOM SEG that cannot be written fails the scan but keeps its labels as NIfTI."""
    from ..io import write_dicom_seg, write_volume

    tmp = folder.temp_path(Path(job.outdir), rel)
    try:
        write_dicom_seg(pred.labels, tmp, like=volume, class_names=list(model.task.class_names),
                        algorithm=model.name)
    except Exception as exc:  # noqa: BLE001 - highdicom raises many kinds for odd series
        tmp.unlink(missing_ok=True)
        labels = f"{scan.name}_labels.nii.gz"
        if labels not in written.temps:
            written.temps[labels] = folder.temp_path(Path(job.outdir), labels)
            write_volume(pred.labels, written.temps[labels], like=volume,
                         class_names=list(model.task.class_names))
        why = message(exc).replace(str(tmp), rel)  # name the output, not its temp file
        why = why.replace(str(tmp.relative_to(job.outdir)), rel)
        written.error = f"DICOM SEG not written ({why}); the labels are kept as NIfTI ({labels})"
        return
    written.temps[rel] = tmp


def _write_qc(scan: Scan, job: BatchJob, model, volume, pred, written: _Written) -> str:
    kind = model.task.kind
    result = pred.image if kind == "denoise" else pred.labels
    name = f"{qc.QC_DIR}/{scan.name}.png"
    written.temps[name] = folder.temp_path(Path(job.outdir), name)
    qc.render_qc(volume.array, result, volume.spacing, kind, written.temps[name],
                 title=_qc_title(scan.name, written.quality), n_labels=model.task.n_labels)
    return name


def commit_outputs(job: BatchJob, scan: Scan, written: _Written) -> None:
    """Rename the scan's temporary files into place, recording their hashes first.

    A target that exists must be napari-unet's own (its hash in the manifest); the
    manifest lists old and new hashes while the renames run, so a run killed halfway
    still recognises every file; then it is rewritten as ``done`` (or ``incomplete``).
    """
    outdir = Path(job.outdir)
    old = (resume.read_manifest(outdir, scan.name) or {}).get("files", {})
    for rel in written.temps:
        check_replaceable(outdir, rel, old.get(rel, ()))
    new = {rel: digest(tmp) for rel, tmp in written.temps.items()}
    files = {**old, **{rel: list(dict.fromkeys([*old.get(rel, ()), h])) for rel, h in new.items()}}
    base = resume.base_record(scan, job.model_hash, job.digest)
    resume.write_manifest(outdir, scan.name, {**base, "status": "committing", "files": files})
    if written.picture:
        folder.real_dir(outdir, qc.QC_DIR)
    for rel, tmp in written.temps.items():
        os.replace(tmp, outdir / rel)
    files.update({rel: [h] for rel, h in new.items()})
    status = "incomplete" if written.error else "done"
    resume.write_manifest(outdir, scan.name, {**base, "status": status, "files": files,
                                              "outputs": written.outputs,
                                              "qc": written.picture,
                                              "quality": written.quality})


def message(exc: BaseException) -> str:
    text = str(exc) if isinstance(exc, NapariUnetError) else f"{type(exc).__name__}: {exc}"
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


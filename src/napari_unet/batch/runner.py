"""Run a model over many scans: in this process, in local processes or on a Dask cluster.

:func:`process_scan` is the unit of work (top-level and picklable): read, predict, write
every output to a temporary file, rename them into place, then write the resume
manifest. It never raises: any failure becomes a ``failed`` report entry, so one broken
scan (or a CUDA out-of-memory) does not end the batch. :func:`run_batch` discovers the
scans, skips finished ones, hands the rest to an executor and records each result in
``report.json`` and ``index.html`` as it arrives.
"""

from __future__ import annotations

import os
import signal
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import NapariUnetError, SettingsError
from ..io.source import DicomSource
from . import files, qc, resume
from .discover import Scan, discover_scans, redact
from .naming import output_names
from .report import Report, entry
from .settings import BatchSettings

# Fault-injection hook for tests: the process SIGKILLs itself while committing the scan
# after this many committed scans (its temporary outputs written, none renamed yet).
KILL_AFTER_ENV = "NAPARI_UNET_TEST_KILL_AFTER"
RESUMED = "outputs exist for this model and settings (use --overwrite to redo)"

_MODELS: dict[tuple, object] = {}  # per worker process: the model, loaded once
MODEL_LOADS = 0  # how many times this process loaded a model (tests check "once per worker")
_COMMITS = 0


class NoScansFound(SettingsError):
    """The inputs hold no NIfTI file and no DICOM series."""


@dataclass(frozen=True)
class Job:
    """What every scan of a batch shares; small and picklable (sent to each worker)."""

    model_ref: str  # bundled model name or absolute model file path
    model_hash: str
    outdir: str
    settings: BatchSettings
    digest: str


@dataclass
class BatchResult:
    report: dict
    report_path: Path
    index_path: Path | None

    @property
    def counts(self) -> dict:
        return self.report["counts"]

    @property
    def exit_code(self) -> int:
        """0 when every scan is ok or skipped, 1 when any failed (CLI contract)."""
        return 1 if self.counts.get("failed") else 0


# --- one scan (runs in a worker) -------------------------------------------------------------


def process_scan(scan: Scan, job: Job) -> dict:
    """Predict one scan and write its outputs; returns its report entry, never raises."""
    start = time.perf_counter()
    if scan.skip_reason:
        return entry(scan, "skipped", reason=scan.skip_reason)
    if scan.error:
        return entry(scan, "failed", error=scan.error)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            outputs, picture = _predict_and_write(scan, job)
        except Exception as exc:  # noqa: BLE001 - fault isolation: record and go on
            _free_accelerator_memory()
            return entry(scan, "failed", error=_message(exc), seconds=_since(start),
                         warnings=_warning_texts(caught))
    return entry(scan, "ok", outputs, seconds=_since(start), qc=picture,
                 warnings=_warning_texts(caught))


def cached_model(job: Job):
    """The job's model, loaded once per worker process and checked against its hash."""
    global MODEL_LOADS
    from ..model.checkpoint import load_model

    device = getattr(job.settings.inference, "device", "auto")
    key = (job.model_ref, job.model_hash, str(device))
    if key not in _MODELS:
        model = load_model(job.model_ref, device=device)
        MODEL_LOADS += 1
        if model.hash != job.model_hash:
            raise NapariUnetError(f"{job.model_ref}: this worker's model file differs from "
                                  "the one the batch started with (hash mismatch)")
        _MODELS.clear()
        _MODELS[key] = model
    return _MODELS[key]


def _predict_and_write(scan: Scan, job: Job) -> tuple[list[str], str | None]:
    from ..inference.predictor import predict
    from ..io import read_volume

    model = cached_model(job)
    volume = read_volume(scan.input, series=scan.series)
    pred = predict(volume, model, job.settings.inference)
    temps: dict[str, Path] = {}
    try:
        _write_outputs(scan, job, model, volume, pred, temps)
        picture = _write_qc(scan, job, model, volume, pred, temps)
        _commit(job.outdir, temps)
    finally:
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)
    outputs = [name for name in temps if not name.startswith(qc.QC_DIR + "/")]
    resume.write_manifest(job.outdir, scan, job.model_hash, job.digest, outputs, picture)
    return outputs, picture


def _write_outputs(scan: Scan, job: Job, model, volume, pred, temps: dict) -> None:
    from ..io import write_dicom_seg, write_volume

    dicom_input = isinstance(volume.source, DicomSource)
    if job.settings.format == "dicom-seg" and not dicom_input:
        raise NapariUnetError(f"{scan.input}: DICOM SEG output needs DICOM input; use "
                              "--format nifti (or both: SEG where the input is DICOM)")
    names = output_names(scan.name, model.task.kind, job.settings.format, dicom_input,
                         job.settings.probabilities)
    for role, name in names.items():
        data = _output_data(pred, role)
        if data is None:
            continue
        temps[name] = files.temp_path(job.outdir, name)
        if role == "seg":
            write_dicom_seg(data, temps[name], like=volume,
                            class_names=list(model.task.class_names))
        else:
            write_volume(data, temps[name], like=volume)


def _output_data(pred, role: str):
    if role in ("labels", "seg"):
        return pred.labels
    return getattr(pred, role, None)  # image, probabilities, uncertainty


def _write_qc(scan: Scan, job: Job, model, volume, pred, temps: dict) -> str | None:
    if not job.settings.qc:
        return None
    kind = model.task.kind
    result = pred.image if kind == "denoise" else pred.labels
    name = f"{qc.QC_DIR}/{scan.name}.png"
    temps[name] = files.temp_path(job.outdir, f"{scan.name}.png")
    qc.render_qc(volume.array, result, volume.spacing, kind, temps[name], title=scan.name,
                 n_labels=model.task.n_labels)
    return name


def _commit(outdir: str, temps: dict[str, Path]) -> None:
    global _COMMITS
    _fault_injection_point()
    for name, tmp in temps.items():
        files.commit(tmp, Path(outdir) / name)
    _COMMITS += 1


def _fault_injection_point() -> None:
    limit = os.environ.get(KILL_AFTER_ENV, "")
    if limit.isdigit() and int(limit) <= _COMMITS:
        os.kill(os.getpid(), signal.SIGKILL)


def _message(exc: BaseException) -> str:
    text = str(exc) if isinstance(exc, NapariUnetError) else f"{type(exc).__name__}: {exc}"
    return text[:2000]


def _warning_texts(caught) -> list[str]:
    return sorted({str(w.message) for w in caught if not issubclass(
        w.category, (DeprecationWarning, PendingDeprecationWarning, FutureWarning))})


def _free_accelerator_memory() -> None:
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def _since(start: float) -> float:
    return time.perf_counter() - start


# --- executors ----------------------------------------------------------------------------------


def _run_local(scans: list[Scan], job: Job, cancel, on_start) -> Iterator[dict]:
    for scan in scans:
        if cancel and cancel():
            return
        on_start(scan.name)
        yield process_scan(scan, job)


def _init_worker(threads: int) -> None:
    os.environ["OMP_NUM_THREADS"] = str(threads)


def _run_processes(scans: list[Scan], job: Job, cancel, on_start) -> Iterator[dict]:
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    workers = min(job.settings.workers, len(scans)) or 1
    threads = max(1, (os.cpu_count() or 1) // workers)
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"),
                             initializer=_init_worker, initargs=(threads,)) as pool:
        futures = {pool.submit(process_scan, scan, job): scan for scan in scans}
        for future in as_completed(futures):
            yield _result_or_failure(future, futures[future])
            if cancel and cancel():
                pool.shutdown(cancel_futures=True)
                return


def _run_dask(scans: list[Scan], job: Job, cancel, on_start) -> Iterator[dict]:
    from distributed import Client, as_completed

    with _connect(Client, job.settings.scheduler) as client:
        futures = {client.submit(process_scan, scan, job, pure=False,
                                 key=f"napari-unet-{scan.name}-{os.urandom(4).hex()}"): scan
                   for scan in scans}
        for future in as_completed(list(futures), loop=client.loop):
            yield _result_or_failure(future, futures[future])
            if cancel and cancel():
                client.cancel(list(futures))
                return


def _connect(client_class, address: str):
    try:
        return client_class(address, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise SettingsError(f"cannot reach the Dask scheduler at {address} ({exc}); "
                              "check the address or start the cluster first") from exc


def _result_or_failure(future, scan: Scan) -> dict:
    """A worker that died (killed, out of memory) fails its scan, not the batch."""
    try:
        return future.result()
    except Exception as exc:  # noqa: BLE001
        return entry(scan, "failed", error=f"worker failed: {_message(exc)}")


def _executor(settings: BatchSettings) -> Callable:
    if settings.scheduler:
        return _run_dask
    return _run_processes if settings.workers > 1 else _run_local


# --- the batch -------------------------------------------------------------------------------


def run_batch(inputs: list[str | os.PathLike], outdir: str | os.PathLike, model: str,
              settings: BatchSettings | None = None,
              progress: Callable[[int, int], None] | None = None,
              on_scan: Callable[[str, dict | None], None] | None = None,
              cancel: Callable[[], bool] | None = None) -> BatchResult:
    """Predict every scan under ``inputs`` into ``outdir``; see the module docstring.

    ``progress(done, total)`` is called after each scan; ``on_scan(name, None)`` when a
    scan starts (in-process runs only) and ``on_scan(name, entry)`` when it ends.
    ``model`` problems raise :class:`~napari_unet.errors.ModelFileError` before any work.
    """
    settings = settings or BatchSettings()
    outdir = Path(outdir).resolve()
    loaded, ref = _load_for_batch(model, settings)
    if settings.format == "dicom-seg" and loaded.task.kind != "segment":
        raise SettingsError(f"{model}: a {loaded.task.kind} model writes images, not "
                              "segmentations; --format dicom-seg needs a segmentation model")
    found = discover_scans(inputs, exclude=outdir, series=settings.series)
    if not found.scans:
        what = f"matching --series {settings.series} " if settings.series else ""
        raise NoScansFound(f"no NIfTI file or DICOM series {what}found in "
                           f"{', '.join(str(i) for i in inputs)}")
    outdir.mkdir(parents=True, exist_ok=True)
    files.clear_partial(outdir)
    job = Job(ref, loaded.hash, str(outdir), settings, settings.digest())
    report = Report(outdir, {"name": loaded.name, "hash": loaded.hash, "task": loaded.task.kind},
                    settings.to_dict(), [s.name for s in found.scans])
    record = _recorder(report, outdir, settings, found.identifiers, progress, on_scan)
    if progress:
        progress(0, report.total)
    todo = []
    for scan in found.scans:
        done = _already_done(scan, job)
        if done is not None:
            record(done)
        elif scan.skip_reason or scan.error:
            record(process_scan(scan, job))
        else:
            todo.append(scan)
    for item in _executor(settings)(todo, job, cancel, lambda n: on_scan and on_scan(n, None)):
        record(item)
    report.finished = len(report.entries) == len(found.scans)
    report.save()
    files.clear_partial(outdir)
    index = qc.write_index(outdir, report.to_dict()) if settings.qc else None
    return BatchResult(report.to_dict(), report.path, index)


def _load_for_batch(model: str, settings: BatchSettings):
    """Load the model once here (for its hash; in-process runs reuse it)."""
    from ..model.checkpoint import bundled_models, load_model

    device = getattr(settings.inference, "device", "auto")
    loaded = load_model(model, device=device)
    ref = str(model) if str(model) in bundled_models() and not Path(model).is_file() \
        else str(Path(model).resolve())
    _MODELS.clear()
    _MODELS[(ref, loaded.hash, str(device))] = loaded
    return loaded, ref


def _already_done(scan: Scan, job: Job) -> dict | None:
    if job.settings.overwrite or scan.skip_reason or scan.error:
        return None
    record = resume.finished(job.outdir, scan, job.model_hash, job.digest)
    if record is None:
        return None
    return entry(scan, "skipped", record["outputs"], qc=record.get("qc"), reason=RESUMED)


def _recorder(report: Report, outdir: Path, settings: BatchSettings, identifiers: set[str],
              progress, on_scan) -> Callable[[dict], None]:
    def record(item: dict) -> None:
        for key in ("error", "reason"):
            item[key] = redact(item[key], identifiers)
        item["warnings"] = [redact(w, identifiers) for w in item.get("warnings", [])]
        report.add(item)
        if settings.qc:
            qc.write_index(outdir, report.to_dict())
        if on_scan:
            on_scan(item["name"], item)
        if progress:
            progress(len(report.entries), report.total)

    return record

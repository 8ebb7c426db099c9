"""``napari-unet predict INPUT... -o OUTDIR --model MODEL``: one scan or whole folders.

A thin face over :func:`napari_unet.batch.run_batch`: parse flags into
``InferenceSettings`` + ``BatchSettings``, show a progress bar over scans, exit 0 when
every scan is ok or skipped, 1 when any failed, 2 for usage errors (bad flags, a missing
input or model). Scans are only ever shown by their non-identifying output names.
"""

from __future__ import annotations

import sys
from pathlib import Path

EPILOG = """outputs (in OUTDIR):
  <name>_labels.nii.gz         segmentation labels, in the scan's geometry
  <name>_denoised.nii.gz       denoised image (denoising models)
  <name>_seg.dcm               DICOM SEG (--format dicom-seg|both, DICOM input)
  <name>_probabilities.nii.gz  per-class probabilities, and <name>_uncertainty.nii.gz
                               (--probabilities)
  report.json, index.html, qc/<name>.png
<name> is the file name for NIfTI, and modality, series number, series description and
a short hash of the SeriesInstanceUID for DICOM: never the patient's name or ID.
Scans whose outputs exist for the same model and settings are skipped (resume);
--overwrite redoes them. exit codes: 0 all ok or skipped, 1 a scan failed, 2 usage error.
"""


def add_parser(sub) -> None:
    import argparse

    p = sub.add_parser(
        "predict", help="segment or denoise scans (files or folders, resumable batch)",
        description="Run a model over NIfTI files and DICOM series (folders are searched "
        "recursively) and write the results in each scan's geometry.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="NIfTI/DICOM files or folders")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="output folder")
    p.add_argument("--model", required=True, help="bundled model name or model file")
    _add_inference_flags(p)
    _add_batch_flags(p)
    p.set_defaults(func=run)


def _add_inference_flags(p) -> None:
    p.add_argument("--axis", default="auto", choices=["auto", "0", "1", "2"],
                   help="slice axis (auto: the acquisition axis)")
    p.add_argument("--roi", nargs=2, type=_positive_int, metavar=("H", "W"),
                   help="tile size (default: whole slices when they fit in memory, "
                   "else the model's patch size)")
    p.add_argument("--overlap", type=float, default=0.25, help="tile overlap in [0, 1)")
    p.add_argument("--batch-size", type=_positive_int, help="slices per batch (default: auto)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    p.add_argument("--tta", action="store_true", help="test-time augmentation (flips)")
    p.add_argument("--precision", default="auto",
                   choices=["auto", "float32", "bfloat16", "float16"],
                   help="auto: bf16 for segmentation on CUDA and on CPUs with native bf16, "
                   "else float32")
    p.add_argument("--probabilities", action="store_true",
                   help="also write probabilities and an uncertainty map")


def _add_batch_flags(p) -> None:
    p.add_argument("--format", default="nifti", choices=["nifti", "dicom-seg", "both"],
                   help="output format for labels (dicom-seg needs DICOM input)")
    p.add_argument("--overwrite", action="store_true", help="redo scans that are finished")
    p.add_argument("--workers", type=_positive_int, default=1, help="local worker processes")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="run on an existing Dask cluster (e.g. tcp://host:8786)")
    p.add_argument("--series", metavar="UID_OR_INDEX",
                   help="only this DICOM series (SeriesInstanceUID, short hash or index)")
    p.add_argument("--no-qc", action="store_true", help="no QC pictures or index.html")
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-scan lines")


def _positive_int(text: str) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def run(args) -> int:
    from ..errors import ModelFileError, NapariUnetError, SettingsError

    try:
        settings = build_settings(args)
        _check_inputs(args.inputs)
    except (NapariUnetError, ValueError) as exc:
        return _usage_error(exc)
    from ..batch.runner import run_batch

    bar = _ProgressBar(args.quiet)
    try:
        result = run_batch(args.inputs, args.output, args.model, settings,
                           progress=bar.progress, on_scan=bar.on_scan)
    except (ModelFileError, SettingsError) as exc:
        return _usage_error(exc)
    finally:
        bar.close()
    _summary(result, args.quiet)
    return result.exit_code


def build_settings(args):
    """Flags -> ``BatchSettings`` (holding ``InferenceSettings``); ValueError if invalid."""
    from ..batch.settings import BatchSettings
    from ..devices import resolve_device
    from ..inference.predictor import InferenceSettings

    resolve_device(args.device)  # an unknown or absent device is a usage error
    axis = args.axis if args.axis == "auto" else int(args.axis)
    inference = InferenceSettings(axis=axis, roi_size=tuple(args.roi) if args.roi else None,
                                  overlap=args.overlap, batch_size=args.batch_size,
                                  device=args.device, tta=args.tta,
                                  probabilities=args.probabilities,
                                  precision=args.precision)
    return BatchSettings(inference=inference, format=args.format, overwrite=args.overwrite,
                         workers=args.workers, scheduler=args.scheduler, quiet=args.quiet,
                         qc=not args.no_qc, series=args.series)


def _check_inputs(inputs: list[str]) -> None:
    missing = [i for i in inputs if not Path(i).exists()]
    if missing:
        raise ValueError(f"{', '.join(missing)}: no such file or folder")


def _usage_error(exc: Exception) -> int:
    print(f"napari-unet predict: error: {exc}", file=sys.stderr)
    return 2


def _summary(result, quiet: bool) -> None:
    counts = result.counts
    if quiet and not counts.get("failed"):
        return
    where = f"; QC: {result.index_path}" if result.index_path else ""
    print(f"{counts['ok']} ok, {counts['failed']} failed, {counts['skipped']} skipped; "
          f"report: {result.report_path}{where}", file=sys.stderr)


class _ProgressBar:
    """tqdm over scans: the current scan's name and running ok/failed/skipped counts."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.bar = None
        self.counts = {"ok": 0, "failed": 0, "skipped": 0}

    def _open(self):
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(unit="scan", file=sys.stderr, dynamic_ncols=True)
        return self.bar

    def progress(self, done: int, total: int) -> None:
        if not self.quiet and self._open().total != total:
            self.bar.total = total
            self.bar.refresh()

    def on_scan(self, name: str, entry: dict | None) -> None:
        if self.quiet:
            return
        self._open()
        if entry is None:
            self.bar.set_description_str(name[:40])
            return
        self.counts[entry["status"]] += 1
        if entry["status"] == "failed":
            self.bar.write(f"failed: {name}: {entry['error']}", file=sys.stderr)
        self.bar.set_postfix(self.counts, refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

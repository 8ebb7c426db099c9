"""``napari-unet predict INPUT... -o OUTDIR --model MODEL``: one scan or whole folders.

A thin face over :func:`napari_unet.batch.run_batch`: parse flags into
``InferenceSettings`` + ``BatchSettings``, show a progress bar over scans, exit 0 when
every scan is ok or skipped, 1 when any failed; usage errors (bad flags, a missing input
or model, an unusable output folder) raise ``SettingsError``, which ``cli.main`` turns
into exit 2. Scans are only ever shown by their patient-free names.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .main import one_line
from .options import add_axis_flag, dataclass_defaults, fields_from

EPILOG = """outputs (in OUTDIR):
  <name>_labels.nii.gz         segmentation labels, in the scan's geometry
  <name>_denoised.nii.gz       denoised image (denoising models)
  <name>_seg.dcm               DICOM SEG (--format dicom|dicom-seg|both, DICOM input)
  <name>_denoised/             derived DICOM series, one file per source image
                               (--format dicom|both, denoising models, DICOM input)
  <name>_probabilities.nii.gz  per-class probabilities, and <name>_uncertainty.nii.gz
                               (--probabilities)
  report.json, index.html, qc/<name>.png
Every result gets a quality score (0..1, from the model's own uncertainty and how unlike
its training scans the scan is); below 0.90 it is flagged for review, with the reason,
in report.json ("score", "review", "review_reasons"), first in index.html, and counted
at the end.
<name> is the file's own name for NIfTI (never its folders; scan_<hash> when the name
looks like patient data), and modality, series number, series description and a short
hash of the SeriesInstanceUID for DICOM: never the patient's name or ID, however spelled.
A name that only a file name carries cannot be known: --names counter names scans
scan-0001, ... instead. Messages and index.html show only these names; report.json also
lists input paths (--no-input-paths leaves them out).
Scans whose outputs exist for the same model and settings are skipped (resume);
--overwrite redoes them. A file napari-unet did not write is never replaced, with or
without --overwrite. One run at a time per OUTDIR.
A DICOM output the source's kind of DICOM cannot carry (a SEG of an RT Dose, a derived
series of a PET scan) is a warning, the NIfTI stands in; --format both on NIfTI input
writes NIfTI and says so.

BIDS: an INPUT that is a BIDS dataset (or a sub-* folder or file in one) makes OUTDIR a
BIDS derivative dataset (dataset_description.json, README.md, .bidsignore) with
  sub-<label>[/ses-<label>]/anat/<entities>_space-orig_dseg.nii.gz (+ .json, .tsv)
  ..._space-orig_label-<class>_probseg.nii.gz, ..._desc-denoised_<suffix>.nii.gz
  sub-<label>/figures/<output>.png (QC)
Images are chosen by entities: the model's suffix (T1w for the bundled models) among the
anat NIfTI images, updated by --bids-filter / --bids-filter-file / --participant-label.
exit codes: 0 all ok or skipped, 1 a scan (or writing the report) failed, 2 usage error.
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
    from ..inference.planes import PLANE_MODES
    from ..inference.predictor import PRECISIONS, InferenceSettings

    d = dataclass_defaults(InferenceSettings)
    add_axis_flag(p, d["axis"], "read", "the acquisition plane")
    p.add_argument("--roi", dest="roi_size", nargs=2, type=_positive_int, metavar=("H", "W"),
                   default=d["roi_size"],
                   help="tile size (default: whole slices when they fit in memory, else "
                   "the model's patch size)")
    p.add_argument("--overlap", type=float, default=d["overlap"],
                   help=f"tile overlap in [0, 1) (default {d['overlap']})")
    p.add_argument("--batch-size", type=_positive_int, default=d["batch_size"],
                   help="slices per batch (default: auto)")
    p.add_argument("--device", default=d["device"], help="auto, cpu, cuda, cuda:1, mps")
    p.add_argument("--tta", action="store_true", help="test-time augmentation (flips)")
    p.add_argument("--planes", default=d["planes"], choices=PLANE_MODES,
                   help="segmentation: 'all' also runs along the other two planes and "
                   "averages the class probabilities (3-4x the time; near-cubic voxels "
                   "only), 'one' the --axis plane only; auto (default): what the model was "
                   "made for (`napari-unet info MODEL`): one plane, or all three weighted "
                   "by the context each plane's slices show (on a partial scan, the thin "
                   "planes count less, and not at all where they disagree with its own)")
    p.add_argument("--precision", default=d["precision"], choices=PRECISIONS,
                   help="auto: bf16 for segmentation on CUDA and on CPUs with native bf16, "
                   "else float32")
    p.add_argument("--deterministic", action="store_true",
                   help="the same output bits on every run on CUDA (slower kernels)")
    p.add_argument("--probabilities", action="store_true",
                   help="also write probabilities and an uncertainty map")
    p.add_argument("--no-crop", dest="crop", action="store_false",
                   help="run the net over every pixel (default: only over the head or body "
                   "and a margin; the rest is the model's own answer on air)")
    p.add_argument("--native-spacing", dest="resample", action="store_false",
                   help="run the net on the scan's own pixels, not resampled to the pixel "
                   "spacing the model learned at (outputs are on the scan's grid either way)")


def _add_batch_flags(p) -> None:
    from ..batch.settings import FORMATS, NAMINGS, BatchSettings

    d = dataclass_defaults(BatchSettings)
    p.add_argument("--format", default=d["format"], choices=FORMATS,
                   help="nifti (default); dicom: a DICOM SEG (segmentation) or a derived "
                   "DICOM series (denoising), for DICOM input; dicom-seg: the SEG; both: "
                   "NIfTI, and DICOM where the input is DICOM")
    p.add_argument("--overwrite", action="store_true",
                   help="redo finished scans (only napari-unet's own files are replaced)")
    p.add_argument("--workers", type=_positive_int, default=d["workers"],
                   help="local worker processes")
    p.add_argument("--scheduler", metavar="ADDRESS", default=d["scheduler"],
                   help="run on an existing Dask cluster (e.g. tcp://host:8786)")
    p.add_argument("--series", metavar="UID_OR_INDEX", default=d["series"],
                   help="only this DICOM series (SeriesInstanceUID, short hash or index)")
    p.add_argument("--no-qc", dest="qc", action="store_false",
                   help="no QC pictures or index.html")
    p.add_argument("--no-input-paths", dest="input_paths", action="store_false",
                   help="leave input paths out of report.json (the only place they appear)")
    p.add_argument("--names", default=d["names"], choices=NAMINGS,
                   help="auto: outputs named after each file's own name or the series' "
                   "attributes (patient names and IDs from the DICOM headers removed); "
                   "counter: scan-0001, scan-0002, ... and no part of any input's name "
                   "anywhere (for names that only a file or folder name carries)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-scan lines")
    _add_bids_flags(p)


def _add_bids_flags(p) -> None:
    g = p.add_argument_group("BIDS datasets")
    g.add_argument("--bids-filter", nargs="+", metavar="ENTITY=VALUE",
                   help="choose images of a BIDS input by entities, e.g. suffix=T2w "
                   "session=1 run=1,2 (entity names or keys: sub, ses, acq, ...); they "
                   "replace the defaults datatype=anat, suffix=<the model's, e.g. T1w>, "
                   "extension=.nii,.nii.gz key by key")
    g.add_argument("--bids-filter-file", metavar="JSON",
                   help="the same as a JSON object of entity -> value, list of values, null "
                   "(absent) or \"*\" (any), as fMRIPrep's --bids-filter-file")
    g.add_argument("--participant-label", nargs="+", metavar="LABEL",
                   help="only these subjects (with or without 'sub-'), as BIDS apps take them")


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
    from ..batch.runner import run_batch

    settings = build_settings(args)
    _check_inputs(args.inputs)
    bar = _ProgressBar(args.quiet)
    try:
        result = run_batch(args.inputs, args.output, args.model, settings,
                           progress=bar.progress, on_scan=bar.on_scan)
    finally:
        bar.close()
    _summary(result, args)
    return result.exit_code


def build_settings(args):
    """Flags -> ``BatchSettings`` holding ``InferenceSettings`` (flags carry the fields'
    names); a ``SettingsError`` when they cannot work."""
    from ..batch.settings import BatchSettings
    from ..devices import resolve_device
    from ..inference.predictor import InferenceSettings

    resolve_device(args.device)  # an unknown or absent device is a usage error
    inference = InferenceSettings(**fields_from(InferenceSettings, args))
    batch = {k: v for k, v in fields_from(BatchSettings, args).items() if k != "bids_filter"}
    return BatchSettings(inference=inference, bids_filter=bids_filter(args), **batch)


def bids_filter(args) -> dict:
    """--bids-filter-file, then --bids-filter, then --participant-label: entity -> value."""
    from ..io.bids import parse_filter_args, read_filter_file

    query = read_filter_file(args.bids_filter_file) if args.bids_filter_file else {}
    query.update(parse_filter_args(args.bids_filter))
    if args.participant_label:
        labels = [label.removeprefix("sub-") for label in args.participant_label]
        query["subject"] = labels if len(labels) > 1 else labels[0]
    return query


def _check_inputs(inputs: list[str]) -> None:
    """Every input exists; one the OS refuses outright (a path too long) is a usage
    error in plain words, named by its last part only."""
    from ..errors import SettingsError
    from ..os_errors import plain

    missing = []
    for given in inputs:
        try:
            os.lstat(given)
        except FileNotFoundError:
            missing.append(given)
        except OSError as exc:
            name = given if len(given) <= 200 else f".../{Path(given).name[:80]}"
            raise SettingsError(f"{name}: {plain(OSError(exc.errno, exc.strerror), advice=True)}"
                                ) from exc
    if missing:
        raise SettingsError(f"{', '.join(missing)}: no such file or folder")


def _summary(result, args) -> None:
    from ..inference.quality import REVIEW_BELOW

    counts = result.counts
    for problem in result.write_errors:
        print(f"napari-unet predict: {problem}", file=sys.stderr)
    if args.quiet and not counts.get("failed") and not result.write_errors:
        return
    warned = sum(1 for e in result.report["scans"] if e["warnings"])
    review = result.report.get("to_review", 0)
    where = Path(args.output)
    bids = result.report.get("bids")
    if bids:
        chosen = " ".join(f"{k}={_value(v)}" for k, v in bids["query"].items())
        print(f"BIDS: {bids['images']} images chosen by {chosen}; {where} is their BIDS "
              "derivative dataset", file=sys.stderr)
    pages = f"; QC: {where / result.index_path.name}" if result.index_path else ""
    print(f"{counts['ok']} ok, {counts['failed']} failed, {counts['skipped']} skipped"
          + (f" ({warned} with warnings)" if warned else "")
          + (f"; {review} to review (quality score below {REVIEW_BELOW:.2f}"
             + (", listed first in the QC page" if result.index_path else "") + ")"
             if review else "")
          + f"; report: {where / result.report_path.name}{pages}", file=sys.stderr)


def _value(v) -> str:
    return "(absent)" if v is None else ",".join(v) if isinstance(v, list) else str(v)


def _why(entry: dict) -> str | None:
    """What a failed or skipped scan's line says after its name (resumed scans: nothing)."""
    from ..batch.runner import RESUMED

    if entry["status"] == "failed":
        return entry["error"]
    if entry["status"] == "skipped" and entry.get("reason") != RESUMED:
        return entry.get("reason")
    return None


class _ProgressBar:
    """tqdm over scans: the current scan's name and running ok/failed/skipped counts."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.bar = None
        self.counts = {"ok": 0, "failed": 0, "skipped": 0}
        self.said: set[str] = set()  # warnings that say the same of every scan: said once

    def _open(self):
        if self.bar is None:
            from tqdm import tqdm

            # a log file (no terminal) gets one line per scan, not carriage-return frames
            self.bar = tqdm(unit="scan", file=sys.stderr, dynamic_ncols=True,
                            disable=not sys.stderr.isatty())
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
        why = _why(entry)
        if why:
            why = one_line(why)  # the reason mostly names the scan itself
            named = why if why.startswith(f"{name}: ") else f"{name}: {why}"
            self.bar.write(f"{entry['status']}: {named}", file=sys.stderr)
        elif self.bar.disable:
            print(f"{entry['status']}: {name}", file=sys.stderr, flush=True)
        from ..batch.scan_job import same_for_every_scan

        for warning in map(one_line, entry["warnings"]):
            if warning in self.said:
                continue
            if same_for_every_scan(warning):
                self.said.add(warning)
            named = warning if warning.startswith(f"{name}: ") else f"{name}: {warning}"
            self.bar.write(f"warning: {named}", file=sys.stderr)
        if entry.get("review"):
            why = "; ".join(map(one_line, entry.get("review_reasons") or []))
            self.bar.write(f"review: {name}: quality {entry['score']:.2f}"
                           + (f": {why}" if why else ""), file=sys.stderr)
        self.bar.set_postfix(self.counts, refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

"""``napari-unet train``: train a segmentation or denoising UNet from scans on disk.

Images and labels pair up in order. Progress goes to a terminal bar, each validation to
one line; the model file is written atomically (never a partial file), when training
finishes or after a first Ctrl-C, with what was learnt so far (exit code 130).
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys


def add_parser(sub) -> None:
    from typing import get_args, get_type_hints

    from ..inference.predictor import PRECISIONS
    from ..model.normalize import Normalization
    from ..model.tasks import TASK_KINDS
    from ..training.settings import (
        DEFAULT_ITERATIONS,
        NOISE_KINDS,
        TrainSettings,
    )
    from .options import (
        CODES_HELP,
        add_axis_flag,
        add_overwrite_flag,
        dataclass_defaults,
        slice_context,
    )

    d = dataclass_defaults(TrainSettings)
    p = sub.add_parser(
        "train", help="train a UNet (segmentation or denoising) on scans",
        description="Train a 2D UNet on slices of CT/MR volumes. Segmentation learns from "
        "image + label volumes; denoising adds synthetic noise to clean scans, or learns "
        "from noisy scans alone with --self-supervised (blind-spot masking). Ctrl-C stops "
        "and saves the model trained so far to -o (exit code 130); a second Ctrl-C quits "
        "without saving.")
    p.add_argument("--task", required=True, choices=TASK_KINDS)
    p.add_argument("--images", nargs="+", metavar="PATH",
                   help="scans: NIfTI files or DICOM folders (or --bids)")
    p.add_argument("--labels", nargs="+", metavar="PATH",
                   help="label volumes (NIfTI or DICOM SEG), one per image in the same "
                   "order (segment); with "
                   "--self-supervised, optional clean references used only for validation")
    p.add_argument("--classes", type=int, help="classes incl. background (1 = binary; "
                   "default: from the labels)")
    p.add_argument("--class-names", nargs="+", metavar="NAME", help="background first")
    p.add_argument("--class-codes", nargs="+", metavar="CODE", help=CODES_HELP + "; default: "
                   "the --init model's, or a DICOM SEG's given as --labels")
    p.add_argument("--noise", choices=NOISE_KINDS, default=d["noise"],
                   help="synthetic noise model for denoising (default %(default)s)")
    p.add_argument("--noise-level", type=float, nargs="+", default=[d["noise_level"]],
                   metavar="F", help="noise sigma as a fraction of the intensity range "
                   f"(default {d['noise_level']}); two values LOW HIGH draw a level per patch")
    p.add_argument("--self-supervised", action="store_true",
                   help="denoise noisy scans without clean references (blind-spot)")
    add_axis_flag(p, d["axis"], "train on", "each scan's acquisition plane")
    p.add_argument("--init", metavar="MODEL", help="start from this model file or bundled name")
    p.add_argument("--slice-context", type=slice_context, metavar="K",
                   help="also feed K neighbour slices either side of each slice (2.5D; "
                   "a denoiser then sees the anatomy under independent noise); default: "
                   "the --init model's, else 0")
    p.add_argument("--all-planes", action="store_true",
                   help="segmentation: also learn from slices along the other two planes of "
                   "near-isotropic scans (about 3x the distinct slices; held-out slices' "
                   "voxels are blanked in them); the model then predicts along all three "
                   "planes by default (predict --planes)")
    stop = p.add_mutually_exclusive_group()
    stop.add_argument("--time-budget", type=float, metavar="SECONDS",
                      help="train for this long (wall clock); the learning-rate schedule "
                      "spans the budget")
    stop.add_argument("--iterations", type=int, metavar="N",
                      help=f"train for N iterations (default {DEFAULT_ITERATIONS} without "
                      "--time-budget)")
    p.add_argument("--seed", type=int, default=d["seed"], help="random seed (default %(default)s)")
    p.add_argument("-o", "--output", required=True, metavar="MODEL",
                   help="model file to write (.safetensors)")
    add_overwrite_flag(p, "a model file")
    p.add_argument("--name", help="model name (default: the output file's stem)")
    p.add_argument("--base", type=int, default=d["base"],
                   help="UNet base width (default %(default)s)")
    p.add_argument("--patch", nargs=2, type=int, default=list(d["patch_size"]),
                   metavar=("H", "W"), help="training patch size (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=d["batch_size"],
                   help="patches per iteration (default %(default)s)")
    p.add_argument("--lr", type=float, default=d["lr"],
                   help="peak learning rate (default %(default)s)")
    p.add_argument("--val-fraction", type=float, default=d["val_fraction"],
                   help="fraction of slices held out as one contiguous block "
                   "(default %(default)s)")
    p.add_argument("--val-block", nargs=2, type=int, metavar=("START", "STOP"),
                   help="held-out slice range instead of --val-fraction")
    p.add_argument("--val-gap", type=int, default=d["val_gap"], metavar="N",
                   help="slices either side of the held-out block not trained on either "
                   "(default %(default)s)")
    p.add_argument("--normalization",
                   choices=get_args(get_type_hints(Normalization)["kind"]),
                   help="intensity normalisation (default: window for CT, else percentile)")
    p.add_argument("--norm-range", nargs=2, type=float, metavar=("LOW", "HIGH"),
                   help="percentiles (default 0.5 99.5) or HU window (default -1000 1000)")
    p.add_argument("--no-augment", action="store_true", help="no flips/intensity changes")
    p.add_argument("--domain-randomization", action="store_true",
                   help="also randomise geometry, bias field, contrast, resolution, "
                   "ringing and noise, for models that must hold on other scanners")
    p.add_argument("--precision", choices=PRECISIONS, default=d["precision"],
                   help="auto: bf16 autocast on GPUs and on CPUs with native bf16 "
                   "(segmentation), else float32 (default %(default)s)")
    p.add_argument("--deterministic", action="store_true",
                   help="bit-identical weights from the same seed on CUDA too (slower)")
    p.add_argument("--device", default=d["device"], help="auto, cpu, cuda, cuda:1, mps")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's)")
    p.add_argument("--history", metavar="JSON", help="also write the training history here")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    g = p.add_argument_group("BIDS datasets (instead of --images/--labels)")
    g.add_argument("--bids", metavar="DATASET", help="train on this BIDS dataset's images: "
                   "anat NIfTI of suffix T1w unless --bids-filter says otherwise")
    g.add_argument("--bids-filter", nargs="+", metavar="ENTITY=VALUE",
                   help="choose the images, e.g. suffix=T2w session=1 (as predict)")
    g.add_argument("--bids-labels", metavar="DERIVATIVES",
                   help="a derivative dataset whose dseg images are the labels: each pairs "
                   "with the image of the same subject, session, run... (segment)")
    g.add_argument("--bids-labels-filter", nargs="+", metavar="ENTITY=VALUE",
                   help="choose among the label maps, e.g. desc=manual")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from ..errors import Cancelled, SettingsError
    from ..io.new_files import moved_note, write_new
    from ..io.write import atomic_write_text
    from ..model.checkpoint import SUFFIX as MODEL_SUFFIX
    from ..training import TrainSettings, train
    from ..training.planes import one_plane_note
    from .options import new_output_file, save_model_file

    images, labels, pairs = _data(args)
    inputs = [*images, *(labels or []), args.init]
    out = new_output_file(args.output, "-o", inputs, MODEL_SUFFIX)
    if args.history:
        new_output_file(args.history, "--history", [*inputs, out])
    if len(args.noise_level) > 2:
        raise SettingsError("--noise-level takes one value or a LOW HIGH pair")
    level = args.noise_level[0] if len(args.noise_level) == 1 else tuple(args.noise_level)
    settings = TrainSettings(
        task=args.task, n_classes=args.classes, class_names=args.class_names,
        class_codes=args.class_codes, noise=args.noise, noise_level=level,
        self_supervised=args.self_supervised,
        axis=args.axis, init=args.init, base=args.base, patch_size=tuple(args.patch),
        batch_size=args.batch_size, iterations=args.iterations, time_budget=args.time_budget,
        lr=args.lr, val_fraction=args.val_fraction,
        val_block=tuple(args.val_block) if args.val_block else None, val_gap=args.val_gap,
        seed=args.seed, device=args.device, normalization=_normalization(args),
        augment=not args.no_augment, domain_randomization=args.domain_randomization,
        precision=args.precision, deterministic=args.deterministic, threads=args.threads,
        slice_context=args.slice_context, all_planes=args.all_planes,
        name=args.name or out.name.split(".")[0])
    if out.exists():  # said now, not only after an hour of training
        fate = ("replaced only if it is a model napari-unet wrote" if args.overwrite else
                "kept, and the new model will go beside it")
        print(f"napari-unet train: note: {out} exists; it is {fate}", file=sys.stderr)
    unit = "s" if args.time_budget and not args.iterations else "it"
    with _Bar(args.quiet, unit) as bar, _Interrupt() as interrupt:
        try:
            result = train(images, labels, settings=settings, progress=bar.update,
                           on_metrics=bar.metrics, cancel=interrupt)
        except Cancelled as exc:
            result = exc.partial
    if pairs is not None:
        from ..training.bids_pairs import with_bids_provenance

        with_bids_provenance(result.model, pairs.suffixes)
    written, moved = save_model_file(result.model, out, args.overwrite)
    notes = [moved]
    if args.history:
        history = json.dumps({"history": result.history, "metrics": result.metrics}, indent=1)
        asked = Path(args.history)
        where, _ = write_new(asked, lambda path: atomic_write_text(path, history))
        notes.append(moved_note(asked, where))
    how = "interrupted: " if interrupt.asked else ""
    scores = (_format(result.metrics) if result.metrics or not interrupt.asked
              else "not validated before the interruption")
    for note in filter(None, notes):
        print(f"napari-unet train: note: {note}", file=sys.stderr)
    print(f"{how}wrote {written}: {result.model.task.describe()}, {result.iterations} "
          f"iterations in {result.seconds:.0f} s; {scores}")
    note = one_plane_note(result.model.meta.provenance)
    if note:
        print(f"note: {note}")
    return 130 if interrupt.asked else 0


def _data(args):
    """(images, labels, BIDS pairs or None) from --images/--labels or --bids."""
    from ..errors import SettingsError

    if bool(args.images) == bool(args.bids):
        raise SettingsError("give the scans with --images (and --labels), or a BIDS dataset "
                            "with --bids (and --bids-labels)")
    if not args.bids:
        if args.bids_labels or args.bids_filter or args.bids_labels_filter:
            raise SettingsError("--bids-labels and --bids-filter go with --bids")
        return args.images, args.labels, None
    if args.labels:
        raise SettingsError("--labels goes with --images; with --bids, give --bids-labels")
    from ..io.bids import parse_filter_args
    from ..training.bids_pairs import bids_training_pairs

    pairs = bids_training_pairs(args.bids, args.bids_labels,
                                parse_filter_args(args.bids_filter),
                                parse_filter_args(args.bids_labels_filter))
    print(f"BIDS: {pairs.describe()}", file=sys.stderr)
    return pairs.images, pairs.labels, pairs


class _Interrupt:
    """The first Ctrl-C stops training after the current iteration and the model trained
    so far is saved (an hour's run is not lost to one keystroke); a second one quits."""

    def __init__(self):
        self.asked, self.previous = False, None

    def __enter__(self):
        with contextlib.suppress(ValueError):  # not the main thread: Ctrl-C as usual
            self.previous = signal.signal(signal.SIGINT, self._stop)
        return self

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)

    def __call__(self) -> bool:
        return self.asked

    def _stop(self, *_):
        if self.asked:
            raise KeyboardInterrupt
        self.asked = True
        print("interrupted: stopping after this iteration to save the model trained so far "
              "(Ctrl-C again quits without saving)", file=sys.stderr, flush=True)


def _normalization(args):
    from ..model.normalize import Normalization

    if args.normalization is None and args.norm_range is None:
        return None
    return Normalization.default(args.normalization or "percentile", args.norm_range)


def _format(metrics: dict) -> str:
    if not metrics:
        return "no validation (no held-out slices)"
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in metrics.items())


class _Bar:
    """tqdm bar fed by ``progress(done, total)``; validation lines printed above it."""

    def __init__(self, quiet: bool, unit: str):
        self.quiet, self.unit, self.bar = quiet, unit, None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.close()

    def update(self, done: int, total: int) -> None:
        if self.quiet:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit=self.unit, file=sys.stderr,
                            dynamic_ncols=True, disable=not sys.stderr.isatty())
        self.bar.n = done
        self.bar.refresh()

    def metrics(self, entry: dict) -> None:
        line = f"iteration {entry['iteration']}: loss {entry['loss']:.4f}, " + _format(
            {k: v for k, v in entry.items() if k.startswith("val_")})
        if self.bar is not None:
            self.bar.write(line, file=sys.stderr)
        elif not self.quiet:
            print(line, file=sys.stderr)

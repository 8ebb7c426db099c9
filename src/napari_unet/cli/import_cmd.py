"""``napari-unet import``: a plain PyTorch UNet state_dict -> a napari-unet model file."""

from __future__ import annotations

import sys


def add_parser(sub) -> None:
    from .options import CODES_HELP, add_overwrite_flag, slice_context

    p = sub.add_parser(
        "import", help="turn a PyTorch UNet state_dict into a model file",
        description="Import weights of the original PyTorch UNet or milesial's "
        "Pytorch-UNet (loaded with weights_only=True; pickled code is refused).")
    p.add_argument("state_dict", help=".pt/.pth state_dict (or .safetensors)")
    p.add_argument("-o", "--output", required=True, help="model file to write (.safetensors)")
    p.add_argument("--task", required=True, choices=["segment", "denoise"])
    p.add_argument("--in-channels", type=int, required=True, help="input channels (1 = grayscale)")
    p.add_argument("--classes", type=int, help="classes for segment (1 = binary)")
    p.add_argument("--class-names", nargs="+", help="names, background first")
    p.add_argument("--class-codes", nargs="+", metavar="CODE", help=CODES_HELP)
    add_overwrite_flag(p, "a model file")
    p.add_argument("--name", help="model name (default: the file's stem)")
    p.add_argument("--normalization", choices=["percentile", "window"], default="percentile")
    p.add_argument("--norm-range", nargs=2, type=float, metavar=("LOW", "HIGH"),
                   help="percentiles (default 0.5 99.5) or HU window (e.g. -1000 1000)")
    p.add_argument("--axis", type=int, default=0, choices=[0, 1, 2], help="default slice axis")
    p.add_argument("--patch", nargs=2, type=int, default=[256, 256], metavar=("H", "W"))
    p.add_argument("--pixel-spacing", nargs=2, type=_mm, metavar=("ROWS", "COLUMNS"),
                   help="in-plane mm of the slices the weights were trained on: scans of "
                   "other spacings are then resampled to it for the net (default: none, "
                   "every scan runs at its own pixels)")
    p.add_argument("--slice-context", type=slice_context, default=0, metavar="K",
                   help="the net takes each slice with K neighbour slices either side as "
                   "extra input channels, nearest first to last (2.5D; default 0)")
    p.set_defaults(func=run)


def _mm(text: str) -> float:
    import argparse
    import math

    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"a pixel spacing is a size in mm > 0, not {text!r}")
    return value


def run(args) -> int:
    from ..io.class_codes import class_codes_from_texts
    from ..model.checkpoint import SUFFIX as MODEL_SUFFIX
    from ..model.normalize import Normalization
    from ..model.state_dict_import import import_state_dict
    from ..model.tasks import make_task
    from .options import new_output_file, save_model_file

    task = make_task(args.task, in_channels=args.in_channels, n_classes=args.classes,
                     class_names=args.class_names)
    if args.class_codes is not None and task.kind != "segment":
        from ..errors import SettingsError

        raise SettingsError("--class-codes: a denoiser has no classes")
    codes = class_codes_from_texts(args.class_codes, task.n_labels)
    norm = Normalization.default(args.normalization, args.norm_range)
    out = new_output_file(args.output, "-o", [args.state_dict], MODEL_SUFFIX)
    model = import_state_dict(args.state_dict, task, args.name or out.name.split(".")[0],
                              norm, args.axis, tuple(args.patch), args.pixel_spacing,
                              args.slice_context, codes)
    written, moved = save_model_file(model, out, args.overwrite)
    if moved:
        print(f"napari-unet import: note: {moved}", file=sys.stderr)
    print(f"wrote {written}: {model.task.describe()}, {model.meta.architecture.variant} layout, "
          f"base {model.meta.architecture.base}, hash {model.meta.hash}")
    return 0

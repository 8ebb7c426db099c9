"""Entry point of the ``napari-unet`` console script.

Each subcommand lives in its own module exposing ``add_parser(subparsers)`` (which sets
``func``) and is imported lazily, so ``napari-unet --help`` stays fast.
Exit codes: 0 success, 1 a job failed (e.g. any scan in a batch), 2 usage error.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .. import __version__

SUBCOMMANDS = ("predict", "train", "import_cmd", "info", "models")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="napari-unet",
        description="2D UNet segmentation and denoising of CT/MR volumes (NIfTI, DICOM).",
    )
    parser.add_argument("--version", action="version", version=f"napari-unet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMANDS:
        importlib.import_module(f".{name}", __package__).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from ..errors import NapariUnetError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except NapariUnetError as exc:
        print(f"napari-unet {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"napari-unet {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

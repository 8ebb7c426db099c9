"""Entry point of the ``napari-unet`` console script.

Each subcommand lives in its own module exposing ``add_parser(subparsers)`` (which sets
``func``) and is imported lazily, so ``napari-unet --help`` stays fast.
Exit codes, one rule for every subcommand: 0 success, 1 a job failed (e.g. any scan in a
batch), 2 usage or settings error; one line on stderr, no traceback unless ``--debug``.
argparse's own usage errors follow the same rule (one line, not its usage text), and so do
Python warnings that reach the console. What the operating system refuses (a full disk,
a read-only folder, a path too long) is said in plain words (``os_errors``); "please
report it" is kept for what no check foresaw.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import re
import sys

from .. import __version__

SUBCOMMANDS = ("predict", "train", "import_cmd", "info", "models")


class OneLineParser(argparse.ArgumentParser):
    """argparse with the CLI's one-line rule for usage errors (exit 2, no usage text);
    subcommand parsers inherit it."""

    def error(self, message: str):
        if "required: COMMAND" in message:
            message = "choose a command: predict, train, import, info or models"
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")

    def parse_args(self, args=None, namespace=None):
        """As argparse's, but an unknown flag is named by the subcommand it was given to."""
        parsed, extra = self.parse_known_args(args, namespace)
        if extra:
            commands = getattr(self, "commands", {})
            owner = commands.get(getattr(parsed, "command", None), self)
            owner.error(f"unrecognized arguments: {' '.join(extra)}")
        return parsed


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="napari-unet",
        description="2D UNet segmentation and denoising of CT/MR volumes (NIfTI, DICOM).",
    )
    parser.add_argument("--version", action="version", version=f"napari-unet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMANDS:
        importlib.import_module(f".{name}", __package__).add_parser(sub)
    for command in sub.choices.values():
        command.add_argument("--debug", action="store_true",
                             help="show the Python traceback when something fails")
    parser.commands = sub.choices
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; the exit code follows one rule for all of them (module doc)."""
    args = build_parser().parse_args(argv)
    try:
        with _one_line_warnings(args):
            return int(args.func(args) or 0)
    except KeyboardInterrupt:
        _say(args, "interrupted")
        return 130
    except BrokenPipeError:  # the reader went away (``| head``): not an error of ours
        _quiet_stdout()
        return 0
    except Exception as exc:
        if args.debug:
            raise
        code, text = exit_code_for(exc)
        _say(args, text)
        return code


def exit_code_for(exc: BaseException) -> tuple[int, str]:
    """(exit code, one-line message): 2 for what the user asked wrongly, 1 for failures."""
    from ..errors import ModelFileError, NapariUnetError, SettingsError
    from ..os_errors import is_known, plain

    if isinstance(exc, (SettingsError, ModelFileError)):
        return 2, str(exc)
    if isinstance(exc, NapariUnetError):
        return 1, str(exc)
    if is_known(exc):  # the user's disk, permissions or paths: not a bug to report
        return 1, plain(exc, advice=True)
    if isinstance(exc, OSError) and exc.filename is not None:
        return 1, f"{exc.filename}: {exc.strerror or exc}"
    if isinstance(exc, MemoryError):
        return 1, "out of memory; try a smaller --batch-size or --roi"
    return 1, (f"unexpected {type(exc).__name__}: {exc} "
               "(run again with --debug for the traceback, and please report it)")


@contextlib.contextmanager
def _one_line_warnings(args):
    """Python warnings that reach the console (outside a scan, which records its own) as
    one line each, like every other message, and library log records no handler took
    kept off the console (Python's last-resort handler would print them raw)."""
    import logging
    import warnings

    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if args.debug:
            return shown(message, category, filename, lineno, file, line)
        print(f"napari-unet {args.command}: warning: {one_line(message)}", file=sys.stderr)

    root = logging.getLogger()
    quiet = None if args.debug or root.handlers else logging.NullHandler()
    warnings.showwarning = show
    if quiet is not None:
        root.addHandler(quiet)
    try:
        yield
    finally:
        warnings.showwarning = shown
        if quiet is not None:
            root.removeHandler(quiet)


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's last flush does not fail again."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _say(args, text: str) -> None:
    print(f"napari-unet {args.command}: error: {one_line(text)}", file=sys.stderr)


def one_line(text: str) -> str:
    """Text fit for a terminal: no escape sequences or control characters, one line."""
    text = re.sub(r"\x1b\[[0-9;?]*[ -/]*[@-~]", "", str(text))
    text = "".join(c if c.isprintable() else " " for c in text)
    return " ".join(text.split())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

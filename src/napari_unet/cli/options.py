"""Flags derived from the settings dataclasses, so that defaults are written down once."""

from __future__ import annotations

from dataclasses import MISSING, fields

CODES_HELP = ("per class, background first or left out, what a DICOM SEG segment says it "
              "is: a DICOM CID 7151 type as pydicom names it (GrayMatter, Liver, Neoplasm), "
              "Category/Type (Tissue/Blood), or SCT:VALUE; add #RRGGBB for its colour; '-' "
              "for none (then: 'Tissue', the class name as label)")


def dataclass_defaults(cls) -> dict:
    """Each field of ``cls`` that has a plain default -> that default."""
    return {f.name: f.default for f in fields(cls) if f.default is not MISSING}


def fields_from(cls, args) -> dict:
    """The parsed flags named like fields of ``cls`` (flags carry the fields' names)."""
    return {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}


def slice_context(text: str) -> int:
    """argparse type of ``--slice-context``: neighbour slices either side, 0..8."""
    import argparse

    from ..model.checkpoint import MAX_SLICE_CONTEXT

    if not text.isdigit() or int(text) > MAX_SLICE_CONTEXT:
        raise argparse.ArgumentTypeError(f"a slice context is 0..{MAX_SLICE_CONTEXT} "
                                         f"neighbour slices either side, not {text!r}")
    return int(text)


def _axis(text: str) -> int | str:
    """argparse type of ``--axis``: an array axis as an int; a plane name (or anything else,
    for argparse's ``choices`` check to name) as given."""
    try:
        return int(text)
    except ValueError:
        return text


def add_axis_flag(p, default: int | str, doing: str, auto: str) -> None:
    """``--axis`` as predict and train both take it: ``auto``, a plane or an array axis."""
    from ..io.geometry import PLANES

    p.add_argument("--axis", type=_axis, default=default, choices=["auto", *PLANES, 0, 1, 2],
                   metavar="PLANE", help=f"slices to {doing}: auto ({auto}), axial, coronal, "
                   "sagittal, or an array axis 0, 1, 2 (default %(default)s)")


def new_output_file(text: str, flag: str, inputs, suffix: str | None = None):
    """An output file named on the command line, checked before any work starts: never an
    input, never a folder, with ``suffix`` (if given), in a folder that exists and takes a
    file now (not full, not read-only), so a long run cannot end in an error, or in a
    scan overwritten by a model. A file already there is not replaced: the output goes
    beside it (``io.new_files``)."""
    from pathlib import Path

    from ..errors import SettingsError
    from ..io.new_files import check_writable

    out = Path(text).expanduser()
    if out.is_dir():
        raise SettingsError(f"{flag} {out}: is a folder; give a file name")
    for given in filter(None, inputs):
        if Path(given).exists() and Path(given).resolve() == out.resolve():
            raise SettingsError(f"{flag} {out}: that is an input ({given}); napari-unet "
                                "never overwrites its inputs: choose another file")
    if suffix is not None and not out.name.lower().endswith(suffix):
        raise SettingsError(f"{flag} {out}: the file name must end in {suffix}")
    check_writable(out, flag)
    return out


def add_overwrite_flag(p, what: str) -> None:
    """``--overwrite`` as train and import take it: only a file napari-unet wrote."""
    p.add_argument("--overwrite", action="store_true",
                   help=f"replace -o when it is {what} napari-unet wrote (never any other "
                   "file); without it an existing -o is kept and the new file goes beside "
                   "it as NAME-1.safetensors")


def save_model_file(model, out, overwrite: bool):
    """Save ``model`` to ``out`` or beside it (see ``io.new_files``); returns the path and
    the note to print when it went beside."""
    from ..io.new_files import moved_note, write_new
    from ..model.checkpoint import is_model_file

    written, _ = write_new(out, model.save, is_model_file if overwrite else None)
    hint = "" if overwrite else " (--overwrite replaces a model napari-unet wrote)"
    if overwrite and written != out:
        hint = " (it is not a napari-unet model file, so --overwrite does not replace it)"
    return written, moved_note(out, written, hint)

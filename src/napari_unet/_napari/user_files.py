"""Where the widgets save work nobody named: ``~/napari-unet/<kind>/<stem>-<time>.<ext>``.

A finished training run or a corrected model must never be lost because no file was
chosen. The folder is created when something is saved, not before; the name is unique.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from magicgui.widgets import FileEdit


def user_folder(kind: str) -> Path:
    """``~/napari-unet/<kind>`` (models, labels); HOME decides where ``~`` is."""
    return Path.home() / "napari-unet" / kind


def unique_path(kind: str, stem: str, suffix: str) -> Path:
    """A file name in the user folder that does not exist yet."""
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return free_name(user_folder(kind) / f"{stem}-{stamp}{suffix}")


def free_name(path: Path) -> Path:
    """``path`` when no file has it, else the first free ``<stem>-1<suffix>``, ``-2``..."""
    name = path.name
    suffix = name[-7:] if name.lower().endswith(".nii.gz") else path.suffix
    stem, n = name[: len(name) - len(suffix)], 1
    while path.exists():
        path = path.with_name(f"{stem}-{n}{suffix}")
        n += 1
    return path


class AutoPath:
    """A FileEdit that proposes a unique file in the user folder until the user picks one."""

    def __init__(self, edit: FileEdit, kind: str, suffix: str, stem: str = "unet"):
        self.edit, self.kind, self.suffix = edit, kind, suffix
        self._proposed: str | None = None
        self.stem = stem
        self.propose(stem)

    @property
    def is_proposal(self) -> bool:
        return str(self.edit.value) == self._proposed

    def propose(self, stem: str) -> None:
        """Offer a fresh name (unless the user has typed or picked their own)."""
        if self._proposed is None or self.is_proposal or str(self.edit.value) in ("", "."):
            self.stem = stem
            self._proposed = str(unique_path(self.kind, stem, self.suffix))
            self.edit.value = self._proposed

    def target(self, keep_existing: bool = False) -> Path | None:
        """Where to save now (None when the field is empty); the folder is created.

        A proposed name is never overwritten; with ``keep_existing`` (a save nobody asked
        for by name, e.g. after training) neither is a file the user chose: the save goes
        to a free name next to it, which the field then shows.
        """
        text = str(self.edit.value)
        if text in ("", "."):
            return None
        path = Path(text).expanduser()
        if self.is_proposal and path.exists():  # saved there already: never overwrite it
            self.propose(self.stem)
            path = Path(str(self.edit.value))
        elif keep_existing and path.exists():
            path = free_name(path)
            self.edit.value = str(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

"""Where the widgets save work nobody named: ``~/napari-unet/<kind>/<stem>-<time>.<ext>``.

A finished training run or a corrected model must never be lost because no file was
chosen. The folder is created when something is saved, not before; the name is unique.
Every Save follows the rule of ``io.new_files``: a file already there is never replaced
(the new one goes beside it, ``name-1.ext``, and the field shows it), and a folder that
does not exist is never created, but for the user folder itself.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from magicgui.widgets import FileEdit

from ..io.new_files import check_folder_exists, free_name  # noqa: F401 - free_name: API


def user_folder(kind: str) -> Path:
    """``~/napari-unet/<kind>`` (models, labels); HOME decides where ``~`` is."""
    return Path.home() / "napari-unet" / kind


def unique_path(kind: str, stem: str, suffix: str) -> Path:
    """A file name in the user folder that does not exist yet."""
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return free_name(user_folder(kind) / f"{stem}-{stamp}{suffix}")


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

    def target(self) -> Path | None:
        """Where the user asks to save now (None when the field is empty). The user
        folder is created for a proposed name; a folder the user typed must exist. The
        save itself goes beside a file already there (``io.new_files.write_new``); call
        :meth:`saved` with where it went."""
        text = str(self.edit.value)
        if text in ("", "."):
            return None
        path = Path(text).expanduser()
        if self.is_proposal:
            if path.exists():  # saved there already: a fresh name, never that file
                self.propose(self.stem)
                path = Path(str(self.edit.value))
            path.parent.mkdir(parents=True, exist_ok=True)
        else:
            check_folder_exists(path, "save to")
        return path

    def saved(self, path: Path) -> None:
        """Show where a save went (beside the named file when that one was there)."""
        if str(path) != str(self.edit.value):
            proposal = self.is_proposal
            self.edit.value = str(path)
            if proposal:
                self._proposed = str(path)

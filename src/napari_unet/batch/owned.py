"""Which files in the output folder napari-unet wrote: known by content hash, not by name.

Before an output replaces a file, that file's SHA-256 must be one napari-unet recorded
when it wrote it: scan manifests (:mod:`.resume`) for results and QC pictures,
``.napari-unet/files.json`` for ``report.json`` and ``index.html``. Anything else (a
person's ground truth named like an output, a result corrected by hand, a link) is never
overwritten or deleted, with or without ``--overwrite``. A derived DICOM series is a
folder of files: each file is recorded (``<folder>/<file>``), and the folder is replaced
only while it holds nothing but those files, unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from ..errors import NapariUnetError
from ..io.write import atomic_write_text
from .damaged import unreadable
from .outdir import NOFOLLOW, STATE_DIR, check_parents, plain_file, read_text, real_dir, state_dir

LEDGER_NAME = "files.json"


class NotOurs(NapariUnetError):
    """An output would replace a file napari-unet did not write (the scan fails)."""


def digest(path: Path) -> str | None:
    """``sha256:...`` of a regular file, ``""`` for anything else (a link), None if absent."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(mode):
        return ""
    h = hashlib.sha256()
    with os.fdopen(os.open(path, os.O_RDONLY | NOFOLLOW), "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return f"sha256:{h.hexdigest()}"


def text_digest(text: str) -> str:
    return f"sha256:{hashlib.sha256(text.encode('utf-8')).hexdigest()}"


def check_replaceable(outdir: Path, rel: str, known: Iterable[str],
                      error: type[NapariUnetError] = NotOurs) -> str | None:
    """Raise ``error`` unless ``outdir/rel`` is absent or holds what napari-unet wrote;
    returns its current digest."""
    known = list(known)
    check_parents(outdir, rel)  # sub-01/anat/...: never through a linked folder
    current = digest(outdir / rel)
    if current is None or current in known:
        return current
    if current == "":
        why = "is not a regular file (a link?)"
    elif known and unreadable(outdir / rel):
        why = "was changed after napari-unet wrote it and cannot be read whole (cut short?)"
    elif known:
        why = "was changed after napari-unet wrote it (edited by hand?)"
    else:
        why = "was not written by napari-unet"
    raise error(f"{rel} in the output folder {why}; it is never overwritten: move it away, "
                "or choose another output folder")


def folder_digests(path: Path, rel: str) -> dict[str, str | None]:
    """``rel/<file>`` -> digest of each entry of a folder napari-unet just wrote."""
    return {f"{rel}/{entry.name}": digest(Path(entry.path))
            for entry in sorted(os.scandir(path), key=lambda e: e.name)}


def check_replaceable_folder(outdir: Path, rel: str, known: dict[str, list[str]],
                             error: type[NapariUnetError] = NotOurs) -> None:
    """Raise ``error`` unless ``outdir/rel`` is absent or a folder (not a link) holding
    only files napari-unet wrote there, unchanged (``known``: a manifest's files)."""
    target = outdir / rel
    try:
        mode = os.lstat(target).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(mode):
        what = "a link" if stat.S_ISLNK(mode) else "a file, not the folder of a DICOM series"
        raise error(f"{rel} in the output folder is {what}; it is never overwritten: move "
                    "it away, or choose another output folder")
    for entry in os.scandir(target):
        check_replaceable(outdir, f"{rel}/{entry.name}", known.get(f"{rel}/{entry.name}", ()),
                          error)


class OwnedTexts:
    """``report.json`` and ``index.html``: rewritten only while they hold what was written
    last. The ledger lists the old and the new hash before each rename, so a run killed
    in between still recognises either."""

    def __init__(self, outdir: Path):
        self.outdir = outdir
        # not made here: a run refused before it starts leaves no state folder behind
        self.ledger = plain_file(real_dir(outdir, STATE_DIR, create=False) / LEDGER_NAME,
                                 outdir)
        text = read_text(self.ledger)
        try:
            self.known: dict[str, list[str]] = json.loads(text or "{}")
        except ValueError:
            self.known = {}

    def check(self, rel: str, error: type[NapariUnetError] = NotOurs) -> str | None:
        return check_replaceable(self.outdir, rel, self.known.get(rel, ()), error)

    def write(self, rel: str, text: str) -> None:
        current = self.check(rel)
        state_dir(self.outdir)
        self.known[rel] = [h for h in (current, text_digest(text)) if h]
        atomic_write_text(plain_file(self.ledger, self.outdir), json.dumps(self.known))
        atomic_write_text(self.outdir / rel, text)

    def read(self, rel: str) -> str | None:
        """The text of ``rel`` if napari-unet wrote it, else None."""
        try:
            current = self.check(rel)
        except NotOurs:
            return None
        return None if current is None else read_text(self.outdir / rel)

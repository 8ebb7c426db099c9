"""One rule for every single file napari-unet writes where a person named it (``train -o``,
``import -o``, ``--history``, the widgets' Save buttons, a correction session's saves):
a file that is there already is never replaced; the new file goes beside it as
``name-1.ext`` (``-2``, ...) and the caller says where.

The only exception is asked for by name: ``--overwrite`` replaces a file that
``replaceable`` accepts (for model files: one napari-unet wrote, known by its metadata),
never anything else. The free name is taken atomically (``io.write.NEW_FILES_ONLY``:
a hard link that fails when the name is taken), so two saves at once never share a
file. Folders above the file are never created here: a path into a folder that does not
exist is refused (a typo, or a disk that is not mounted, never receives results).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from ..errors import SettingsError
from .write import NEW_FILES_ONLY

T = TypeVar("T")
_MAX_TRIES = 1000


def split_suffix(name: str) -> tuple[str, str]:
    """``labels.nii.gz`` -> (``labels``, ``.nii.gz``); other names split at the last dot."""
    if name.lower().endswith(".nii.gz"):
        return name[:-7], name[-7:]
    stem, dot, ext = name.rpartition(".")
    return (stem, dot + ext) if stem else (name, "")


def free_name(path: Path) -> Path:
    """``path`` when no file has it, else the first free ``<stem>-1<suffix>``, ``-2``..."""
    path = Path(path)
    stem, suffix = split_suffix(path.name)
    candidate, n = path, 1
    while os.path.lexists(candidate):
        candidate = path.with_name(f"{stem}-{n}{suffix}")
        n += 1
    return candidate


def missing_folder(path: Path) -> Path | None:
    """The folder ``path`` would go in when that folder does not exist, else None."""
    folder = Path(path).expanduser().absolute().parent
    return None if folder.is_dir() else folder


def check_folder_exists(path: Path, flag: str) -> None:
    """Refuse (exit 2) a file to be written in a folder that does not exist."""
    folder = missing_folder(path)
    if folder is not None:
        what = "is not a folder" if folder.exists() else "does not exist"
        raise SettingsError(f"{flag} {path}: the folder {folder} {what}; napari-unet never "
                            "creates the folders above a file or folder you name: create "
                            "it first, or correct the path")


def write_new(path: Path, write: Callable[[Path], T],
              replaceable: Callable[[Path], bool] | None = None) -> tuple[Path, T]:
    """Write a new file at ``path`` with ``write(target)`` (which must write through
    ``io.write.atomic_path``), or beside it when a file has that name; returns (where it
    went, what ``write`` returned). ``replaceable(path)`` True lets it replace ``path``."""
    path = Path(path)
    if os.path.lexists(path) and replaceable is not None and replaceable(path):
        return path, write(path)
    target = free_name(path)
    for _ in range(_MAX_TRIES):
        token = NEW_FILES_ONLY.set(True)
        try:
            return target, write(target)
        except FileExistsError:  # taken since free_name looked: the next one
            target = free_name(target)
        finally:
            NEW_FILES_ONLY.reset(token)
    raise FileExistsError(f"{path}: no free name beside it")


def moved_note(asked: Path, written: Path, hint: str = "") -> str | None:
    """What to tell a person whose file went beside the one they named, or None."""
    if Path(asked) == Path(written):
        return None
    return (f"{asked} exists and is never replaced{hint}; the new file is {written}")


PROBE_BYTES = 1 << 16  # written and removed: a disk or quota already full shows here
MIN_FREE_BYTES = 1 << 20


def probe_folder(folder: Path) -> OSError | None:
    """Why nothing can be written in ``folder`` now (full disk or quota, read-only,
    permission), found by writing a small file and removing it; None when it can."""
    import errno
    import uuid

    try:
        st = os.statvfs(folder)
        if st.f_bavail * st.f_frsize < MIN_FREE_BYTES and st.f_blocks:
            return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    except (OSError, AttributeError):  # no statvfs here: the probe decides
        pass
    probe = Path(folder) / f".napari-unet-probe-{uuid.uuid4().hex[:8]}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0),
                     0o600)
    except OSError as exc:
        return exc
    try:
        os.write(fd, b"\0" * PROBE_BYTES)
        os.fsync(fd)
    except OSError as exc:
        return exc
    finally:
        os.close(fd)
        probe.unlink(missing_ok=True)
    return None


def check_writable(path: Path, flag: str) -> None:
    """Refuse (exit 2) a file to be written where the folder is missing or refuses it."""
    from ..os_errors import plain

    check_folder_exists(path, flag)
    folder = Path(path).expanduser().absolute().parent
    problem = probe_folder(folder)
    if problem is not None:
        raise SettingsError(f"{flag} {path}: cannot write in {folder}: "
                            f"{plain(OSError(problem.errno, problem.strerror), advice=True)}")

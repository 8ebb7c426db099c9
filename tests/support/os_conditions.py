"""Real operating-system conditions for CLI tests: a full disk, a user without root's
privileges (so that permissions bind), paths longer than PATH_MAX.

Root ignores file permissions, so ``unprivileged`` runs a command in a new user
namespace (``unshare -U``: the same user, without its capabilities); a full disk is a
small tmpfs, filled, mounted in a private mount namespace (``unshare -m``). Where the
machine allows neither, the helpers return None and tests skip.
"""

from __future__ import annotations

import functools
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

PATH_MAX = os.pathconf("/", "PC_PATH_MAX") if hasattr(os, "pathconf") else 4096


def script() -> str:
    found = shutil.which("napari-unet", path=os.path.dirname(sys.executable))
    assert found, "the napari-unet console script is not installed in this environment"
    return found


@functools.cache
def _works(*probe: str) -> bool:
    return shutil.which(probe[0]) is not None and subprocess.run(
        probe, capture_output=True).returncode == 0


def unprivileged(argv: list[str]) -> list[str] | None:
    """``argv`` run so that file permissions apply to it (None when that cannot be)."""
    if os.geteuid() != 0:
        return argv
    return ["unshare", "-U", *argv] if _works("unshare", "-U", "true") else None


def on_a_full_disk(folder: Path, argv: list[str], listing: Path) -> list[str] | None:
    """``argv`` run with ``folder`` a tmpfs filled to the last byte; what is in the folder
    afterwards is written to ``listing`` (one path per line), since the mount vanishes
    with the command. None when no tmpfs can be mounted here."""
    if not _works("unshare", "-m", "true"):
        return None
    folder.mkdir(parents=True, exist_ok=True)
    if subprocess.run(["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs "
                       f"{shlex.quote(str(folder))}"], capture_output=True).returncode:
        return None
    q = shlex.quote(str(folder))
    fill = (f"mount -t tmpfs -o size=256k tmpfs {q} && "
            f"(dd if=/dev/zero of={q}/filler bs=4k 2>/dev/null; true)")
    run = " ".join(shlex.quote(a) for a in argv)
    after = f"find {q} -mindepth 1 ! -name filler > {shlex.quote(str(listing))}"
    return ["unshare", "-m", "sh", "-c", f"{fill}; {run}; code=$?; {after}; exit $code"]


def deeper_than_path_max(root: Path, name: str) -> Path:
    """A folder under ``root`` whose absolute path is longer than PATH_MAX, made one
    level at a time (relative to an open folder, as the OS allows); returns a path
    relative to ``root``'s parent folder, built of ``name`` repeated."""
    fd = os.open(root, os.O_RDONLY)
    depth, length = 0, len(str(root))
    try:
        while length <= PATH_MAX + 10:
            os.mkdir(name, dir_fd=fd)
            inner = os.open(name, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = inner
            depth += 1
            length += len(name) + 1
    finally:
        os.close(fd)
    return Path(*([name] * depth))


def copy_into_deep(root: Path, relative: Path, source: Path, name: str) -> None:
    """Copy ``source`` to ``root / relative / name`` though that path is too long to open
    by name: walked to one folder at a time."""
    fd = os.open(root, os.O_RDONLY)
    try:
        for part in relative.parts:
            inner = os.open(part, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = inner
        out = os.open(name, os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        with os.fdopen(out, "wb") as f:
            f.write(source.read_bytes())
    finally:
        os.close(fd)


def with_a_mount_at(folder: Path, argv: list[str]) -> list[str] | None:
    """``argv`` run with a fresh tmpfs mounted at ``folder`` (another file system inside
    the output folder: a rename into it fails with EXDEV); None when no tmpfs can be
    mounted here. The mount vanishes with the command."""
    if not _works("unshare", "-m", "true"):
        return None
    folder.mkdir(parents=True, exist_ok=True)
    q = shlex.quote(str(folder))
    if subprocess.run(["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=1m tmpfs {q}"],
                      capture_output=True).returncode:
        return None
    run = " ".join(shlex.quote(a) for a in argv)
    return ["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=1m tmpfs {q} && {run}"]

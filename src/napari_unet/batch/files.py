"""Atomic writes: every output is written under OUTDIR/.napari-unet/partial, then renamed.

Temporary files live in their own folder (same file system, so the rename is atomic) and
never match an output's name pattern, so a run killed mid-write leaves nothing that a
later run, or a person, could take for a finished output.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

STATE_DIR = ".napari-unet"


def state_dir(outdir: str | os.PathLike) -> Path:
    return Path(outdir) / STATE_DIR


def partial_dir(outdir: str | os.PathLike) -> Path:
    path = state_dir(outdir) / "partial"
    path.mkdir(parents=True, exist_ok=True)
    return path


def temp_path(outdir: str | os.PathLike, final_name: str) -> Path:
    """A unique temporary path that keeps the final suffix (writers pick format by it)."""
    return partial_dir(outdir) / f"{uuid.uuid4().hex[:12]}-{final_name}"


def commit(temp: Path, final: Path) -> None:
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(temp, final)


def clear_partial(outdir: str | os.PathLike) -> int:
    """Remove temporary files an interrupted run left behind; returns how many."""
    path = state_dir(outdir) / "partial"
    if not path.is_dir():
        return 0
    n = sum(1 for _ in path.iterdir())
    shutil.rmtree(path, ignore_errors=True)
    return n

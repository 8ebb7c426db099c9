"""``--names counter``: scans named ``scan-0001``, ``scan-0002``, ... and nothing else.

File and folder names can carry a patient's name that no DICOM header in the batch
tells (a NIfTI file named ``jurgen.nii.gz``): no rule can know it is a name. With counter
names no output, message, page or state file uses any part of an input's name: scans are
numbered in input order, and the input files' names are redacted from messages too.

A number belongs to its input for good: a rerun into the same folder finds each input's
number in the manifests (by the hash of its path, never the path), so resume and
``--overwrite`` work as with file names, and a new input gets the next free number.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import replace
from pathlib import Path

from .naming import short_hash
from .outdir import STATE_DIR, read_text
from .resume import input_key

PREFIX = "scan-"
_NUMBERED = re.compile(rf"^{PREFIX}(\d{{4,}})\.json$")


def counter_names(outdir: Path, scans: list) -> list:
    """``scans`` renamed ``scan-NNNN``: the number each input had in this folder, else the
    next one free."""
    known, highest = _numbers_in(outdir)
    out = []
    for scan in scans:
        mine = short_hash(input_key(scan), 16)
        if mine not in known:
            highest += 1
            known[mine] = highest
        out.append(replace(scan, name=f"{PREFIX}{known[mine]:04d}"))
    return out


def _numbers_in(outdir: Path) -> tuple[dict[str, int], int]:
    """(input id -> number) from the manifests of numbered scans, and the highest number."""
    state = outdir / STATE_DIR
    known, highest = {}, 0
    if not state.is_dir():
        return known, highest
    for entry in os.scandir(state):
        found = _NUMBERED.match(entry.name)
        if not found or not entry.is_file(follow_symlinks=False):
            continue
        number = int(found.group(1))
        highest = max(highest, number)
        try:
            record = json.loads(read_text(Path(entry.path)) or "null")
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("input_id"), str):
            known.setdefault(record["input_id"], number)
    return known, highest

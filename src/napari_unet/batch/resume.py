"""Scan manifests: what each scan's outputs are, which input they came from, and the
content hash of every file napari-unet wrote for it (see :mod:`.owned`).

``OUTDIR/.napari-unet/<name>.json`` is rewritten twice per scan: before its outputs are
renamed into place (``committing``: the old and the new hash of each file count as
napari-unet's own) and after (``done``, or ``incomplete`` when part failed; with each
output's size and modification time). A scan is finished when its manifest is ``done``
for the same input (a file, or each file of a DICOM series, unchanged), model and
settings, and its outputs are in place and whole (:mod:`.damaged`). Manifests hold
hashes, never input paths.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import replace
from pathlib import Path

from ..io.series import uid_hash
from ..io.write import atomic_write_text
from .damaged import unreadable
from .naming import short_hash, with_key
from .outdir import plain_file, read_text, state_dir

VERSION = 2


def manifest_path(outdir: Path, name: str) -> Path:
    return plain_file(state_dir(outdir) / f"{name}.json", outdir)


def input_key(scan) -> str:
    """Which input a scan is: its path and series (hashed before it is stored)."""
    return f"{scan.input}|{uid_hash(scan.series) if scan.series else ''}"


def input_state(scan) -> str:
    """Size and modification time of a file input, or a hash of those of a DICOM series'
    files ('' for any other folder): a changed file, or a series whose slices changed,
    came or went (a transfer still arriving at the first run), is redone."""
    if scan.files:
        states = "\n".join(f"{os.path.relpath(f, scan.input)}|{_file_state(f)}"
                           for f in scan.files)
        return f"series:{short_hash(states, 16)}"
    return _file_state(scan.input) if Path(scan.input).is_file() else ""


def _file_state(path: str) -> str:
    try:
        st = os.stat(path)
    except OSError:
        return ""
    return f"{st.st_size}|{st.st_mtime_ns}"


def base_record(scan, model_hash: str, digest: str) -> dict:
    return {"version": VERSION, "input_id": short_hash(input_key(scan), 16),
            "input_state": input_state(scan), "model_hash": model_hash,
            "settings_digest": digest}


def read_manifest(outdir: Path, name: str) -> dict | None:
    text = read_text(manifest_path(outdir, name))  # a link here is refused, not skipped
    try:
        record = json.loads(text or "null")
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def write_manifest(outdir: Path, name: str, record: dict) -> None:
    atomic_write_text(manifest_path(outdir, name), json.dumps(record, indent=1))


def owner_of(outdir: Path, rel: str, other_than: str) -> str | None:
    """The name of the scan (other than ``other_than``) whose manifest records the file
    ``rel`` as it is now, or None."""
    from .owned import digest

    now = digest(outdir / rel)
    if not now:
        return None
    for entry in sorted(os.scandir(state_dir(outdir)), key=lambda e: e.name):
        name = entry.name.removesuffix(".json")
        if not entry.name.endswith(".json") or name in (other_than, "files"):
            continue
        record = read_manifest(outdir, name)
        if record and now in ((record.get("files") or {}).get(rel) or ()):
            return name
    return None


def claim_name(outdir: Path, scan):
    """``scan``, renamed (name + hash of its input) when its name belongs to another
    input in this folder already: two inputs with one stem never share outputs."""
    record = read_manifest(outdir, scan.name)
    mine = short_hash(input_key(scan), 16)
    if record is None or record.get("input_id") == mine:
        return scan
    return replace(scan, name=with_key(scan.name, input_key(scan)))


def finished(outdir: Path, scan, model_hash: str, digest: str,
             qc: bool = False) -> dict | None:
    """The manifest if this scan's outputs (and QC picture) exist for this input, model
    and settings, each as napari-unet wrote it or changed but whole (edited by a person:
    kept, and listed under ``changed``); an output cut short is not finished, nor a scan
    without a picture when ``qc`` asks for one (an earlier run had ``--no-qc``)."""
    record = read_manifest(outdir, scan.name)
    if record is None or record.get("status") != "done":
        return None
    expected = base_record(scan, model_hash, digest)
    if any(record.get(k) != v for k, v in expected.items()):
        return None
    outputs = [o for o in record.get("outputs") or [] if isinstance(o, str)]
    pictures = [record["qc"]] if isinstance(record.get("qc"), str) else []
    if qc and not pictures:
        return None
    if not outputs or not all(present(outdir / o) for o in outputs + pictures):
        return None
    changed = changed_outputs(outdir, outputs, record.get("files") or {},
                              record.get("stats"))
    if any(unreadable(outdir / o) for o in changed):
        return None
    return {**record, "changed": changed}


def file_stats(outdir: Path, written) -> dict[str, str]:
    """Size and modification time of each file just put in place (a rename keeps them):
    resume compares these first and reads a file whole only when they differ."""
    return {rel: _output_state(outdir / rel) for rel in written}


def _output_state(path: Path) -> str:
    """Size and modification time of a regular file ('' for a link or anything else)."""
    try:
        st = os.lstat(path)
    except OSError:
        return ""
    return f"{st.st_size}|{st.st_mtime_ns}" if stat.S_ISREG(st.st_mode) else ""


def changed_outputs(outdir: Path, outputs: list[str], files: dict,
                    stats: dict | None = None) -> list[str]:
    """The outputs whose content is not what napari-unet recorded writing (a derived
    series' folder: any file in it changed, added or gone); a file whose size and
    modification time are as recorded is not read again."""
    from .owned import digest

    stats = stats if isinstance(stats, dict) else {}

    def same(rel: str, now: str | None) -> bool:
        return now is not None and now in (files.get(rel) or ())

    def unchanged(rel: str) -> bool:
        recorded = stats.get(rel)
        return bool(recorded) and recorded == _output_state(outdir / rel) \
            or same(rel, digest(outdir / rel))

    changed = []
    for rel in outputs:
        path = outdir / rel
        if path.is_dir():
            now = {f"{rel}/{entry.name}" for entry in os.scandir(path)}
            recorded = {k for k in files if k.startswith(f"{rel}/")}
            ok = now == recorded and all(unchanged(k) for k in now)
        else:
            ok = unchanged(rel)
        if not ok:
            changed.append(rel)
    return changed


def present(path: Path) -> bool:
    """An output is there: a file, or a derived series' folder (not a link)."""
    return path.is_file() or (path.is_dir() and not path.is_symlink())

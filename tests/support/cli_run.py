"""Run the CLI in this process and read what it wrote."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

from napari_unet.cli.main import main


def run_cli(*argv: str) -> tuple[int, str]:
    """``napari-unet ARGV`` in this process; returns (exit code, stdout + stderr)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = main([str(a) for a in argv])
    return code, out.getvalue()


def load_report(outdir: Path) -> dict:
    return json.loads((outdir / "report.json").read_text())


def by_name(report: dict) -> dict[str, dict]:
    return {e["name"]: e for e in report["scans"]}

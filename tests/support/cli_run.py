"""Run the CLI in this process and read what it wrote."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

from napari_unet.cli.main import main


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def run_cli(*argv: str, terminal: bool = False) -> tuple[int, str]:
    """``napari-unet ARGV`` in this process; returns (exit code, stdout + stderr), written
    as to a log file or (``terminal``) as to a terminal."""
    out = _Terminal() if terminal else io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = main([str(a) for a in argv])
    return code, out.getvalue()


def load_report(outdir: Path) -> dict:
    return json.loads((outdir / "report.json").read_text())


def by_name(report: dict) -> dict[str, dict]:
    return {e["name"]: e for e in report["scans"]}


# A ``napari-unet`` run in a fresh Python whose ``scan_job.commit_outputs`` first does
# something: "kill N" (SIGKILL itself at the N+1-th commit, temporary outputs written,
# none renamed) or "wait READY GO" (write READY, then wait until GO exists).
_HOOKED = """
import os, signal, sys, time
from pathlib import Path
from napari_unet.batch import scan_job
from napari_unet.cli.main import main

mode, arg, args = sys.argv[1], sys.argv[2], sys.argv[3:]
commit, calls = scan_job.commit_outputs, []

def hooked(job, scan, written):
    if mode == "kill" and len(calls) == int(arg):
        os.kill(os.getpid(), signal.SIGKILL)
    if mode == "wait":
        ready, go = arg.split("|")
        Path(ready).write_text(scan.name)
        while not Path(go).exists():
            time.sleep(0.05)
    calls.append(scan.name)
    commit(job, scan, written)

scan_job.commit_outputs = hooked
sys.exit(main(args))
"""


def hooked_cli(mode: str, arg: str, *argv) -> list[str]:
    """The command line of a CLI run with a commit hook (see ``_HOOKED``)."""
    import sys

    return [sys.executable, "-c", _HOOKED, mode, arg, *(str(a) for a in argv)]


def console(*argv, **kwargs):
    """The installed ``napari-unet`` console script in a subprocess (CompletedProcess)."""
    import os
    import shutil
    import subprocess
    import sys

    script = shutil.which("napari-unet", path=os.path.dirname(sys.executable))
    assert script, "the napari-unet console script is not installed in this environment"
    kwargs.setdefault("timeout", 300)
    return subprocess.run([script, *(str(a) for a in argv)], capture_output=True, text=True,
                          **kwargs)

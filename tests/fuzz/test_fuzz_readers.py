"""Property-based fuzzing (hypothesis) of everything that reads files from users:
``read_volume`` (NIfTI headers, DICOM tags) and ``load_model`` (model metadata and the
safetensors layer). The only outcomes allowed are a valid result or the project's own
error naming the file, under a memory cap (see ``support/fuzz.py``, which also runs
longer fuzzing by hand)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

FUZZ = Path(__file__).resolve().parents[1] / "support" / "fuzz.py"


@pytest.mark.slow
def test_readers_give_a_result_or_their_own_error_under_a_memory_cap():
    """A fixed set of examples (derandomized): the same inputs on every run and machine."""
    done = subprocess.run([sys.executable, str(FUZZ), "nifti", "dicom", "models",
                           "--examples", "80"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert f"memory cap holds; limit {256 * 2**20} bytes" in done.stdout
    for target in ("nifti", "dicom", "models"):
        assert f"fuzz {target}: " in done.stdout, done.stdout
    assert done.stdout.count("property held") == 3

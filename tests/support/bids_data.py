"""Small real BIDS datasets for tests, and the official BIDS validator to check them.

The dataset is what dcm2niix and a BIDS converter leave: NIfTI with spatial and time
units set, a JSON sidecar per image, ``dataset_description.json``, ``participants.tsv``
and a README. Two subjects: ``sub-01`` without sessions (T1w, T2w), ``sub-02`` with two
sessions (``ses-1``: T1w, T2w; ``ses-2``: T1w runs 1 and 2).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

# relative path (without .nii.gz) -> seed of its volume
IMAGES = {
    "sub-01/anat/sub-01_T1w": 1,
    "sub-01/anat/sub-01_T2w": 2,
    "sub-02/ses-1/anat/sub-02_ses-1_T1w": 3,
    "sub-02/ses-1/anat/sub-02_ses-1_T2w": 4,
    "sub-02/ses-2/anat/sub-02_ses-2_run-1_T1w": 5,
    "sub-02/ses-2/anat/sub-02_ses-2_run-2_T1w": 6,
}
T1W = [p for p in IMAGES if p.endswith("_T1w")]
SHAPE = (24, 20, 8)  # nibabel (x, y, z)


def bids_image(path: Path, seed: int, shape=SHAPE, sidecar: dict | None = None) -> Path:
    """A NIfTI volume as a converter writes it (units mm and s, qform = sform) + sidecar."""
    rng = np.random.default_rng(seed)
    data = rng.normal(100.0, 20.0, size=shape).astype(np.float32)
    data[shape[0] // 4: 3 * shape[0] // 4, shape[1] // 4: 3 * shape[1] // 4] += 200.0
    affine = np.diag([1.1, 1.0, 2.0, 1.0])
    affine[:3, 3] = (-12.0 + seed, -10.0, -8.0)
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    meta = {"MagneticFieldStrength": 3, "EchoTime": 0.003, "RepetitionTime": 2.3,
            **(sidecar or {})}
    Path(str(path).removesuffix(".nii.gz") + ".json").write_text(json.dumps(meta))
    return path


def bids_dataset(root: Path, images: dict[str, int] | None = None) -> Path:
    """A raw BIDS dataset at ``root`` with ``images`` (default :data:`IMAGES`)."""
    images = IMAGES if images is None else images
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(json.dumps(
        {"Name": "napari-unet test dataset", "BIDSVersion": "1.10.0", "DatasetType": "raw",
         "License": "CC0", "Authors": ["napari-unet tests"]}))
    (root / "README.md").write_text("A tiny dataset made by napari-unet's tests.\n")
    subjects = sorted({rel.split("/")[0] for rel in images})
    (root / "participants.tsv").write_text("participant_id\n" + "\n".join(subjects) + "\n")
    for rel, seed in images.items():
        bids_image(root / f"{rel}.nii.gz", seed)
    return root


# -- the official validator -----------------------------------------------------------

# warnings that do not apply to napari-unet's derivatives, and why they are left
ACCEPTED_WARNINGS = {
    # BIDSVersion is the spec version of the schema napari-unet names files by
    # (bidsschematools); a validator release whose bundled schema is older warns
    "UNKNOWN_BIDS_VERSION": "the validator's bundled schema predates bidsschematools'",
    # who ran the pipeline is not known to napari-unet; the derivative's Authors are theirs
    "TOO_FEW_AUTHORS": "authors of a derivative dataset are the people who ran it",
}


def validator() -> list[str]:
    """The command of the schema-based BIDS validator (``bids-validator-deno``, installed
    with the test extra from PyPI; it runs on the Deno runtime from PyPI)."""
    exe = shutil.which("bids-validator-deno", path=os.path.dirname(sys.executable)) \
        or shutil.which("bids-validator-deno")
    if exe is None:
        pytest.fail("bids-validator-deno is not installed: pip install -e '.[test]' "
                    "(BIDS outputs are checked by the official validator)")
    return [exe]


def validate(dataset: Path) -> dict:
    """Run the validator; {"errors": [...], "warnings": [...]} as (code, subCode, location)."""
    proc = subprocess.run([*validator(), str(dataset), "--format", "json"],
                          capture_output=True, text=True, timeout=300)
    try:
        result = json.loads(proc.stdout)
    except ValueError:
        pytest.fail(f"bids-validator gave no JSON (exit {proc.returncode}): "
                    f"{proc.stderr[-2000:]}")
    found: dict[str, list] = {"errors": [], "warnings": []}
    for issue in result["issues"]["issues"]:
        key = "errors" if issue["severity"] == "error" else "warnings"
        found[key].append((issue["code"], issue.get("subCode"), issue.get("location")))
    found["summary"] = result["summary"]
    return found


def assert_valid(dataset: Path) -> dict:
    """No error, and no warning but :data:`ACCEPTED_WARNINGS`."""
    found = validate(dataset)
    assert found["errors"] == [], found["errors"]
    unexpected = [w for w in found["warnings"] if w[0] not in ACCEPTED_WARNINGS]
    assert unexpected == [], unexpected
    return found

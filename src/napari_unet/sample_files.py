"""Where the bundled sample scans are: inside an installed wheel, or in a source checkout."""

from __future__ import annotations

from pathlib import Path

_PACKAGED = Path(__file__).parent / "_sample_data"
_CHECKOUT = Path(__file__).parents[2] / "sample_data"

SAMPLES = {
    "brain_t1": "brain_t1.nii.gz",
    "brain_tissue_labels": "brain_tissue_labels.nii.gz",
    "brain_t1_dicom": "brain_t1_dicom",
}


def sample_path(key: str) -> Path:
    """Path of a sample by key (see ``SAMPLES``); FileNotFoundError says how to make it."""
    if key not in SAMPLES:
        raise KeyError(f"unknown sample {key!r}; choose from {', '.join(SAMPLES)}")
    for folder in (_PACKAGED, _CHECKOUT):
        path = folder / SAMPLES[key]
        if path.exists():
            return path
    raise FileNotFoundError(
        f"sample {SAMPLES[key]} not found in {_PACKAGED} or {_CHECKOUT}; regenerate it with "
        "`python scripts/make_sample_data.py`")

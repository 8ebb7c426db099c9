"""napari-unet: 2D UNet segmentation and denoising of CT/MR volumes.

The public API is imported lazily so that ``import napari_unet`` (done by napari's
plugin discovery) does not pay for torch, MONAI or SimpleITK.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "Volume": "io.volume",
    "read_volume": "io",
    "write_volume": "io",
    "list_series": "io",
    "write_dicom_seg": "io",
    "write_derived_series": "io",
    "VolumeReadError": "errors",
    "VolumeWriteError": "errors",
    "TaskError": "errors",
    "ModelFileError": "errors",
    "Cancelled": "errors",
    "make_task": "model.tasks",
    "TaskSpec": "model.tasks",
    "UNet": "model.unet",
    "Model": "model.checkpoint",
    "load_model": "model.checkpoint",
    "predict": "inference.predictor",
    "Prediction": "inference.predictor",
    "train": "training",
    "finetune": "training",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module 'napari_unet' has no attribute {name!r}")

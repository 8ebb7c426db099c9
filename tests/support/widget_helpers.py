"""Small real inputs for the napari widget tests: a phantom scan and tiny model files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_unet.model.checkpoint import Model
from napari_unet.model.tasks import make_task

SCALE = (2.0, 0.8, 0.9)
TRANSLATE = (-30.0, 12.5, 4.0)


def phantom(shape=(8, 40, 48), seed=0) -> tuple[np.ndarray, np.ndarray]:
    """A noisy scan with a bright block (class 1) and a dim disc (class 2)."""
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(shape)
    labels = np.zeros(shape, np.uint8)
    labels[:, 8:24, 10:30] = 1
    labels[((y - 28) ** 2 + (x - 36) ** 2) < 36] = 2
    image = (np.array([10.0, 100.0, 50.0])[labels] + rng.normal(0, 5, shape)).astype(np.float32)
    return image, labels


def tiny_model_file(folder: Path, kind: str = "segment", n_classes: int | None = 3,
                    in_channels: int = 1, name: str = "tiny") -> Path:
    """An untrained base-4 model saved as a real model file."""
    task = make_task(kind, in_channels=in_channels,
                     n_classes=n_classes if kind == "segment" else None,
                     class_names=["background", "block", "disc"] if n_classes == 3 else None)
    model = Model.new(task, base=4, name=name, patch_size=(32, 32))
    return model.save(Path(folder) / f"{name}.safetensors")


def add_scan(viewer, shape=(8, 40, 48), name: str = "scan"):
    image, _ = phantom(shape)
    return viewer.add_image(image, name=name, scale=SCALE, translate=TRANSLATE)


def errors_shown(records) -> list[str]:
    """Messages of error notifications in napari's notification records."""
    return [str(n.message) for n in records if str(n.severity).lower().endswith("error")]


@pytest.fixture(autouse=True)
def one_torch_thread(monkeypatch):
    """One torch thread: on a shared 2-core machine two threads spin against each other
    (a fine-tuning step measured 25x slower), and these tests are tiny anyway."""
    import torch

    before = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # inference reads it per run
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

"""Device names and the deterministic mode shared by inference and training."""

from __future__ import annotations

import os

import pytest
import torch

from napari_unet.devices import available_devices, deterministic, resolve_device
from napari_unet.errors import SettingsError
from support.devices import HAS_CUDA


def test_auto_picks_the_best_device_and_cpu_is_always_there():
    found = available_devices()
    assert found[-1] == "cpu"
    assert resolve_device("auto") == torch.device(found[0])
    assert (found[0].startswith("cuda")) == HAS_CUDA
    assert resolve_device("cpu") == torch.device("cpu")


def test_unknown_or_absent_devices_are_settings_errors():
    with pytest.raises(SettingsError, match="not a device name"):
        resolve_device("gpu0")
    with pytest.raises(SettingsError, match="not supported"):
        resolve_device("meta")
    with pytest.raises(SettingsError, match="CUDA GPU"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")


def test_deterministic_mode_is_set_inside_and_restored_after(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    cudnn = torch.backends.cudnn
    before = (torch.are_deterministic_algorithms_enabled(), cudnn.deterministic,
              cudnn.benchmark)
    with deterministic():
        assert torch.are_deterministic_algorithms_enabled()
        assert cudnn.deterministic and not cudnn.benchmark
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert (torch.are_deterministic_algorithms_enabled(), cudnn.deterministic,
            cudnn.benchmark) == before
    with deterministic(False):
        assert torch.are_deterministic_algorithms_enabled() == before[0]

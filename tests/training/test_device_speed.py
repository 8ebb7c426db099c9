"""Training at device speed on the CPU (same code as on a GPU): bf16 autocast, loss read
back every ``log_every`` steps, the deterministic mode and its CUDA-safe upsampling."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from napari_unet.errors import NapariUnetError, SettingsError
from napari_unet.inference.engine import cpu_has_native_bf16
from napari_unet.model.tasks import make_task
from napari_unet.training import TrainSettings, train
from napari_unet.training.determinism import MatrixUpsample, deterministic_mode
from napari_unet.training.loop import LoopConfig, _Losses, run_loop
from napari_unet.training.trainer import training_autocast
from support.synthetic import TINY, blobs, falls


def test_bf16_autocast_training_learns():
    img, lab = blobs(10)
    res = train(img, lab, iterations=40, precision="bfloat16", seed=1, **TINY)
    assert falls(res.losses) and res.model.net.inc.conv.conv[0].weight.dtype == torch.float32
    assert res.model.meta.provenance["settings"]["precision"] == "bfloat16"


def test_auto_precision_follows_the_inference_rule():
    cpu, seg = torch.device("cpu"), make_task("segment", n_classes=3)
    expected = torch.bfloat16 if cpu_has_native_bf16() else None
    assert training_autocast(cpu, "auto", seg) == expected
    assert training_autocast(cpu, "auto", make_task("denoise")) is None
    assert training_autocast(cpu, "float32", seg) is None
    with pytest.raises(SettingsError, match="precision must be one of"):
        TrainSettings(precision="fp8")


def test_losses_are_read_back_in_blocks_not_every_step(monkeypatch):
    reads = []
    flush = _Losses.flush

    def counting(self):
        reads.append(len(self.pending))
        flush(self)

    monkeypatch.setattr(_Losses, "flush", counting)
    img, lab = blobs(11)
    res = train(img, lab, iterations=30, log_every=10, val_every=30, **TINY)
    assert len(res.losses) == 30 and all(isinstance(v, float) for v in res.losses)
    assert [n for n in reads if n] == [10, 10, 10]


def test_a_diverging_run_stops_with_a_clear_error():
    net = nn.Conv2d(1, 1, 1)

    def batches():
        return torch.ones(2, 1, 4, 4), torch.ones(2, 1, 4, 4), None

    cfg = LoopConfig(iterations=6, log_every=3, val_every=6)
    with pytest.raises(NapariUnetError, match="diverged.*iteration 3"):
        run_loop(net, batches, lambda out, t, m: (out * float("nan")).mean(), cfg)


def test_deterministic_training_repeats_bit_for_bit_on_cpu():
    img, lab = blobs(12)
    runs = [train(img, lab, iterations=5, seed=3, deterministic=True, **TINY).model.net
            for _ in range(2)]
    a, b = (r.state_dict() for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.are_deterministic_algorithms_enabled()  # restored afterwards


def test_matrix_upsampling_equals_bilinear_and_is_swapped_back():
    up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
    x = torch.randn(2, 3, 5, 7, dtype=torch.float64)
    assert torch.allclose(MatrixUpsample()(x), up(x), atol=1e-12)
    img, _ = blobs(13)
    net = train(img, task="denoise", iterations=1, **TINY).model.net
    before = [m for m in net.modules() if isinstance(m, nn.Upsample)]
    with deterministic_mode(net, torch.device("cpu"), True, swap_upsampling=True):
        assert not any(isinstance(m, nn.Upsample) for m in net.modules())
        assert sum(isinstance(m, MatrixUpsample) for m in net.modules()) == len(before)
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert [m for m in net.modules() if isinstance(m, nn.Upsample)] == before
    assert not torch.are_deterministic_algorithms_enabled()


def test_threads_setting_applies_only_to_the_run():
    before = torch.get_num_threads()
    seen = []
    img, lab = blobs(14)
    train(img, lab, iterations=2, threads=1, progress=lambda d, t: seen.append(
        torch.get_num_threads()), **TINY)
    assert seen == [1, 1] and torch.get_num_threads() == before


def test_time_budgets_on_a_busy_cpu_use_no_more_threads_than_idle_cores(monkeypatch):
    from napari_unet.training.trainer import busy_cpu_threads

    cpu = torch.device("cpu")
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr("os.getloadavg", lambda: (6.0, 6.0, 6.0))
    assert busy_cpu_threads(TrainSettings(time_budget=10), cpu) == 1
    monkeypatch.setattr("os.getloadavg", lambda: (0.2, 0.2, 0.2))
    assert busy_cpu_threads(TrainSettings(time_budget=10), cpu) == 2
    assert busy_cpu_threads(TrainSettings(iterations=10), cpu) is None  # reproducible runs

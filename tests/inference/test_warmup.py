"""The first Run without the cold start: warm_up pays a process's one-off costs early."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_unet.inference import warmup
from napari_unet.inference.fast_net import inference_copy, mkldnn_conv_relu_works
from napari_unet.inference.predictor import InferenceSettings, predict
from napari_unet.model.checkpoint import load_model
from support.tiny_models import scan, tiny_model


def weights(model) -> dict:
    return {k: v.clone() for k, v in model.net.state_dict().items()}


@pytest.mark.parametrize("learning", [False, True])
def test_warm_up_runs_the_model_and_leaves_it_as_it_was(learning):
    model = tiny_model(n_classes=3)
    before = weights(model)
    seconds = warmup.warm_up(model, InferenceSettings(device="cpu"), learning=learning)
    assert seconds > 0
    after = weights(model)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not model.net.training  # still in eval mode, as loaded


def test_loading_and_warming_a_model_leave_torchs_global_generator_alone(tmp_path):
    """A warm-up runs in a background thread: had it drawn numbers from torch's global
    generator, a seeded ``Model.new`` at that moment (a training, a test's tiny model)
    would have drawn other weights."""
    path = tiny_model(n_classes=3).save(tmp_path / "tiny.safetensors")
    mkldnn_conv_relu_works.cache_clear()  # its check's conv is made on the first run
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    model = load_model(path, device="cpu")
    warmup.warm_up(model, InferenceSettings(device="cpu"), learning=True,
                   volume=scan((6, 40, 44)))
    assert torch.equal(torch.random.get_rng_state(), state)


def test_a_warmed_model_predicts_exactly_as_a_cold_one():
    vol = scan((6, 40, 44))
    cold = predict(vol, tiny_model(n_classes=3), device="cpu")
    model = tiny_model(n_classes=3)
    warmup.warm_up(model, InferenceSettings(device="cpu"))
    assert np.array_equal(predict(vol, model, device="cpu").labels, cold.labels)


def test_warming_on_the_scan_leaves_its_run_no_new_shape_to_make_kernels_for():
    from napari_unet.inference import engine

    vol = np.zeros((30, 61, 75), np.float32)  # a block of "tissue" in air: crops of it
    vol[6:22, 10:40, 20:60] = np.random.default_rng(1).random((16, 30, 40)) + 1
    model, settings = tiny_model(n_classes=3), InferenceSettings(device="cpu", planes="one")
    made = warmup.warm_up(model, settings, volume=vol) and warmup.make_scan_kernels(
        model, settings, vol)
    assert made == 0  # everything made by the warm-up already
    before = set(engine._SHAPES)
    predict(vol, model, settings, batch_size=None)
    assert set(engine._SHAPES) == before


def test_the_inference_copy_is_kept_until_the_net_changes():
    model = tiny_model(n_classes=2)
    cpu = torch.device("cpu")
    first = inference_copy(model.net, cpu, torch.float32)
    assert inference_copy(model.net, cpu, torch.float32) is first
    with torch.no_grad():
        next(model.net.parameters()).add_(0.5)  # a weight changed in place (a training step)
    again = inference_copy(model.net, cpu, torch.float32)
    assert again is not first
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        model.net.eval()
        assert torch.allclose(again(x), model.net(x), atol=1e-4)


def test_warm_up_soon_runs_once_per_model_in_the_background_and_never_fails():
    model = tiny_model(n_classes=2)
    settings = InferenceSettings(device="cpu")
    key = object()
    thread = warmup.warm_up_soon(lambda: model, settings, key=key)
    assert isinstance(thread, threading.Thread) and thread.daemon
    thread.join(60)
    assert not thread.is_alive()
    assert warmup.warm_up_soon(lambda: model, settings, key=key) is None  # done already

    def broken():
        raise OSError("the model file went away")

    other = object()
    failed = warmup.warm_up_soon(broken, settings, key=other)
    failed.join(60)  # ignored: the real Run reports its own errors
    again = warmup.warm_up_soon(lambda: model, settings, key=other)
    assert again is not None  # a failed warm-up may be tried again
    again.join(60)


def test_a_job_stops_the_scans_warm_up_and_the_next_choice_warms_again(monkeypatch):
    monkeypatch.setattr(warmup, "_DONE", set())
    vol = np.zeros((30, 61, 75), np.float32)
    vol[6:22, 10:40, 20:60] = 1.0
    started, release = threading.Event(), threading.Event()
    made = []

    def slow_kernels(model, settings, volume, cancel=None):
        started.set()
        release.wait(10)
        made.append(cancel())
        return 0

    monkeypatch.setattr(warmup, "make_scan_kernels", slow_kernels)
    model = tiny_model(n_classes=3)
    settings = InferenceSettings(device="cpu")
    thread = warmup.warm_up_soon(lambda: model, settings, key="m", volume=lambda: vol)
    assert started.wait(30)
    stopper = threading.Thread(target=warmup.stop_warming)
    stopper.start()
    release.set()
    stopper.join(10)
    thread.join(10)
    assert made == [True] and not thread.is_alive()  # it saw the stop
    assert warmup.warm_up_soon(lambda: model, settings, key="m") is not None  # again


EXITS_WHILE_WARMING = textwrap.dedent("""
    import time
    from support.tiny_models import scan, tiny_model
    from napari_unet.inference import warmup
    from napari_unet.inference.predictor import InferenceSettings

    model, volume = tiny_model(n_classes=3), scan((6, 40, 44))
    warmup.warm_up_soon(lambda: model, InferenceSettings(device="cpu"), learning=True,
                        key="exit", volume=lambda: volume)
    time.sleep(0.1)  # the warm-up is inside torch now; the script ends
""")


@pytest.mark.slow  # a fresh interpreter
def test_a_process_that_ends_while_warming_up_exits_cleanly(tmp_path):
    """Closing napari (or ending a script) just after choosing a model: the process
    aborted with exit 134 while the warm-up thread was inside torch."""
    root = Path(__file__).resolve().parents[2]
    script = tmp_path / "ends_while_warming.py"
    script.write_text(EXITS_WHILE_WARMING)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root / "src"), str(root / "tests")])}
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "terminate called" not in proc.stderr

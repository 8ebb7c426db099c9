"""The fast inference copy, the memory plan and the host-to-device staging."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from napari_unet.inference.budget import activation_bytes, plan
from napari_unet.inference.fast_net import (
    ConvReLU,
    EvenMaxPool2d,
    SplitUp,
    inference_copy,
    mkldnn_conv_relu_works,
)
from napari_unet.inference.predictor import predict
from napari_unet.inference.staging import SlabLoader, batches, torch_ready_dtype
from support.devices import DEVICES, prob_atol
from support.tiny_models import scan, tiny_model


@pytest.mark.parametrize("device", DEVICES)
def test_inference_copy_computes_what_the_net_computes(device):
    model = tiny_model("segment", 3)
    net = model.net.eval()
    fast = inference_copy(net, torch.device(device), torch.float32)
    kinds = {type(m) for m in fast.modules()}
    assert nn.BatchNorm2d not in kinds and nn.MaxPool2d not in kinds
    assert EvenMaxPool2d in kinds
    fused = device == "cpu" and mkldnn_conv_relu_works(torch.float32)
    assert (ConvReLU in kinds) == fused and (SplitUp in kinds) == fused
    assert all(p.device.type == device and p.dtype == torch.float32 for p in fast.parameters())
    x = torch.rand(3, 1, 37, 21)  # odd sizes: padded to 48 x 32 by the UNet itself
    with torch.inference_mode(), torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        got = fast(x.to(device)).cpu()
        want = net(x)
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=prob_atol(device) * 10)


@pytest.mark.parametrize("variant", ["original", "milesial"])
@pytest.mark.parametrize("upsampling", ["bilinear", "transposed"])
def test_inference_copy_of_every_unet_layout(variant, upsampling):
    from napari_unet.model.unet import UNet

    torch.manual_seed(0)
    net = UNet(2, 3, base=4, upsampling=upsampling, variant=variant).eval()
    x = torch.rand(2, 2, 20, 28)
    for dtype, tol in ((torch.float32, 1e-4), (torch.bfloat16, 1e-2)):  # logits: std 0.1-0.3
        fast = inference_copy(net, torch.device("cpu"), dtype)
        with torch.inference_mode():
            got = fast(x.to(dtype).contiguous(memory_format=torch.channels_last)).float()
            want = net(x)
        np.testing.assert_allclose(got.numpy(), want.numpy(), atol=tol, rtol=tol)


def test_even_max_pool_equals_max_pool_for_every_size_and_nan():
    pool = EvenMaxPool2d()
    for shape in [(2, 3, 8, 6), (1, 2, 7, 9), (1, 1, 2, 2)]:
        x = torch.randn(shape)
        x[0, 0, 0, 0] = float("nan")
        for fmt in (torch.contiguous_format, torch.channels_last):
            y = x.contiguous(memory_format=fmt)
            torch.testing.assert_close(pool(y), F.max_pool2d(y, 2), equal_nan=True)


def test_conv_relu_fusion_is_checked_before_use():
    for dtype in (torch.float32, torch.bfloat16):
        assert isinstance(mkldnn_conv_relu_works(dtype), bool)
    if not mkldnn_conv_relu_works(torch.float32):
        pytest.skip("no oneDNN fused convolution in this torch build")
    conv = nn.Conv2d(4, 6, 3, padding=1).to(memory_format=torch.channels_last)
    x = torch.randn(2, 4, 11, 5)
    with torch.inference_mode():
        torch.testing.assert_close(ConvReLU(conv)(x), torch.relu(conv(x)))


def test_plan_keeps_whole_slices_within_the_budget(monkeypatch):
    import napari_unet.inference.budget as budget

    model = tiny_model("segment", 3, patch=(16, 16))
    cpu = torch.device("cpu")
    whole = plan(model, (40, 20), None, None, cpu, 4)
    assert whole.tile is None and whole.item_hw == (40, 20)
    assert 1 <= whole.batch <= budget.MAX_BATCH
    assert plan(model, (40, 20), (16, 16), None, cpu, 4).tile == (16, 16)
    assert plan(model, (40, 20), None, 5, cpu, 4).batch == 5
    monkeypatch.setattr(budget, "CPU_WHOLE_SLICE_BUDGET", activation_bytes(model, (40, 20), 4) - 1)
    tiled = plan(model, (40, 20), None, None, cpu, 4)
    assert tiled.tile == (16, 16) and tiled.item_hw == (16, 16)
    monkeypatch.setattr(budget, "CPU_CACHE_BUDGET", 1)
    assert plan(model, (40, 20), None, None, cpu, 4).batch == 1
    assert activation_bytes(model, (40, 20), 2) * 2 == activation_bytes(model, (40, 20), 4)


def test_torch_ready_dtypes_are_exact_stand_ins():
    assert torch_ready_dtype(np.dtype(">i2")) == np.dtype("int16")
    assert torch_ready_dtype(np.dtype("uint16")) == np.dtype("int32")
    assert torch_ready_dtype(np.dtype("uint32")) == np.dtype("int64")
    assert torch_ready_dtype(np.dtype("float16")) == np.dtype("float32")
    assert torch_ready_dtype(np.dtype("bool")) == np.dtype("uint8")
    assert torch_ready_dtype(np.dtype("float32")) == np.dtype("float32")


def test_batches_are_views_for_runs_and_indices_otherwise():
    groups = batches(np.array([0, 1, 2, 3, 4, 7, 9]), 5)
    assert groups[0] == slice(0, 5) and len(groups) == 2
    np.testing.assert_array_equal(groups[1], [7, 9])
    stack = np.arange(10 * 4 * 5, dtype=np.int16).reshape(10, 4, 5)
    loader = SlabLoader(stack, groups, torch.device("cpu"))
    first = loader.get(0)
    assert np.shares_memory(first.numpy(), stack)  # contiguous run: no copy on the CPU
    np.testing.assert_array_equal(loader.get(1).numpy(), stack[[7, 9]])
    swapped = SlabLoader(stack.astype(">u2"), groups, torch.device("cpu")).get(0)
    assert swapped.dtype == torch.int32
    np.testing.assert_array_equal(swapped.numpy(), stack[:5])


@pytest.mark.parametrize("device", DEVICES)
def test_stored_dtypes_give_the_same_result_as_float32(device):
    """int16 CT, uint16, big-endian NIfTI data and float16 are read exactly on the device."""
    model = tiny_model("segment", 3)
    ints = np.round(scan((4, 12, 14)).array).astype(np.int16)
    kw = dict(device=device, deterministic=True)  # the same kernels for every run
    ref = predict(ints.astype(np.float32), model, **kw)
    shifted = (ints.astype(np.int32) + 2000).astype(np.uint16)  # same percentile mapping
    for stored in (ints, ints.astype(">i2"), shifted):
        got = predict(stored, model, **kw)
        assert np.mean(got.labels == ref.labels) > (0.99 if stored is shifted else 0.9999)
    half = predict(ints.astype(np.float16), model, **kw)
    assert np.mean(half.labels == ref.labels) > 0.95


@pytest.mark.parametrize("device", DEVICES)
def test_boolean_volumes_are_read_as_zero_and_one(device):
    """Issue 11 case 17: a mask given to predict used to fail inside numpy."""
    model = tiny_model("segment", 3)
    mask = scan((3, 12, 14)).array > 500
    kw = dict(probabilities=True, device=device, deterministic=True)
    got = predict(mask, model, **kw)
    ref = predict(mask.astype(np.uint8), model, **kw)
    np.testing.assert_array_equal(got.labels, ref.labels)
    np.testing.assert_array_equal(got.probabilities, ref.probabilities)


@pytest.mark.parametrize("device", DEVICES)
def test_deterministic_runs_repeat_bit_for_bit(device):
    model = tiny_model("segment", 3)
    vol = scan((5, 20, 24))
    runs = [predict(vol, model, probabilities=True, deterministic=True, device=device,
                    batch_size=b) for b in (2, 2)]
    np.testing.assert_array_equal(runs[0].probabilities, runs[1].probabilities)
    np.testing.assert_array_equal(runs[0].labels, runs[1].labels)


@pytest.mark.parametrize("device", DEVICES)
def test_batching_and_partial_runs_do_not_change_results(device):
    """Every staging path: one slice per batch (both pinned buffers reused many times),
    all at once, and scattered slices along a strided axis."""
    model = tiny_model("segment", 3)
    vol = scan((7, 10, 12))
    kw = dict(probabilities=True, precision="float32", device=device, deterministic=True)
    one = predict(vol, model, batch_size=1, **kw)
    many = predict(vol, model, batch_size=7, **kw)
    # other batch shapes may pick other (deterministic) cuDNN algorithms: float32 rounding
    np.testing.assert_allclose(one.probabilities, many.probabilities, atol=prob_atol(device))
    same = 1.0 if device == "cpu" else 0.99
    assert np.mean(one.labels == many.labels) >= same
    part = predict(vol, model, axis=1, slices=[8, 1, 4], batch_size=2, **kw)
    full = predict(vol, model, axis=1, **kw)
    np.testing.assert_allclose(part.probabilities[:, [1, 4, 8]], full.probabilities[:, [1, 4, 8]],
                               atol=prob_atol(device))
    assert np.mean(part.labels[:, [1, 4, 8]] == full.labels[:, [1, 4, 8]]) >= same

"""Slice-wise inference: every task, every axis, odd sizes, bad voxels, callbacks, fallbacks."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from napari_unet.errors import Cancelled, SettingsError, TaskError, VolumeReadError
from napari_unet.inference.engine import FLIPS, Engine
from napari_unet.inference.predictor import InferenceSettings, predict, predict_slices, resolve_axis
from napari_unet.io.volume import Volume
from napari_unet.model.checkpoint import Model
from napari_unet.model.normalize import Normalization
from support.devices import DEVICES, prob_atol
from support.tiny_models import scan, tiny_model

TASKS = {
    "binary": dict(kind="segment", n_classes=1),
    "3-class": dict(kind="segment", n_classes=3),
    "denoise": dict(kind="denoise"),
}


def direct_probs(model: Model, image2d: np.ndarray, fitted) -> np.ndarray:
    """The reference: the caller's net on one whole slice, no tiling, no fusion."""
    x = torch.as_tensor(np.asarray(fitted.forward(image2d[None, None]))).float()
    with torch.no_grad():
        return model.task.activate(model.net.eval()(x))[0].permute(1, 2, 0).numpy()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", list(TASKS))
def test_every_task_gives_dtype_shape_and_value_set(name, device):
    model = tiny_model(**TASKS[name])
    vol = scan()
    pred = predict(vol, model, device=device)
    assert pred.axis == 0 and pred.model_hash == model.hash
    assert pred.device.split(":")[0] == device
    if model.task.kind == "segment":
        assert pred.image is None
        assert pred.labels.shape == vol.spatial_shape
        assert pred.labels.dtype == model.task.label_dtype == np.uint8
        assert set(np.unique(pred.labels)) <= set(range(model.task.n_labels))
        assert pred.slice_uncertainty.shape == (vol.spatial_shape[0],)
        assert np.all((pred.slice_uncertainty >= 0) & (pred.slice_uncertainty <= 1))
    else:
        assert pred.labels is None
        assert pred.image.shape == vol.array.shape and pred.image.dtype == np.float32
        fitted = model.meta.normalization.fit(vol.array)
        assert np.all(np.isfinite(pred.image))
        assert pred.image.min() >= fitted.low - 1e-3 and pred.image.max() <= fitted.high + 1e-3
        assert pred.slice_uncertainty is None and pred.uncertainty is None


def test_binary_labels_are_thresholded_probabilities():
    model = tiny_model("segment", 1)
    pred = predict(scan(), model, probabilities=True, device="cpu")
    assert pred.probabilities.shape == (*scan().spatial_shape, 1)
    assert pred.probabilities.min() >= 0 and pred.probabilities.max() <= 1
    np.testing.assert_array_equal(pred.labels, (pred.probabilities[..., 0] > 0.5))
    assert pred.uncertainty.min() >= 0 and pred.uncertainty.max() <= 1


def test_probabilities_sum_to_one_and_uncertainty_is_normalised_entropy():
    model = tiny_model("segment", 3)
    pred = predict(scan(), model, probabilities=True, device="cpu")
    p = pred.probabilities
    assert p.dtype == np.float32 and p.shape == (*scan().spatial_shape, 3)
    np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(pred.labels, p.argmax(-1))
    entropy = -(p * np.log(np.clip(p, 1e-12, None))).sum(-1) / np.log(3)
    np.testing.assert_allclose(pred.uncertainty, entropy, atol=1e-5)
    np.testing.assert_allclose(pred.slice_uncertainty, entropy.mean(axis=(1, 2)), atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_whole_slice_equals_the_net_itself(device):
    """Slices larger than the model's patch still go through whole when they fit."""
    model = tiny_model("segment", 3, patch=(16, 16))
    vol = scan((3, 20, 24))
    pred = predict(vol, model, probabilities=True, precision="float32", device=device)
    assert not pred.tiled and pred.roi_size == (20, 24)
    fitted = model.meta.normalization.fit(vol.array)
    for i in range(3):
        ref = direct_probs(model, vol.array[i], fitted)
        np.testing.assert_allclose(pred.probabilities[i], ref, atol=prob_atol(device))


def test_caller_model_is_left_as_it_was():
    model = tiny_model("segment", 3)
    model.net.train()
    before = {k: v.clone() for k, v in model.net.state_dict().items()}
    predict(scan(), model)
    assert model.net.training
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.net.modules())
    for k, v in model.net.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_each_axis_equals_predicting_the_transposed_volume(axis):
    model = tiny_model("segment", 3)
    vol = scan((6, 10, 14))
    pred = predict(vol, model, axis=axis, probabilities=True, device="cpu")
    assert pred.axis == axis and pred.labels.shape == vol.spatial_shape
    moved = np.ascontiguousarray(np.moveaxis(vol.array, axis, 0))
    ref = predict(moved, model, axis=0, probabilities=True, device="cpu")
    np.testing.assert_array_equal(pred.labels, np.moveaxis(ref.labels, 0, axis))
    np.testing.assert_allclose(pred.probabilities, np.moveaxis(ref.probabilities, 0, axis),
                               atol=1e-5)
    assert pred.slice_uncertainty.shape == (vol.spatial_shape[axis],)


def test_planes_are_found_from_the_direction_cosines_whatever_the_storage_order():
    axial_first = np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0]], float)  # axis 0 runs I->S
    sagittal_first = np.eye(3)  # direction[:, 0] = LPS x: axis 0 runs R->L
    assert resolve_axis("axial", None, 0, axial_first) == 0
    assert resolve_axis("sagittal", None, 0, axial_first) == 2
    assert resolve_axis("sagittal", None, 1, sagittal_first) == 0
    assert resolve_axis("axial", None, 0, sagittal_first) == 2
    assert resolve_axis("coronal", None, 0, sagittal_first) == 1
    vol = scan()
    vol.direction = sagittal_first
    model = tiny_model("segment", 1)
    assert predict(vol, model, axis="axial", device="cpu").axis == 2
    with pytest.raises(SettingsError, match="plain array"):
        predict(vol.array, model, axis="axial", device="cpu")
    with pytest.raises(SettingsError, match="axial, coronal, sagittal"):
        InferenceSettings(axis="transverse")


def test_auto_axis_is_the_largest_spacing_with_ties_to_the_default():
    assert resolve_axis("auto", (1.0, 1.0, 3.0), default_axis=0) == 2
    assert resolve_axis("auto", (1.0, 1.0, 1.0), default_axis=1) == 1
    assert resolve_axis("auto", (2.0, 2.0, 1.0), default_axis=1) == 1
    assert resolve_axis("auto", (2.0, 2.0, 1.0), default_axis=2) == 0
    assert resolve_axis("auto", None, default_axis=2) == 2
    assert resolve_axis(-1, (1, 1, 1), default_axis=0) == 2
    model = tiny_model("segment", 1, default_axis=1)
    assert predict(scan(spacing=(0.8, 0.8, 4.0)), model).axis == 2
    assert predict(scan().array, model).axis == 1


def test_auto_axis_of_a_single_image_is_its_own_plane():
    """A 2D image (one voxel along one axis) whose pixels are wider than its nominal slice
    (a DICOM secondary capture: 1 mm by default): by the largest spacing, 'auto' cut it
    into one-pixel-wide slices."""
    assert resolve_axis("auto", (1.0, 2.0, 2.0), 0, shape=(1, 20, 24)) == 0
    assert resolve_axis("auto", (3.0, 0.5, 0.5), 0, shape=(20, 1, 24)) == 1
    assert resolve_axis("auto", (1.0, 1.0, 3.0), 0, shape=(1, 1, 24)) == 2  # not one image
    model = tiny_model("segment", 3)
    assert predict(scan((1, 20, 24), spacing=(1.0, 2.0, 2.0)), model, device="cpu").axis == 0
    assert predict(scan((20, 24, 1), spacing=(0.5, 0.5, 0.4)), model, device="cpu").axis == 2


def test_volume_smaller_than_roi_and_single_slice():
    model = tiny_model("segment", 3, patch=(128, 128))
    for shape in [(4, 7, 9), (1, 20, 24), (3, 1, 1)]:
        vol = scan(shape)
        pred = predict(vol, model, probabilities=True, precision="float32", device="cpu")
        assert pred.labels.shape == shape and not pred.tiled
        np.testing.assert_allclose(pred.probabilities.sum(-1), 1.0, atol=1e-5)


def test_slices_standing_in_for_missing_dicom_slices_get_no_result():
    """A blank slice the reader put where a DICOM slice was missing holds no data: labels
    0 (probability 1 for background) and, denoised, the blank itself."""
    from dataclasses import replace as with_

    from napari_unet.io.source import DicomSource

    vol = scan((4, 20, 24))
    vol.array[2] = vol.array.min()
    vol = with_(vol, source=DicomSource("series", ("a", "b", "c"), ("1", "2", "3"),
                                        slice_index=(0, 1, 3)))
    seg = predict(vol, tiny_model("segment", 3), device="cpu", probabilities=True)
    assert not seg.labels[2].any() and (seg.probabilities[2, ..., 0] == 1).all()
    den = predict(vol, tiny_model("denoise"), device="cpu")
    np.testing.assert_array_equal(den.image[2], vol.array[2])


def test_a_flipped_array_gives_the_flipped_labels_one_slice_at_a_time_too():
    """A negative-stride view (a[::-1]) in batches of one slice, or one slice asked for."""
    model = tiny_model("segment", 3)
    array = scan((5, 24, 20)).array
    ref = predict(array, model, device="cpu", precision="float32").labels
    flipped = array[::-1]
    for kw in ({"batch_size": 1}, {"slices": [3]}):
        labels = predict(flipped, model, device="cpu", precision="float32", **kw).labels
        idx = kw.get("slices", range(5))
        np.testing.assert_array_equal(labels[idx], ref[::-1][idx])


@pytest.mark.parametrize("device", DEVICES)
def test_slices_larger_than_roi_are_tiled_with_monai(device):
    from monai.inferers import sliding_window_inference

    model = tiny_model("segment", 3, patch=(64, 64))
    vol = scan((2, 40, 20))
    pred = predict(vol, model, probabilities=True, overlap=0.5, roi_size=(16, 16),
                   precision="float32", device=device)
    assert pred.tiled and pred.roi_size == (16, 16) and pred.labels.shape == vol.spatial_shape
    np.testing.assert_allclose(pred.probabilities.sum(-1), 1.0, atol=1e-5)
    # the same as MONAI's Gaussian sliding window over the caller's net
    fitted = model.meta.normalization.fit(vol.array)
    x = torch.as_tensor(np.asarray(fitted.forward(vol.array[:, None]))).float()
    with torch.no_grad():
        ref = sliding_window_inference(x, (16, 16), 2, lambda t: model.task.activate(
            model.net.eval()(t)), overlap=0.5, mode="gaussian")
    np.testing.assert_allclose(pred.probabilities, ref.permute(0, 2, 3, 1).numpy(),
                               atol=prob_atol(device))
    # whole slices differ from tiles only near the seams
    whole = predict(vol, model, probabilities=True, device=device)
    assert not whole.tiled
    assert np.mean(pred.labels == whole.labels) > 0.5


def test_slices_too_large_for_the_memory_budget_are_tiled(monkeypatch):
    import napari_unet.inference.budget as budget

    model = tiny_model("segment", 3, patch=(16, 16))
    vol = scan((2, 40, 20))
    monkeypatch.setattr(budget, "CPU_WHOLE_SLICE_BUDGET", 10_000)  # bytes: < one slice
    pred = predict(vol, model, probabilities=True, device="cpu")
    assert pred.tiled and pred.roi_size == (16, 16)
    np.testing.assert_allclose(pred.probabilities.sum(-1), 1.0, atol=1e-5)


def test_four_d_channels_are_input_channels():
    seg = tiny_model("segment", 2, in_channels=2)
    vol = scan((3, 12, 16, 2))
    pred = predict(vol, seg)
    assert pred.labels.shape == (3, 12, 16)
    den = tiny_model("denoise", in_channels=2)
    out = predict(vol, den, axis=1)
    assert out.image.shape == vol.array.shape and out.image.dtype == np.float32
    with pytest.raises(TaskError, match="has 1 channel.*expects 2"):
        predict(scan(), seg)
    with pytest.raises(TaskError, match="expects 1"):
        predict(vol, tiny_model("segment", 3))


def test_nan_and_inf_are_replaced_by_finite_extremes_with_a_warning():
    model = tiny_model("segment", 3)
    vol = scan()
    dirty = vol.array.copy()
    dirty[0, 0, :3] = [np.nan, np.inf, -np.inf]
    clean = dirty.copy()
    finite = dirty[np.isfinite(dirty)]
    clean[0, 0, :3] = [finite.min(), finite.max(), finite.min()]
    with pytest.warns(RuntimeWarning, match="3 NaN/Inf"):
        got = predict(Volume(dirty, name="dirty"), model, probabilities=True, device="cpu")
    ref = predict(clean, model, probabilities=True, device="cpu")
    np.testing.assert_array_equal(got.labels, ref.labels)
    assert np.all(np.isfinite(got.probabilities))
    with pytest.raises(VolumeReadError, match="allnan.*NaN or Inf"):
        predict(Volume(np.full((2, 8, 8), np.nan, np.float32), name="allnan"), model)


def test_progress_reaches_total_once_per_batch():
    calls = []
    predict(scan((5, 12, 12)), tiny_model("segment", 1), batch_size=2,
            progress=lambda done, total: calls.append((done, total)))
    assert len(calls) == 3 and calls[-1] == (5, 5) and {t for _, t in calls} == {5}
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_progress_counts_a_new_input_shape_as_the_work_it_is():
    # 4 slices of a shape no other test uses, one a batch: in a process's first run the
    # first call also makes the kernels (engine.NEW_SHAPE_PIXELS), so it is most of the
    # work: 143 + 20000 + 250000 px of 143 + 20000 + 250000 + 3 * (143 + 20000)
    # -> 81.7 % of 4 slices = 3.27 -> 3 after the first batch, 3.51 -> 4 after the second
    model, vol = tiny_model("segment", 1), scan((4, 13, 11))
    runs = []
    for _ in range(2):
        runs.append([])
        predict(vol, model, batch_size=1, crop=False,
                progress=lambda done, total: runs[-1].append(done))
    assert runs == [[3, 4, 4, 4], [1, 2, 3, 4]]  # later: every call costs the same


def test_cancel_stops_between_batches():
    checks, calls = [], []

    def cancel():
        checks.append(1)
        return len(checks) > 2  # let two batches through

    with pytest.raises(Cancelled, match="after 2 of 6 slices"):
        predict(scan((6, 12, 12)), tiny_model("segment", 3), batch_size=1, cancel=cancel,
                progress=lambda d, t: calls.append(d))
    assert calls == [1, 2] and len(checks) == 3


def test_predict_slices_fills_only_the_requested_slices():
    model = tiny_model("segment", 3)
    vol = scan((6, 10, 12))
    full = predict(vol, model, axis=1, probabilities=True, device="cpu")
    part = predict_slices(vol, model, [7, 2, -1], axis=1, probabilities=True, device="cpu")
    assert part.slices.tolist() == [2, 7, 9]
    for i in range(10):
        if i in (2, 7, 9):
            np.testing.assert_array_equal(part.labels[:, i], full.labels[:, i])
            np.testing.assert_allclose(part.probabilities[:, i], full.probabilities[:, i],
                                       atol=1e-6)
        else:
            assert not part.labels[:, i].any() and not part.probabilities[:, i].any()
            assert np.isnan(part.slice_uncertainty[i])
    target = np.full(vol.spatial_shape, 7, np.uint8)
    part.merge_into(target)
    np.testing.assert_array_equal(target[:, [2, 7, 9]], full.labels[:, [2, 7, 9]])
    assert np.all(np.delete(target, [2, 7, 9], axis=1) == 7)
    with pytest.raises(ValueError, match="out of range"):
        predict_slices(vol, model, [10], axis=1)


def test_denoise_partial_run_leaves_nan_elsewhere():
    model = tiny_model("denoise")
    part = predict(scan(), model, slices=[1, 3])
    assert np.all(np.isfinite(part.image[[1, 3]]))
    assert np.all(np.isnan(part.image[[0, 2, 4]]))


def test_tta_averages_the_flips():
    model = tiny_model("segment", 3)
    vol = scan((2, 12, 20))
    pred = predict(vol, model, tta=True, probabilities=True, precision="float32", device="cpu")
    fitted = model.meta.normalization.fit(vol.array)
    x = torch.as_tensor(np.asarray(fitted.forward(vol.array[:, None]))).float()
    with torch.no_grad():
        flips = [model.task.activate(model.net(x.flip(d) if d else x)) for d in FLIPS]
        flips = [f.flip(d) if d else f for f, d in zip(flips, FLIPS, strict=True)]
    ref = torch.stack(flips).mean(0).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(pred.probabilities, ref, atol=1e-5)


def test_denoise_tta_gives_a_spread_map():
    pred = predict(scan(), tiny_model("denoise"), tta=True, uncertainty=True)
    assert pred.uncertainty.shape == scan().spatial_shape
    assert np.all((pred.uncertainty >= 0) & (pred.uncertainty <= 1))
    np.testing.assert_allclose(pred.slice_uncertainty, pred.uncertainty.mean((1, 2)), atol=1e-6)


def test_ct_window_normalisation_and_int16():
    model = tiny_model("segment", 2, normalization=Normalization("window", -1000, 1000))
    vol = scan(dtype=np.int16)
    pred = predict(vol, model, probabilities=True, precision="float32", device="cpu")
    fitted = model.meta.normalization.fit(vol.array)
    ref = direct_probs(model, vol.array[2], fitted)
    np.testing.assert_allclose(pred.probabilities[2], ref, atol=1e-5)


def test_settings_dataclass_keywords_and_positional_axis():
    model = tiny_model("segment", 1)
    vol = scan((4, 10, 12))
    s = InferenceSettings(axis=2, batch_size=3)
    assert predict(vol, model, s).axis == 2
    assert predict(vol, model, s, axis=1).axis == 1
    assert predict(vol, model, 1).axis == 1
    assert predict(vol, model, settings=s).settings.to_dict()["batch_size"] == 3
    with pytest.raises(TypeError, match="unknown settings"):
        predict(vol, model, axes=1)
    with pytest.raises(SettingsError, match="overlap"):
        predict(vol, model, overlap=1.5)
    with pytest.raises(SettingsError, match="axis"):
        predict(vol, model, axis=3)
    with pytest.raises(VolumeReadError, match="array: expected a 3D volume"):
        predict(np.zeros((4, 4)), model)
    with pytest.raises(VolumeReadError, match="complex64"):
        predict(np.zeros((2, 4, 4), np.complex64), model)


def test_torch_thread_count_is_restored():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        predict(scan((2, 8, 8)), tiny_model("segment", 1), device="cpu")
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


class _FlakyNet(torch.nn.Module):
    """Raises a CUDA out-of-memory error for batches above a size, or for the first calls."""

    fails_left = 0  # class attribute: the engine deep-copies the net

    def __init__(self, net, max_batch=None):
        super().__init__()
        self.net, self.max_batch = net, max_batch

    def forward(self, x):
        if self.max_batch is not None and len(x) > self.max_batch:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        if _FlakyNet.fails_left > 0:
            _FlakyNet.fails_left -= 1
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return self.net(x)


def test_out_of_memory_halves_the_batch():
    model = tiny_model("segment", 3)
    ref = predict(scan(), model, batch_size=4, device="cpu")
    flaky = Model(_FlakyNet(model.net, max_batch=1), model.meta)
    with pytest.warns(RuntimeWarning, match="retrying with batch size"):
        got = predict(scan(), flaky, batch_size=4, device="cpu")
    np.testing.assert_array_equal(got.labels, ref.labels)


def test_out_of_memory_at_batch_one_falls_back_to_cpu(monkeypatch):
    import contextlib

    model = tiny_model("segment", 3)
    engine = Engine(Model(_FlakyNet(model.net), model.meta), torch.device("cpu"), 4)
    engine.device = torch.device("cuda")  # pretend: no GPU is needed to test the logic
    monkeypatch.setattr(Engine, "_to_device", lambda self, x: x)
    monkeypatch.setattr(Engine, "_backend_flags", lambda self: contextlib.nullcontext())
    _FlakyNet.fails_left = 3  # batch 4, 2, 1 fail on the "GPU"
    x = torch.rand(4, 1, 12, 12)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        probs, _ = engine(x)
    messages = [str(w.message) for w in caught]
    assert any("batch size 2" in m for m in messages)
    assert any("falling back to the CPU" in m for m in messages)
    assert engine.device.type == "cpu" and probs.shape == (4, 3, 12, 12)
    _FlakyNet.fails_left = 10  # and on the CPU an out-of-memory is not swallowed
    engine.batch_size = 1
    with pytest.raises(torch.cuda.OutOfMemoryError):
        engine(x)
    _FlakyNet.fails_left = 0


@pytest.mark.parametrize("device", DEVICES)
def test_default_precision_gives_the_float32_labels(device):
    """bf16 (auto on CUDA and on CPUs with native bf16) against strict float32."""
    torch.manual_seed(3)
    model = tiny_model("segment", 3, patch=(64, 64))
    vol = scan((4, 40, 48))
    ref = predict(vol, model, probabilities=True, precision="float32", device=device)
    for precision in ("bfloat16", "auto"):
        fast = predict(vol, model, probabilities=True, precision=precision, device=device)
        assert np.abs(fast.probabilities - ref.probabilities).max() < 0.02
        assert (fast.labels == ref.labels).mean() > 0.98


def test_auto_precision_picks_bf16_only_where_it_pays():
    from napari_unet.inference.engine import compute_dtype, cpu_has_native_bf16

    cpu = torch.device("cpu")
    seg, den = tiny_model("segment", 3).task, tiny_model("denoise").task
    assert compute_dtype(cpu, "float32", seg) == torch.float32
    assert compute_dtype(cpu, "auto", den) == torch.float32  # intensities keep float32
    native = torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    assert compute_dtype(cpu, "auto", seg) == native
    assert compute_dtype(cpu, "bfloat16", den) == torch.bfloat16
    with pytest.raises(SettingsError, match="float16 needs a CUDA GPU"):
        compute_dtype(cpu, "float16", seg)
    with pytest.raises(SettingsError, match="precision must be one of"):
        predict(scan(), tiny_model("segment", 3), precision="half")

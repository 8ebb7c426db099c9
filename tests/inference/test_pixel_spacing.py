"""A model sees every scan at the pixel spacing it learned at; outputs stay on the scan's grid."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from napari_unet.errors import ModelFileError
from napari_unet.inference.predictor import predict
from napari_unet.inference.resample import nearest, resize, target_size
from napari_unet.io.volume import Volume
from napari_unet.model.checkpoint import Model, load_model
from napari_unet.model.normalize import Normalization
from napari_unet.training import train
from support.tiny_models import tiny_model

SEEN: list[tuple[int, int]] = []  # slice sizes the net was given (copies share this list)
WHOLE = {"crop": False}  # what the net sees of whole slices (crops: tests/inference/test_crop)


class Threshold(nn.Module):
    """A 'segmentation net' whose answer is known: foreground where the intensity > 0.5."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        SEEN.append(tuple(x.shape[-2:]))
        return 40.0 * (x - 0.5)


def threshold_model(pixel_spacing=(1.0, 1.0)) -> Model:
    model = tiny_model(n_classes=1, normalization=Normalization("window", 0.0, 1.0))
    return Model(Threshold(), replace(model.meta, pixel_spacing=pixel_spacing))


def disk(n: int, spacing: float, centre=(0.3, -0.2), radius_mm: float = 18.0) -> Volume:
    """Three slices of a sharp-edged disk, placed off the slice centre (a half-pixel shift
    in the resampling would show); ``n`` pixels of ``spacing`` mm a side."""
    mm = (np.arange(n) - (n - 1) / 2) * spacing
    yy, xx = np.meshgrid(mm, mm, indexing="ij")
    inside = (yy - centre[0] * 30) ** 2 + (xx - centre[1] * 30) ** 2 < radius_mm**2
    array = np.repeat(inside[None].astype(np.float32), 3, axis=0)
    return Volume(array, spacing=(1.0, spacing, spacing), name=f"disk {spacing} mm")


def test_a_finer_scan_runs_at_the_model_spacing_and_comes_back_voxel_aligned():
    vol = disk(121, 0.5)
    SEEN.clear()
    pred = predict(vol, threshold_model((1.0, 1.0)), axis=0, device="cpu", precision="float32",
                   **WHOLE)
    assert pred.net_size == (61, 61) and set(SEEN) == {(61, 61)}
    assert pred.labels.shape == vol.array.shape
    truth = vol.array > 0.5
    assert (pred.labels == truth).mean() > 0.99  # only edge voxels may differ
    got = np.argwhere(pred.labels[1]).mean(0)
    want = np.argwhere(truth[1]).mean(0)
    assert np.abs(got - want).max() < 0.15  # no shift: corners map onto corners


def test_a_coarser_scan_is_upsampled_for_the_net():
    SEEN.clear()
    pred = predict(disk(41, 1.5), threshold_model((1.0, 1.0)), axis=0, device="cpu", **WHOLE)
    assert pred.net_size == (61, 61) and set(SEEN) == {(61, 61)}
    assert pred.labels.shape == (3, 41, 41)


@pytest.mark.parametrize("case", ["native flag", "within 5 %", "no spacing known",
                                  "model without spacing"])
def test_slices_run_as_they_are_when_there_is_nothing_to_resample(case):
    vol, model, kw = disk(61, 0.5), threshold_model((1.0, 1.0)), {}
    if case == "native flag":
        kw = {"resample": False}
    elif case == "within 5 %":
        vol = disk(61, 0.97)
    elif case == "no spacing known":
        vol = vol.array
    else:
        model = threshold_model(None)
    SEEN.clear()
    pred = predict(vol, model, axis=0, device="cpu", **kw, **WHOLE)
    assert pred.net_size is None and set(SEEN) == {(61, 61)}


def test_a_finer_scan_s_finest_texture_does_not_alias_into_the_model_grid():
    """A one-pixel checkerboard shrunk 2x without a pre-blur lands on one colour only
    (every other pixel is sampled): a pattern that is not there. Blurred first, it averages
    out; a smooth ramp keeps its values and ends, and an enlarged image is not blurred."""
    board = torch.from_numpy(np.indices((121, 121)).sum(0) % 2).float()[None, None]
    shrunk = resize(board, (61, 61))
    assert abs(shrunk.mean().item() - 0.5) < 0.05 and shrunk.std().item() < 0.06
    ramp = torch.linspace(0, 1, 121).repeat(121, 1)[None, None]
    small = resize(ramp, (61, 61))[0, 0]
    assert torch.allclose(small[:, 1:-1], torch.linspace(0, 1, 61)[1:-1].repeat(61, 1),
                          atol=1e-4)
    assert resize(board, (241, 241))[0, 0, ::2, ::2].equal(board[0, 0])


def test_target_size_keeps_corners_and_tolerance():
    assert target_size((101, 61), (0.5, 0.5), (1.0, 1.0)) == (51, 31)
    assert target_size((100, 100), (1.03, 0.98), (1.0, 1.0)) is None
    assert target_size((10, 10), None, (1.0, 1.0)) is None
    assert nearest(5, 9).tolist() == [0, 0, 1, 2, 2, 2, 3, 4, 4]  # ends on the ends
    with pytest.warns(RuntimeWarning, match="run at the scan's own pixels"):
        assert target_size((2000, 2000), (5.0, 5.0), (1.0, 1.0)) is None  # 10000 a side


def test_pixel_spacing_travels_in_the_file_and_in_the_hash(tmp_path):
    model = tiny_model(n_classes=2)
    a = Model(model.net, replace(model.meta, pixel_spacing=(1.0, 1.0)))
    b = Model(model.net, replace(model.meta, pixel_spacing=(0.5, 0.5)))
    a.save(tmp_path / "a.safetensors")
    b.save(tmp_path / "b.safetensors")
    back = load_model(tmp_path / "a.safetensors", device="cpu")
    assert back.meta.pixel_spacing == (1.0, 1.0)
    assert a.hash != b.hash != model.hash  # outputs differ, so the hashes do too
    plain = tiny_model(n_classes=2)
    assert "pixel_spacing" not in plain.meta.to_dict()  # older files stay as they were


@pytest.mark.parametrize("bad", [[0, 1.0], [1.0], "1 mm", [1.0, float("nan")]])
def test_a_bad_pixel_spacing_in_a_file_is_refused_naming_the_field(tmp_path, bad):
    from safetensors.torch import load_file, save_file

    good = tmp_path / "good.safetensors"
    tiny_model(n_classes=2).save(good)
    from safetensors import safe_open

    with safe_open(str(good), "pt") as f:
        meta = json.loads(f.metadata()["napari_unet"])
    meta["pixel_spacing"] = bad
    bad_file = tmp_path / "bad.safetensors"
    save_file(load_file(str(good)), str(bad_file), metadata={"napari_unet": json.dumps(meta)})
    with pytest.raises(ModelFileError, match="pixel_spacing"):
        load_model(bad_file, device="cpu")


def _pair(n: int, spacing: float, seed: int):
    rng = np.random.default_rng(seed)
    vol = disk(n, spacing, centre=(rng.uniform(-.3, .3), rng.uniform(-.3, .3)))
    image = Volume(vol.array + 0.05 * rng.standard_normal(vol.array.shape).astype(np.float32),
                   spacing=vol.spacing, name=f"image {spacing}")
    return image, Volume(vol.array.astype(np.uint8), spacing=vol.spacing, name="labels")


def test_training_records_the_spacing_and_brings_other_spacings_to_it():
    one = _pair(41, 1.0, 0)
    fine = _pair(81, 0.5, 1)
    res = train([one[0], fine[0], one[0]], [one[1], fine[1], one[1]], task="segment",
                n_classes=2, iterations=2, base=4, patch_size=(32, 32), batch_size=2,
                val_fraction=0.0, device="cpu")
    assert res.model.meta.pixel_spacing == (1.0, 1.0)  # the median of the three
    assert res.model.meta.provenance["resampled_to_pixel_spacing"] == ["image 0.5"]


def test_denoisers_record_no_spacing_and_finetuning_keeps_the_parent_s():
    image, labels = _pair(41, 1.0, 0)
    den = train([image], task="denoise", iterations=1, base=4, patch_size=(32, 32),
                batch_size=2, val_fraction=0.0, device="cpu")
    assert den.model.meta.pixel_spacing is None
    parent = tiny_model(n_classes=2)
    parent = Model(parent.net, replace(parent.meta, pixel_spacing=(0.7, 0.7)))
    child = train([image], [labels], task="segment", n_classes=2, init=parent, iterations=1,
                  patch_size=(32, 32), batch_size=2, val_fraction=0.0, device="cpu")
    assert child.model.meta.pixel_spacing == (0.7, 0.7)


def test_correcting_a_finer_scan_learns_at_the_model_spacing():
    from napari_unet.training import finetune

    parent = tiny_model(n_classes=2)
    parent = Model(parent.net, replace(parent.meta, pixel_spacing=(1.0, 1.0)))
    image, labels = _pair(81, 0.5, 2)
    res = finetune(parent, image, labels.array, np.array([True, False, False]), iterations=2,
                   device="cpu")
    assert res.model.meta.pixel_spacing == (1.0, 1.0)
    # 41 x 41 pixels at 1 mm carry the trusted slice, not its 81 x 81 at 0.5 mm
    assert res.model.meta.provenance["finetune"]["trusted_voxels"] == 41 * 41

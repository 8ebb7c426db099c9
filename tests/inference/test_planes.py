"""Segmentation along all three planes: the mean of the planes' probabilities decides, only
where voxels are near cubic, and a model says in its file which way it was made to run."""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import pytest

from napari_unet.errors import ModelFileError, SettingsError
from napari_unet.inference.predictor import predict
from napari_unet.model.checkpoint import load_model
from support.tiny_models import scan, tiny_model


def _all_planes_model(**kw):
    model = tiny_model("segment", n_classes=3, **kw)
    model.meta = replace(model.meta, default_planes="all")
    return model


def test_the_mean_of_the_three_planes_decides():
    model, vol = tiny_model("segment", n_classes=3), scan((16, 18, 20))
    each = [predict(vol, model, axis=a, planes="one", probabilities=True).probabilities
            for a in (0, 1, 2)]
    mean = sum(each) / 3
    pred = predict(vol, model, axis=0, planes="all", probabilities=True, uncertainty=True)
    assert pred.planes == 3 and pred.axis == 0
    assert np.allclose(pred.probabilities, mean, atol=1e-5)
    assert np.array_equal(pred.labels, mean.argmax(-1))
    assert not np.allclose(pred.probabilities, each[0], atol=1e-3)  # the other planes count
    assert np.isfinite(pred.uncertainty).all() and np.isfinite(pred.slice_uncertainty).all()
    part = predict(vol, model, axis=1, planes="all", slices=[3, 4])
    assert part.planes == 3 and list(part.slices) == [3, 4]
    assert np.array_equal(part.labels[:, 3:5], mean.argmax(-1)[:, 3:5])
    assert not part.labels[:, :3].any() and not part.labels[:, 5:].any()


def test_binary_models_average_too():
    model, vol = tiny_model("segment", n_classes=1), scan((16, 16, 17))
    each = [predict(vol, model, axis=a, planes="one", probabilities=True).probabilities
            for a in (0, 1, 2)]
    pred = predict(vol, model, planes="all")
    assert np.array_equal(pred.labels, ((sum(each) / 3)[..., 0] > 0.5).astype(np.uint8))


def test_thick_slices_keep_to_their_plane_and_say_so():
    model = _all_planes_model()
    vol = scan((16, 20, 24), spacing=(3.0, 1.0, 1.0))
    with pytest.warns(UserWarning, match="far from cubic"):
        pred = predict(vol, model)
    one = predict(vol, model, planes="one")
    assert pred.planes == 1 and np.array_equal(pred.labels, one.labels)
    assert any("3 x 1 x 1 mm" in n for n in pred.notes) and pred.settings.planes == "auto"
    assert predict(scan((16, 18, 20)), model).planes == 3  # cubic voxels: all three
    with pytest.warns(UserWarning, match="4 pixels across"):
        assert predict(scan((4, 18, 20)), model).planes == 1  # a slab: its planes are thin


def test_probabilities_that_would_not_fit_keep_it_to_one_plane(monkeypatch):
    model, vol = _all_planes_model(), scan((16, 18, 20))
    monkeypatch.setenv("NAPARI_UNET_MAX_BYTES", str(150_000))  # 2 x 5760 voxels x 18 B > it
    with pytest.warns(UserWarning, match="more than the memory limit"):
        pred = predict(vol, model)
    assert pred.planes == 1 and pred.labels.shape == vol.array.shape


def test_a_model_file_says_which_planes_it_was_made_for(tmp_path):
    plain, made = tiny_model("segment", n_classes=3), _all_planes_model()
    assert plain.hash != made.hash  # it changes the outputs, so the hash covers it
    path = made.save(tmp_path / "all.safetensors")
    loaded = load_model(path, device="cpu")
    assert loaded.meta.default_planes == "all" and loaded.hash == made.hash
    assert predict(scan((16, 18, 20)), loaded).planes == 3
    assert predict(scan((16, 18, 20)), loaded, planes="one").planes == 1
    old = plain.save(tmp_path / "plain.safetensors")  # files without the field: one plane
    assert "default_planes" not in load_model(old, device="cpu").meta.to_dict()
    assert predict(scan((16, 18, 20)), load_model(old, device="cpu")).planes == 1


def test_an_unknown_planes_value_in_a_file_is_refused(tmp_path):
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    path = _all_planes_model().save(tmp_path / "m.safetensors")
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    d = json.loads(meta["napari_unet"])
    d["default_planes"] = "two"
    save_file(tensors, str(path), metadata={**meta, "napari_unet": json.dumps(d)})
    with pytest.raises(ModelFileError, match="default_planes"):
        load_model(path, device="cpu")


def test_denoisers_are_not_averaged():
    model, vol = tiny_model("denoise"), scan((16, 18, 20))
    with pytest.raises(SettingsError, match="for segmentation models"):
        predict(vol, model, planes="all")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert predict(vol, model).planes == 1
    with pytest.raises(SettingsError, match="planes must be one of"):
        predict(vol, model, planes="three")

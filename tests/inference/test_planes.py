"""Segmentation along all three planes: the mean of the planes' probabilities decides
(``all``), or their weighted mean with thin planes that disagree left out (``auto``), only
where voxels are near cubic, and a model says in its file which way it was made to run."""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import pytest

from napari_unet.errors import ModelFileError, SettingsError
from napari_unet.inference import aggregation
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
    monkeypatch.setenv("NAPARI_UNET_MAX_BYTES", str(150_000))  # 3 x 5760 voxels x 19 B > it
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


# ----------------------------------------------------------------------------- auto: the rule
def test_the_share_of_a_window_inside_the_scan_by_hand():
    # 4 voxels, a window of 4 pixels centred on voxel centres 0.5, 1.5, 2.5, 3.5
    assert np.allclose(aggregation.window_share(4, 1.0, 4), [2.5 / 4, 3.5 / 4, 3.5 / 4, 2.5 / 4])
    assert np.allclose(aggregation.window_share(2, 1.0, 8), [2 / 8, 2 / 8])  # a thin strip
    assert np.allclose(aggregation.window_share(40, 1.0, 8)[4:36], 1.0)  # room all round
    # 2 mm voxels for a 1 mm model: each is 2 pixels, 3 voxels fill 6 of 8 pixels
    assert np.allclose(aggregation.window_share(3, 2.0, 8), [5 / 8, 6 / 8, 5 / 8])


def test_a_slabs_other_planes_cover_a_fraction_of_the_patch():
    shape, patch = (8, 40, 40), (32, 32)
    cover = [aggregation.coverage(shape, a, (1.0, 1.0), patch) for a in (0, 1, 2)]
    assert cover == [1.0, 8 / 32, 8 / 32]
    assert aggregation.order(cover, 2) == [0, 2, 1]  # the slab's own plane first
    assert aggregation.order([1.0, 1.0, 1.0], 2) == [2, 0, 1]  # ties: the scan's axis
    w = aggregation.context_weight(shape, 1, (1.0, 1.0), patch)  # coronal: axes 0 and 2
    assert w.shape == (8, 1, 40)
    assert np.isclose(w[3, 0, 20], (8 / 32) * 1.0)  # 8 of 32 rows, all 32 columns
    assert aggregation.steps((2.0, 1.0, 0.5), (1.0, 1.0), 0) == (1.0, 0.5)
    assert aggregation.steps(None, (1.0, 1.0), 0) == (1.0, 1.0)


def test_agreement_counts_the_foreground_only():
    a = np.array([0, 0, 0, 1, 1, 2, 2, 0])
    b = np.array([0, 0, 0, 1, 2, 2, 0, 0])
    assert aggregation.agreement(a, b) == 2 / 4  # foreground in either: 4 voxels, 2 agree
    assert aggregation.agreement(np.zeros(3), np.zeros(3)) == 1.0


def _slab_probs(ref_p: float, thin_p: float, thin_class: int, slices: int = 4):
    """A slab (``slices``, 16, 16): plane 0 sees whole slices and says class 1 with
    ``ref_p`` in a block of 'tissue'; planes 1 and 2 (thin under a patch of 8 with 3
    slices: 3/8 of plane 0's cover) say ``thin_class`` with ``thin_p`` there."""
    shape = (slices, 16, 16)
    tissue = np.zeros(shape, bool)
    tissue[:, 4:12, 4:12] = True

    def plane(cls, p):
        out = np.zeros((*shape, 3), np.float32)
        out[..., 0] = 1.0
        out[tissue] = (1 - p) / 2
        out[tissue, cls] = p
        return out

    probs = [plane(1, ref_p), plane(thin_class, thin_p), plane(thin_class, thin_p)]
    return probs, [p.argmax(-1) for p in probs], tissue


def test_confidently_wrong_thin_planes_do_not_outvote():
    probs, labels, tissue = _slab_probs(ref_p=0.6, thin_p=0.99, thin_class=2, slices=3)
    assert (np.mean(probs, axis=0).argmax(-1)[tissue] == 2).all()  # the plain mean: wrong
    combined, joined = aggregation.combine(probs, labels, axis=0, patch=(8, 8))
    assert joined == [0]  # they agree with plane 0 on none of the tissue
    assert (combined.argmax(-1)[tissue] == 1).all() and np.allclose(combined, probs[0])


def test_planes_that_agree_count_by_the_context_they_see():
    probs, labels, tissue = _slab_probs(ref_p=0.6, thin_p=0.9, thin_class=1)
    combined, joined = aggregation.combine(probs, labels, axis=0, patch=(8, 8))
    assert joined == [0, 1, 2]
    # voxel (1, 8, 8): plane 0's window lies inside its slice (share 1); the thin planes'
    # window of 8 rows along the 4-slice axis holds all 4 (share 4/8, columns 1): weights
    # 1, 1/2, 1/2, so p(class 1) = (0.6 + 0.45 + 0.45) / 2
    assert np.isclose(combined[1, 8, 8, 1], (1 * 0.6 + 0.5 * 0.9 + 0.5 * 0.9) / 2.0)
    assert np.allclose(combined.sum(-1), 1.0)


def _tiny_slab():
    model = _all_planes_model()
    model.meta = replace(model.meta, patch_size=(64, 64))
    # planes 1 and 2 cover 16/64 x 48/64 of a patch, a third of plane 0's (48/64)^2: thin
    return model, scan((16, 48, 48))


def test_a_plane_is_thin_under_half_the_best_covered_planes_cover():
    cover = [aggregation.coverage((189, 233, 197), a, (1.0, 1.0), (256, 256)) for a in (0, 1, 2)]
    assert not any(aggregation.thin(cover, a, 0) for a in (1, 2))  # a whole head: 0.81
    slab = [aggregation.coverage((48, 233, 197), a, (1.0, 1.0), (256, 256)) for a in (0, 1, 2)]
    assert aggregation.thin(slab, 1, 0) and aggregation.thin(slab, 2, 0)  # 48/256 x ...


def test_auto_runs_the_rule_on_each_planes_prediction(monkeypatch):
    model, vol = _tiny_slab()
    each = [predict(vol, model, axis=a, planes="one", probabilities=True) for a in (0, 1, 2)]
    probs, labels = [p.probabilities for p in each], [p.labels for p in each]
    for agree in (0.0, 1.01):  # every thin plane counts / none does
        monkeypatch.setattr(aggregation, "AGREE", agree)
        expected, joined = aggregation.combine(probs, labels, axis=0,
                                               patch=model.meta.patch_size)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pred = predict(vol, model, probabilities=True)
        assert pred.planes == len(joined) == (3 if agree == 0 else 1)
        assert np.allclose(pred.probabilities, expected, atol=1e-5)
        assert np.array_equal(pred.labels, expected.argmax(-1))
        left = [str(w.message) for w in caught if "left out" in str(w.message)]
        assert len(left) == 3 - len(joined) and all("16 pixels across" in m for m in left)
        assert all(m in pred.notes for m in left)
    assert np.array_equal(pred.labels, labels[0])  # alone, the slab's own plane decides


def test_auto_along_a_thin_plane_still_takes_the_slabs_own_plane_first(monkeypatch):
    model, vol = _tiny_slab()
    monkeypatch.setattr(aggregation, "AGREE", 1.01)
    own = predict(vol, model, axis=0, planes="one").labels
    with pytest.warns(UserWarning, match="left out"):
        pred = predict(vol, model, axis=1, planes="auto", slices=[5, 6])
    assert pred.axis == 1 and list(pred.slices) == [5, 6] and pred.planes == 1
    assert np.array_equal(pred.labels[:, 5:7], own[:, 5:7])
    assert not pred.labels[:, :5].any() and not pred.labels[:, 7:].any()


def test_auto_is_the_plain_mean_where_every_plane_sees_a_whole_patch():
    model, vol = _all_planes_model(), scan((40, 40, 40), seed=3)
    mean = predict(vol, model, planes="all", probabilities=True).probabilities
    auto = predict(vol, model, probabilities=True)
    assert auto.planes == 3 and not auto.notes  # no plane is thinner than another
    inner = (slice(16, 24),) * 3  # a 32-pixel window fits inside every slice here
    assert np.allclose(auto.probabilities[inner], mean[inner], atol=1e-5)
    assert not np.allclose(auto.probabilities, mean, atol=1e-4)  # near the edges it weighs


def test_one_bar_counts_the_planes_their_hand_overs_and_the_combining():
    # 16, 18 and 20 slices along the three planes (mean 18): the later planes' slices
    # count 0.8 (14 and 16 units), a hand-over of round(0.3 * 18) = 5 before each later
    # plane, round(0.2 * 18) = 4 to combine: 16 + 14 + 16 + 2 * 5 + 4 = 60 units
    seen = []
    predict(scan((16, 18, 20)), tiny_model("segment", n_classes=3), axis=0, planes="all",
            batch_size=4, progress=lambda done, total: seen.append((done, total)))
    assert {total for _, total in seen} == {60}
    done = [d for d, _ in seen]
    assert done == sorted(done) and done[-1] == 60
    assert 16 + 5 in done and 16 + 5 + 14 + 5 in done  # each later plane starts after one
    assert done[-2] == 16 + 5 + 14 + 5 + 16  # the last plane's last slice, then combining
